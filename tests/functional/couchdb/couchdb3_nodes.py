"""Guests for the functional tests: a real CouchDB 3.5 node each, with the
agent's objects for it, in this process.

Each :class:`Node` is one guest: a ``CouchDB3Server`` (the release
tools/bootstrap installed in .cache/couchdb) whose server admin is the
agent's own ``os_admin``, the agent's ``CouchDBApp`` with its credentials
file, ``CouchDBAdmin`` and ``CouchDBReplication`` with its state file.  The
nodes share the process's ``CONF``, so every call on a node goes through
``node.agent`` / ``node.admin``, which put that node's port, guest id and
state directory in force first.
"""

import functools

from integration.services import base
from integration.services import couchdb3
from trove.common import cfg
from trove.guestagent.datastore.experimental.couchdb import (
    admin as couch_admin)
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.strategies.replication.experimental import (
    couchdb_impl)

CONF = cfg.CONF
ADMIN_PASSWORD = 'os-Admin-pw-1'


class _OnNode:
    """An object whose method calls run with its node's CONF in force."""

    def __init__(self, node, target):
        self._node = node
        self._target = target

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            self._node.use()
            return attr(*args, **kwargs)

        return call


class _ServiceManager:
    """Starts and stops the node as systemd would."""

    def __init__(self, server):
        self.server = server

    def start(self):
        if not self.server.is_running():
            self.server.start()

    def stop(self):
        self.server.stop()

    def enable_on_boot(self):
        pass

    def disable_on_boot(self):
        pass


class Node:
    """One guest: a real CouchDB 3.5 node and the agent's objects for it."""

    def __init__(self, root, name):
        self.guest_id = 'guest-' + name
        self.state_dir = root / name / 'state'
        self.state_dir.mkdir(parents=True, mode=0o700)
        self.server = couchdb3.CouchDB3Server(
            root / name / 'couchdb', admin=(system.ADMIN_USER,
                                            ADMIN_PASSWORD))
        self.server.start()
        credentials = service.AdminCredentials(
            str(self.state_dir / system.ADMIN_CREDENTIALS_FILE))
        credentials.save(ADMIN_PASSWORD)
        self.app = service.CouchDBApp(
            service_manager=_ServiceManager(self.server),
            credentials=credentials)
        self.state = couchdb_impl.ReplicationState(
            str(self.state_dir / system.REPLICATION_STATE_FILE))
        self.agent = _OnNode(self, couchdb_impl.CouchDBReplication(
            self.app, self.state))
        self.admin = _OnNode(self, couch_admin.CouchDBAdmin(self.app))
        self.use()
        self.app.ensure_system_databases()

    def use(self):
        """Put this node's settings in CONF, as on its own guest."""
        for name, value in (('host', '127.0.0.1'),
                            ('port', self.server.port),
                            ('replication_host', '127.0.0.1'),
                            ('config_dir', str(self.server.config_dir)),
                            ('http_timeout', 10.0)):
            CONF.set_override(name, value, group='couchdb')
        CONF.set_override('guest_id', self.guest_id)
        CONF.set_override('guest_state_dir', str(self.state_dir))

    def stop(self):
        self.server.stop()

    @property
    def url(self):
        return self.server.url

    def client(self):
        """The agent's own client (os_admin)."""
        self.use()
        return self.app.client

    def client_as(self, user, password):
        return couch.CouchDBClient(self.url, user, password, timeout=10)

    def write(self, db, doc_id, **fields):
        return self.client().request('PUT', [db, doc_id], json=fields)['rev']

    def delete_doc(self, db, doc_id):
        rev = self.client().request('GET', [db, doc_id])['_rev']
        self.client().request('DELETE', [db, doc_id], params={'rev': rev})

    def doc(self, db, doc_id):
        return self.client().get_or_none([db, doc_id])

    def security(self, db):
        return self.client().request('GET', [db, '_security'])

    def user_doc(self, name):
        return self.doc(system.USERS_DB, system.USER_DOC_PREFIX + name)

    def user_dbs(self):
        return sorted(db for db in self.client().all_dbs()
                      if not db.startswith('_'))

    def jobs(self):
        """{doc id: document} of the agent's _replicator documents."""
        rows = self.client().all_docs(system.REPLICATOR_DB,
                                      include_docs=True)['rows']
        return {r['id']: r['doc'] for r in rows
                if r['id'].startswith(system.REPLICATOR_DOC_PREFIX)}

    def job_states(self):
        """{doc id: state} of the agent's jobs in /_scheduler/docs."""
        docs = self.client().request('GET', ['_scheduler', 'docs',
                                             system.REPLICATOR_DB])['docs']
        return {d['doc_id']: d['state'] for d in docs
                if d['doc_id'].startswith(system.REPLICATOR_DOC_PREFIX)}

    def registrations(self):
        """The replicas registered in this source's exchange database."""
        if not self.client().exists([system.REPLICATION_DB]):
            return []
        rows = self.client().all_docs(system.REPLICATION_DB)['rows']
        return sorted(r['id'][len('replica:'):] for r in rows
                      if r['id'].startswith('replica:'))

    def update_seq(self, db):
        return self.client().request('GET', [db])['update_seq']

    def doc_ids(self, db):
        rows = self.client().all_docs(db)['rows']
        return sorted(r['id'] for r in rows
                      if not r['id'].startswith('_design/'))


def wait_until(predicate, timeout, what):
    """Poll ``predicate`` (scaled timeout); its value, or AssertionError."""
    for _ in base.polling_loop(base.scaled(timeout), interval=0.1):
        value = predicate()
        if value:
            return value
    raise AssertionError('%s: not within %s s' % (what, timeout))
