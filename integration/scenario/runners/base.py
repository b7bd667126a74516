"""What every scenario runner shares: the cloud it acts on, and its state.

A ``Cloud`` is what the scenarios see of a Trove deployment run locally:
it creates instances (a real agent managing its own server, a CouchDB 3.5
node or pouchdb-server, each configured as Trove configures a guest),
holds the conductor listener, the Swift the backups go to, and
``TestRunner`` subclasses keep what one group hands to the next on it
(Trove's ``instance_info``): the main instance, its replicas, the backup.
"""

import contextlib
import time

from oslo_config import cfg

from integration.scenario import control_plane
from integration.services import base

BACKUP_KEY = 'scenario-backup-key-0123456789abcdef'
# Small segments, so a scenario backup is stored in several of them.
BACKUP_SEGMENT_SIZE = 64 * 1024


class Cloud:
    """Instances, Swift and the conductor of one scenario run."""

    report_interval = 1           # seconds between heartbeats

    def __init__(self, guest_factory, conductor, helper, swift_fixture):
        self._guest_factory = guest_factory
        self._swift_fixture = swift_fixture
        self._swift = None
        self.conductor = conductor
        self.helper = helper
        # What groups hand on: set by the runners.
        self.instance = None
        self.replicas = []

    @property
    def swift(self):
        """The Swift of the backups (the session's, started once)."""
        if self._swift is None:
            self._swift = self._swift_fixture()
        return self._swift

    def create_instance(self, name):
        """A new instance: its agent started, not yet prepared.

        Configured as an operator would: backups to the Swift, encrypted
        with the cloud's key, the request context carrying the owner's
        token and project.
        """
        return control_plane.swift_guest(
            self._guest_factory, self.swift, name, BACKUP_KEY,
            BACKUP_SEGMENT_SIZE,
            options={'couchdb': {'replication_sync_interval': '0.5'}},
            report_interval=self.report_interval)

    def swift_connection(self):
        return self.swift.connection()


class TestRunner:
    """The steps of one scenario group: ``run_<step>`` methods."""

    __test__ = False      # not a pytest test class

    def __init__(self, cloud):
        self.cloud = cloud
        self.helper = cloud.helper
        self.conductor = cloud.conductor

    @property
    def instance(self):
        if self.cloud.instance is None:
            raise AssertionError('no instance: the instance_create group '
                                 'has not run')
        return self.cloud.instance

    # Shared checks.
    def wait_for_running(self, instance, timeout=120):
        """The prepare outcome: the first 'running' or 'failed to spawn'."""
        message = instance.conductor.wait_for(
            'heartbeat', instance.id,
            lambda m: m.kwargs['payload']['service_status'] in (
                'running', 'failed to spawn'), timeout=timeout)
        status = message.kwargs['payload']['service_status']
        if status != 'running':
            raise AssertionError('%s reports %r; agent log:\n%s' % (
                instance.agent.workdir.name, status,
                instance.agent.log_text()[-3000:]))
        return message

    def wait_for_status(self, instance, status, since=None, timeout=60):
        return self.conductor.wait_for_status(instance.id, status,
                                              timeout=timeout, since=since)

    @staticmethod
    def names(listing):
        page, _marker = listing
        return [item['_name'] for item in page]

    @staticmethod
    def walk_pages(list_call, limit=1):
        """Every name of a paginated listing, one page of ``limit`` at a
        time, the way Trove's API pages through it."""
        names, marker = [], None
        for _ in range(1000):
            page, marker = list_call(limit=limit, marker=marker)
            names.extend(item['_name'] for item in page)
            if not marker:
                return names
        raise AssertionError('pagination does not end')

    @staticmethod
    def wait_until(predicate, timeout, what):
        return control_plane.wait_until(predicate, timeout, what)

    @staticmethod
    def ensure_silent(conductor, instance, seconds):
        """No heartbeat from ``instance`` for ``seconds``: as Trove's
        agent_heartbeat_expiry, the instance is not alive."""
        since = time.time()
        time.sleep(base.scaled(seconds))
        late = conductor.select('heartbeat', instance.id, since)
        if late:
            raise AssertionError('%s still sends heartbeats: %s' % (
                instance.agent.workdir.name, late[-1]))


@contextlib.contextmanager
def call_timeout(seconds):
    """The control plane's agent_call_low_timeout for a while."""
    cfg.CONF.set_override('agent_call_low_timeout', seconds)
    try:
        yield
    finally:
        cfg.CONF.clear_override('agent_call_low_timeout')
