"""instance_create: ``trove create`` with a database and the helper user."""

import time

from integration.scenario import control_plane as cp
from integration.scenario.helpers.test_helper import DataType
from integration.scenario.runners import base


class InstanceCreateRunner(base.TestRunner):

    def run_create_instance(self):
        creds = self.helper.get_helper_credentials()
        instance = self.cloud.create_instance('instance')
        self.since = time.time()
        instance.prepare(
            databases=[cp.database(creds['database'])],
            users=[cp.user(creds['name'], creds['password'],
                           [creds['database']])])
        self.cloud.instance = instance

    def run_wait_for_instance(self):
        self.wait_for_running(self.instance)
        statuses = self.conductor.statuses(self.instance.id, self.since)
        if statuses[0] != 'building':
            raise AssertionError('the first status after prepare is %r, '
                                 'not building' % statuses[0])

    def run_verify_databases_and_users(self):
        creds = self.helper.get_helper_credentials()
        api = self.instance.api
        assert self.names(api.list_databases()) == [creds['database']]
        assert self.names(api.list_users()) == [creds['name']]
        assert [d['_name'] for d in api.list_access(creds['name'], '%')] == [
            creds['database']]
        assert api.is_root_enabled() is False

    def run_add_initial_data(self):
        self.helper.add_data(DataType.tiny, self.instance.couchdb.url)

    def run_verify_initial_data(self):
        self.helper.verify_data(DataType.tiny, self.instance.couchdb.url)

    def run_check_filesystem_stats(self):
        stats = self.instance.api.get_filesystem_stats(None)
        for key in ('block_size', 'total_blocks', 'free_blocks', 'total',
                    'free', 'used'):
            assert isinstance(stats.get(key), (int, float)), (key, stats)
        assert 0 < stats['used'] <= stats['total'], stats

    def run_check_heartbeats_say_running(self):
        # A fresh observation, not the prepare's last word.
        self.wait_for_status(self.instance, 'running', since=time.time(),
                             timeout=10)
