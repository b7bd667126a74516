"""instance_delete: ``trove delete`` of the main instance."""

import time

from integration.scenario import control_plane as cp
from integration.scenario.runners import base
from integration.services import pouchdb
from trove.common import exception


class InstanceDeleteRunner(base.TestRunner):

    def run_delete_instance(self):
        self.since = time.time()
        cp.delete_instance(self.instance)

    def run_verify_instance_gone(self):
        instance = self.instance
        statuses = self.conductor.statuses(instance.id, self.since)
        assert statuses and statuses[-1] == 'shutdown', (
            'the last heartbeats after stop_db: %s' % statuses[-5:])
        self.ensure_silent(self.conductor, instance,
                           3 * self.cloud.report_interval)
        assert not pouchdb.answers(instance.couchdb.url + '/')
        assert not instance.couchdb.data_dir.exists()
        with base.call_timeout(3):
            try:
                instance.api.rpc_ping()
            except exception.GuestTimeout:
                pass
            else:
                raise AssertionError('the deleted instance answers a ping')
        self.cloud.instance = None
