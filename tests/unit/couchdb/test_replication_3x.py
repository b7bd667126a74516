"""CouchDB 3.x replication (couchdb_impl) between two fake 3.x servers:
what real nodes cannot be made to show.

Everything a real CouchDB 3.5 node can show runs against real nodes in
tests/functional/couchdb/test_replication_couchdb3.py (and, through the
real agent, integration/test_replication.py).  Here: a replica that lacks
one revision in the middle of a database (real jobs copy everything), a
replica that has replicated one database and not the others, job states
CouchDB reaches only after failures (``crashing``, ``failed``), and the
upkeep held back while the admin changes a ``_security`` document.

Each side is one guest: a fake CouchDB 3.x speaking real HTTP, the agent's
``CouchDBApp`` with its own credentials file, and ``CouchDBReplication``
with its own state file.  The two sides share the process's ``CONF``, so
every call on a side goes through ``side.agent``/``side.admin``, which put
that side's port, guest id and state directory in force first.

The fakes do not replicate: a test copies documents with
``fake.replicate(source, target, db)`` where a real job would have.
"""

import functools
import threading
import re

import pytest

from trove.common import exception
from trove.common.db import models
from trove.guestagent.datastore.experimental.couchdb import (
    admin as couch_admin)
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.strategies.replication.experimental import (
    couchdb_impl)
from trove.guestagent.strategies.replication.experimental.couchdb_impl import (
    shared)

try:
    from . import fake_couchdb3 as fake
except ImportError:
    import fake_couchdb3 as fake

IMAGE_ADMIN = ('admin', 'image-Admin-1')
OPAQUE_SEQ = r'^\d+-g1AAAA'
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

    @property
    def url(self):
        return self.server.url

    def client(self):
        """The agent's own client (os_admin)."""
        self.use()
        return self.app.client

    def client_as(self, user, password):
        return couch.CouchDBClient(self.url, user, password, timeout=5)

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

    def update_seq(self, db):
        return self.client().request('GET', [db])['update_seq']


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


# -- the fake itself, against CouchDB's documentation ---------------------

def test_fake_sequences_are_opaque_on_3x_and_security_counts(source):
    client = source.client()
    client.request('PUT', ['d'])
    source.write('d', 'one', v=1)
    seq = source.update_seq('d')
    assert isinstance(seq, str) and re.match(OPAQUE_SEQ, seq)
    feed = client.request('GET', ['d', '_changes'], params={'since': '0'})
    assert [row['id'] for row in feed['results']] == ['one']
    assert feed['last_seq'] == feed['results'][0]['seq'] == seq
    # A _security change bumps update_seq, with no row in _changes.
    client.request('PUT', ['d', '_security'], json={})
    assert shared.seq_number(source.update_seq('d')) == 2
    feed = client.request('GET', ['d', '_changes'], params={'since': seq})
    assert feed['results'] == [] and feed['last_seq'] == seq
    # Only sequences the server gave out are accepted.
    with pytest.raises(exception.CouchDBError) as err:
        client.request('GET', ['d', '_changes'], params={'since': '1'})
    assert err.value.status == 400


def test_fake_sequences_are_ints_on_1x():
    server = fake.FakeCouchDB('1')
    server.start()
    try:
        client = couch.CouchDBClient(server.url, timeout=5)   # admin party
        client.request('PUT', ['d'])
        client.request('PUT', ['d', 'one'], json={'v': 1})
        client.request('PUT', ['d', '_security'], json={})
        assert client.request('GET', ['d'])['update_seq'] == 2
        feed = client.request('GET', ['d', '_changes'],
                              params={'since': '0'})
        assert [r['seq'] for r in feed['results']] == [1]
        assert feed['last_seq'] == 1
        with pytest.raises(exception.CouchDBError):
            client.request('GET', ['_scheduler', 'docs'])
    finally:
        server.stop()


def test_fake_revs_diff_and_replicate_keep_revisions(source, replica):
    for side in (source, replica):
        side.client().request('PUT', ['d'])
    rev = source.write('d', 'doc', v=1)
    source.write('d', '_design/x', language='javascript')
    diff = replica.client().request('POST', ['d', '_revs_diff'],
                                    json={'doc': [rev]})
    assert diff == {'doc': {'missing': [rev]}}
    fake.replicate(source.server, replica.server, 'd')
    assert replica.server.dbs['d']['docs']['doc']['_rev'] == rev
    assert '_design/x' in replica.server.dbs['d']['docs']
    assert replica.client().request('POST', ['d', '_revs_diff'],
                                    json={'doc': [rev]}) == {}


def test_fake_scheduler_docs_are_admin_only_and_settable(source):
    client = source.client()
    client.request('PUT', ['_replicator', 'job'], json={
        'source': {'url': 'http://h:1/a',
                   'auth': {'basic': {'username': 'u', 'password': 'p'}}},
        'target': 'http://u:p@h:2/b', 'continuous': True})
    with pytest.raises(exception.CouchDBError) as err:
        client.request('PUT', ['_replicator', 'bad'], json={'source': 1})
    assert err.value.status == 403
    docs = client.request('GET', ['_scheduler', 'docs', '_replicator'])
    assert [(d['doc_id'], d['state']) for d in docs['docs']] == [
        ('job', 'running')]
    assert docs['docs'][0]['target'] == 'http://u:*****@h:2/b'
    source.server.set_job_state('job', 'crashing', 'db_not_found')
    job = client.request('GET', ['_scheduler', 'docs', '_replicator',
                                 'job'])
    assert (job['state'], job['info'], job['error_count']) == (
        'crashing', {'error': 'db_not_found'}, 1)
    source.admin.create_user([_user('bob', 'Bob-pw-123')])
    with pytest.raises(exception.CouchDBAuthError):
        source.client_as('bob', 'Bob-pw-123').request(
            'GET', ['_scheduler', 'docs', '_replicator'])


# -- progress a real replication never shows -----------------------------

def test_wait_for_txn_fails_while_documents_are_missing(source, replica,
                                                        attached):
    _copy_all(source, replica, skip=['doc-2'])
    txn = source.agent.latest_txn()
    with pytest.raises(exception.ReplicationError) as err:
        replica.agent.wait_for_txn(txn, timeout=1)
    assert 'behind in db1' in str(err.value)


def test_last_txn_names_the_source_and_counts_verified_changes(
        source, replica, attached):
    assert replica.agent.last_txn() == ['guest-source', 0]
    fake.replicate(source.server, replica.server, 'db1')
    guest, first = replica.agent.last_txn()
    assert guest == 'guest-source'
    assert isinstance(first, int) and first >= 4   # 3 docs and the guard
    _copy_all(source, replica)
    assert replica.agent.last_txn()[1] > first


# -- job states hard to provoke on one real node ---------------------------

def test_failing_jobs_are_problems_until_healthy_again(source, replica,
                                                       attached):
    _copy_all(source, replica)
    replica.agent.periodic()
    assert replica.agent.problems() == {}
    replica.server.set_job_state('trove-db1', 'crashing',
                                 'db_not_found: could not open db1')
    replica.server.set_job_state('trove-db2', 'failed',
                                 'unauthorized: credentials refused')
    replica.agent.periodic()
    problems = replica.agent.problems()
    assert sorted(problems) == ['db1', 'db2']
    assert 'crashing' in problems['db1'] and 'db_not_found' in problems[
        'db1']
    assert 'failed' in problems['db2'] and 'unauthorized' in problems['db2']
    for db in ('db1', 'db2'):
        replica.server.set_job_state('trove-' + db, 'running')
    replica.agent.periodic()
    assert replica.agent.problems() == {}


# -- races ------------------------------------------------------------------

def test_the_upkeep_waits_for_a_tenant_change_of_security(source, context):
    """_security has no revision: while the admin changes one (it holds
    SECURITY_LOCK), the upkeep does not read-modify-write any."""
    source.admin.create_database(['late'])
    done = threading.Event()
    seen = len(source.server.requests_seen)

    def upkeep():
        source.agent.periodic()
        done.set()

    with couch_admin.SECURITY_LOCK:
        thread = threading.Thread(target=upkeep)
        thread.start()
        assert not done.wait(0.5)
        assert ('PUT', '/late/_security') not in [
            (m, p) for m, p, _a in source.server.requests_seen[seen:]]
    thread.join(10)
    assert done.is_set()
    assert 'trove_replicator' in source.server.security('late')[
        'members']['roles']
