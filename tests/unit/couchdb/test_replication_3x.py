"""CouchDB 3.x replication (couchdb_impl) between two fake 3.x servers:
what real nodes cannot be made to show.

Everything a real CouchDB 3.5 node can show runs against real nodes in
tests/functional/couchdb/test_replication_couchdb3.py (and, through the
real agent, integration/test_replication.py), a job CouchDB reports
``crashing`` and the upkeep held back while the admin changes a
``_security`` document included.  Here: a replica that lacks one revision
in the middle of a database (real jobs copy everything), and a ``failed``
job (CouchDB 3.x fails a document it cannot make a job of, never one of
the agent's).

Each side is one guest: a fake CouchDB 3.x speaking real HTTP, the agent's
``CouchDBApp`` with its own credentials file, and ``CouchDBReplication``
with its own state file.  The two sides share the process's ``CONF``, so
every call on a side goes through ``side.agent``/``side.admin``, which put
that side's port, guest id and state directory in force first.

The fakes do not replicate: a test copies documents with
``fake.replicate(source, target, db)`` where a real job would have.
"""

import functools

import pytest

from trove.common import exception
from trove.common.db import models
from trove.guestagent.datastore.experimental.couchdb import (
    admin as couch_admin)
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.strategies.replication.experimental import (
    couchdb_impl)

try:
    from . import fake_couchdb3 as fake
except ImportError:
    import fake_couchdb3 as fake

IMAGE_ADMIN = ('admin', 'image-Admin-1')
# Sorted like _all_dbs; 'a/b' checks that names are quoted in URLs.
USER_DBS = ['a/b', 'db1', 'db2']


class _OnSide:
    """An object whose method calls run with its side's CONF in force."""

    def __init__(self, side, target):
        self._side = side
        self._target = target

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            self._side.use()
            return attr(*args, **kwargs)

        return call


class Side:
    """One guest: a fake CouchDB 3.x and the agent's objects for it."""

    def __init__(self, conf, root, name):
        self.conf = conf
        self.guest_id = 'guest-' + name
        self.state_dir = root / name / 'state'
        self.state_dir.mkdir(parents=True, mode=0o700)
        self.etc = root / name / 'etc'
        self.server = fake.FakeCouchDB('3')
        self.server.set_admin(*IMAGE_ADMIN)
        self.server.start()
        self.app = service.CouchDBApp(
            service_manager=fake.FakeServiceManager(
                self.server, config_dir=str(self.etc)),
            credentials=service.AdminCredentials(
                str(self.state_dir / system.ADMIN_CREDENTIALS_FILE)))
        self.app.poll_interval = 0.02
        self.state = couchdb_impl.ReplicationState(
            str(self.state_dir / system.REPLICATION_STATE_FILE))
        self.agent = _OnSide(self, couchdb_impl.CouchDBReplication(
            self.app, self.state))
        self.admin = _OnSide(self, couch_admin.CouchDBAdmin(self.app))
        self.use()
        self.app.secure()
        self.app.ensure_system_databases()

    def use(self):
        """Put this side's settings in CONF, as on its own guest."""
        self.conf.config(group='couchdb', host='127.0.0.1',
                         port=self.server.port, replication_host='127.0.0.1',
                         config_dir=str(self.etc), http_timeout=5.0)
        self.conf.config(guest_id=self.guest_id,
                         guest_state_dir=str(self.state_dir),
                         state_change_wait_time=5)

    def client(self):
        """The agent's own client (os_admin)."""
        self.use()
        return self.app.client

    def write(self, db, doc_id, **fields):
        return self.client().request('PUT', [db, doc_id], json=fields)['rev']

    def delete_doc(self, db, doc_id):
        rev = self.server.dbs[db]['docs'][doc_id]['_rev']
        self.client().request('DELETE', [db, doc_id], params={'rev': rev})

    def grant(self, user, db):
        self.admin.grant_access(user, [db])

    def user_dbs(self):
        """The tenant's databases (not the agent's exchange database)."""
        return sorted(db for db in self.server.dbs
                      if not db.startswith('_') and db not in system.AGENT_DBS)


@pytest.fixture
def source(conf, tmp_path):
    side = Side(conf, tmp_path, 'source')
    yield side
    side.server.stop()


@pytest.fixture
def replica(conf, tmp_path):
    side = Side(conf, tmp_path, 'replica')
    yield side
    side.server.stop()


def _user(name, password='User-pw-123'):
    return models.User(name=name, password=password, databases=[])


@pytest.fixture
def populated(source):
    """db1 (restricted, alice a member), db2 (one doc deleted), a/b."""
    source.admin.create_database(USER_DBS)
    source.admin.create_user([_user('alice')])
    source.grant('alice', 'db1')
    for n in range(3):
        source.write('db1', 'doc-%d' % n, n=n)
    source.write('db2', 'keep', v=1)
    source.write('db2', 'gone', v=1)
    source.delete_doc('db2', 'gone')
    source.write('a/b', 'x', v='slash')
    return source


@pytest.fixture
def context(populated):
    return populated.agent.get_replica_context()


@pytest.fixture
def attached(source, replica, context):
    replica.agent.attach(context)
    return context


def _copy_all(source, replica, **kwargs):
    for db in source.user_dbs():
        fake.replicate(source.server, replica.server, db, **kwargs)


# -- progress a real replication never shows -----------------------------

def test_wait_for_txn_fails_while_documents_are_missing(source, replica,
                                                        attached):
    _copy_all(source, replica, skip=['doc-2'])
    txn = source.agent.latest_txn()
    with pytest.raises(exception.ReplicationError) as err:
        replica.agent.wait_for_txn(txn, timeout=1)
    assert 'behind in db1' in str(err.value)


# -- a job state a real node does not give the agent's jobs ---------------

def test_a_failed_job_is_a_problem_until_it_runs_again(source, replica,
                                                       attached):
    """CouchDB 3.x marks a replication document ``failed`` when it cannot
    make a job of it (a bad filter, say), which the agent's documents give
    it no cause to; a real ``crashing`` job is in
    test_replication_couchdb3.py."""
    _copy_all(source, replica)
    replica.agent.periodic()
    assert replica.agent.problems() == {}
    replica.server.set_job_state('trove-db2', 'failed',
                                 'unauthorized: credentials refused')
    replica.agent.periodic()
    assert replica.agent.problems() == {
        'db2': 'replication job failed: unauthorized: credentials refused'}
    replica.server.set_job_state('trove-db2', 'running')
    replica.agent.periodic()
    assert replica.agent.problems() == {}
