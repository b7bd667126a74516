"""CouchDB 2.x/3.x replication (couchdb_impl) between two fake 3.x servers.

Each side is one guest: a fake CouchDB 3.x speaking real HTTP, the agent's
``CouchDBApp`` with its own credentials file, and ``CouchDBReplication``
with its own state file.  The two sides share the process's ``CONF``, so
every call on a side goes through ``side.agent``/``side.admin``, which put
that side's port, guest id and state directory in force first.

The fakes do not replicate: a test copies documents with
``fake.replicate(source, target, db)`` where a real job would have.
"""

import functools
import json
import os
import re
from urllib import parse

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

try:
    from . import fake_couchdb3 as fake
except ImportError:
    import fake_couchdb3 as fake

IMAGE_ADMIN = ('admin', 'image-Admin-1')
REPLICATOR_ID = 'org.couchdb.user:os_replicator'
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
        return sorted(db for db in self.server.dbs if not db.startswith('_'))

    def jobs(self):
        """{doc id: document} of the agent's _replicator documents."""
        docs = self.server.dbs['_replicator']['docs']
        return {doc_id: doc for doc_id, doc in docs.items()
                if doc_id.startswith(system.REPLICATOR_DOC_PREFIX)}

    def account(self):
        """The replication account's _users document, or None."""
        return self.server.user_doc(system.REPLICATION_USER)

    def update_seq(self, db):
        return self.client().request('GET', [db])['update_seq']

    def writes_seen(self, since=0):
        return [(method, path) for method, path, _auth
                in self.server.requests_seen[since:]
                if method in ('PUT', 'POST', 'DELETE')]


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


@pytest.fixture
def replica2(conf, tmp_path):
    side = Side(conf, tmp_path, 'replica2')
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
    assert couchdb_impl.seq_number(source.update_seq('d')) == 2
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


def test_fake_users_update_only_their_own_doc_never_its_roles(source):
    source.admin.create_user([_user('bob', 'Bob-pw-123'), _user('eve')])
    bob = source.client_as('bob', 'Bob-pw-123')
    doc = bob.request('GET', ['_users', 'org.couchdb.user:bob'])
    doc['note'] = 'mine'
    bob.request('PUT', ['_users', 'org.couchdb.user:bob'], json=doc)
    assert source.server.user_doc('bob')['note'] == 'mine'
    assert bob.session_info()['userCtx']['name'] == 'bob'   # hash kept
    doc = bob.request('GET', ['_users', 'org.couchdb.user:bob'])
    doc['roles'] = ['boss']
    with pytest.raises(exception.CouchDBAuthError):
        bob.request('PUT', ['_users', 'org.couchdb.user:bob'], json=doc)
    assert bob.get_or_none(['_users', 'org.couchdb.user:eve']) is None


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


# -- source side ------------------------------------------------------------

def test_replica_context_describes_the_source(source, context):
    assert context['replication_strategy'] == 'CouchDBReplication'
    master = context['master']
    assert {k: master[k] for k in ('url', 'user', 'api_version',
                                   'guest_id')} == {
        'url': source.url, 'user': 'os_replicator', 'api_version': '3',
        'guest_id': 'guest-source'}
    assert master['databases'] == {db: source.update_seq(db)
                                   for db in USER_DBS}
    assert all(re.match(OPAQUE_SEQ, seq)
               for seq in master['databases'].values())
    # The password is the agent's, in its 0600 state file only.
    path = source.state.path
    assert fake.file_mode(path) == 0o600
    assert json.load(open(path)) == {'source_password': master['password']}
    assert len(master['password']) == 36
    assert 'password' not in source.account()


def test_replication_account_reads_everything_and_is_no_admin(source,
                                                              context):
    doc = source.account()
    assert (doc['name'], doc['type'], doc['roles']) == (
        'os_replicator', 'user', ['trove_replicator'])
    account = source.client_as('os_replicator',
                               context['master']['password'])
    assert account.session_info()['userCtx'] == {
        'name': 'os_replicator', 'roles': ['trove_replicator']}
    with pytest.raises(exception.CouchDBAuthError):
        account.all_dbs()                          # 3.x: admins only
    for db in USER_DBS:
        account.request('GET', [db, '_changes'])   # a member now
    with pytest.raises(exception.CouchDBAuthError):
        account.request('GET', ['_replicator', '_security'])


def test_every_user_database_is_guarded_and_opened_to_the_role(source,
                                                               context):
    for db in USER_DBS:
        guard = source.server.dbs[db]['docs'][system.GUARD_DDOC_ID]
        assert guard['validate_doc_update'] == couchdb_impl.GUARD_FUNCTION
        assert guard['language'] == 'javascript'
        members = source.server.security(db)['members']
        assert members['roles'] == ['_admin', 'trove_replicator']
    assert source.server.security('db1')['members']['names'] == ['alice']
    assert source.server.security('db1')['admins'] == {'roles': ['_admin']}


def test_the_source_publishes_its_databases_and_security(source, context):
    published = source.account()['trove_source']['databases']
    assert published == {db: source.server.security(db) for db in USER_DBS}


def test_the_source_publishes_its_users_hashed(source, context):
    users = source.account()['trove_source']['users']
    assert sorted(users) == ['alice']
    alice = source.server.user_doc('alice')
    assert users['alice'] == {k: alice[k] for k in couchdb_impl.USER_FIELDS
                              if k in alice}
    assert 'derived_key' in users['alice']
    assert 'password' not in users['alice']


def test_an_open_database_stays_open(source, populated):
    source.client().request('PUT', ['db2', '_security'], json={})
    source.agent.get_replica_context()
    assert source.server.security('db2') == {}
    assert source.account()['trove_source']['databases']['db2'] == {}


def test_replica_context_twice_keeps_account_and_security(source, context):
    before = {db: source.update_seq(db) for db in USER_DBS}
    rev = source.account()['_rev']
    again = source.agent.get_replica_context()
    assert again['master']['password'] == context['master']['password']
    assert again['master']['databases'] == before
    assert source.account()['_rev'] == rev


# -- replica side: attach -------------------------------------------------

def test_attach_makes_one_job_per_database_with_3x_auth(source, replica,
                                                        attached):
    password = attached['master']['password']
    admin_user, admin_password = replica.app.credentials.load()
    jobs = replica.jobs()
    assert sorted(jobs) == ['trove-' + db for db in USER_DBS]
    for db in USER_DBS:
        job = jobs['trove-' + db]
        quoted = parse.quote(db, safe='')
        assert job['source'] == {
            'url': '%s/%s' % (source.url, quoted),
            'auth': {'basic': {'username': 'os_replicator',
                               'password': password}}}
        assert job['target'] == {
            'url': '%s/%s' % (replica.url, quoted),
            'auth': {'basic': {'username': admin_user,
                               'password': admin_password}}}
        assert (job['continuous'], job['trove_source']) == (
            True, 'guest-source')
        for end in ('source', 'target'):
            url = parse.urlsplit(job[end]['url'])
            assert url.username is None and url.password is None
    states = replica.client().request('GET', ['_scheduler', 'docs',
                                              '_replicator'])
    assert {d['doc_id']: d['state'] for d in states['docs']} == {
        'trove-' + db: 'running' for db in USER_DBS}


def test_attach_locks_the_replicator_database(replica, attached):
    security = replica.server.security('_replicator')
    assert security['members']['names'] == ['os_admin']
    assert '_admin' in security['members']['roles']
    replica.admin.create_user([_user('bob', 'Bob-pw-123')])
    with pytest.raises(exception.CouchDBAuthError):
        replica.client_as('bob', 'Bob-pw-123').request(
            'GET', ['_replicator', 'trove-db1'])


def test_attach_creates_read_only_copies_of_the_databases(source, replica,
                                                          attached):
    assert replica.user_dbs() == USER_DBS
    for db in USER_DBS:
        wanted = dict(source.server.security(db),
                      trove_read_only={'writer': 'os_admin'})
        assert replica.server.security(db) == wanted
        assert system.GUARD_DDOC_ID in replica.server.dbs[db]['docs']
    state = json.load(open(replica.state.path))
    assert state['read_only'] is True
    assert state['master'] == {
        k: attached['master'][k] for k in couchdb_impl.MasterInfo.KEYS}
    assert fake.file_mode(replica.state.path) == 0o600


def test_attach_registers_the_replica_on_the_source(source, attached):
    replicas = source.account()['trove_replicas']
    assert list(replicas) == ['guest-replica']
    assert re.match(r'^\d{4}-\d\d-\d\dT', replicas['guest-replica'][
        'since'])
    # The replica wrote as the account itself: its password still works.
    account = source.client_as('os_replicator',
                               attached['master']['password'])
    assert account.session_info()['userCtx']['name'] == 'os_replicator'


def test_attach_copies_the_source_users_who_log_in_with_their_password(
        source, replica, attached):
    alice = replica.server.user_doc('alice')
    assert alice['trove_source'] == 'guest-source'
    assert alice['derived_key'] == source.server.user_doc('alice')[
        'derived_key']
    assert replica.client_as('alice', 'User-pw-123').request(
        'GET', ['db1'])['db_name'] == 'db1'
    assert replica.server.user_doc('os_replicator') is None


def test_users_deleted_on_the_source_go_but_local_users_stay(
        source, replica, attached):
    replica.admin.create_user([_user('local')])
    source.admin.delete_user('alice')
    source.agent.periodic()
    replica.agent.periodic()
    assert replica.server.user_doc('alice') is None
    assert replica.server.user_doc('local') is not None


# -- progress ---------------------------------------------------------------

def test_wait_for_txn_fails_while_documents_are_missing(source, replica,
                                                        attached):
    _copy_all(source, replica, skip=['doc-2'])
    txn = source.agent.latest_txn()
    with pytest.raises(exception.ReplicationError) as err:
        replica.agent.wait_for_txn(txn, timeout=1)
    assert 'behind in db1' in str(err.value)


def test_wait_for_txn_returns_once_every_change_is_on_the_replica(
        source, replica, attached):
    _copy_all(source, replica)
    replica.agent.wait_for_txn(source.agent.latest_txn(), timeout=3)


def test_wait_for_txn_after_a_security_change_on_the_source(
        source, replica, attached):
    """A _security change counts in update_seq but has no _changes row."""
    _copy_all(source, replica)
    source.admin.create_user([_user('bob')])
    source.grant('bob', 'db2')
    replica.agent.wait_for_txn(source.agent.latest_txn(), timeout=3)


def test_wait_for_txn_refuses_what_is_not_a_transaction_point(replica):
    with pytest.raises(exception.ReplicationError) as err:
        replica.agent.wait_for_txn(['db1', 3], timeout=1)
    assert 'dictionary' in str(err.value)
    with pytest.raises(exception.ReplicationError) as err:
        replica.agent.wait_for_txn({'db1': 1}, timeout=1)
    assert 'not a replica' in str(err.value)


def test_last_txn_names_the_source_and_counts_verified_changes(
        source, replica, attached):
    assert replica.agent.last_txn() == ['guest-source', 0]
    fake.replicate(source.server, replica.server, 'db1')
    guest, first = replica.agent.last_txn()
    assert guest == 'guest-source'
    assert isinstance(first, int) and first >= 4   # 3 docs and the guard
    _copy_all(source, replica)
    assert replica.agent.last_txn()[1] > first


def test_last_txn_without_the_source_reports_the_progress_saved(
        source, replica, attached):
    _copy_all(source, replica)
    counted = replica.agent.last_txn()
    assert counted[1] > 0
    source.server.stop()
    assert replica.agent.last_txn() == counted


def test_progress_follows_opaque_3x_sequences(source, replica, attached):
    _copy_all(source, replica)
    replica.agent.periodic()            # from 0 to the end of the feed
    source.write('db1', 'doc-9', n=9)
    fake.replicate(source.server, replica.server, 'db1')
    replica.agent.periodic()            # on from the sequences verified
    status = replica.agent.status()
    assert sorted(status) == USER_DBS
    for db, progress in status.items():
        assert re.match(OPAQUE_SEQ, progress['source_seq'])
        assert re.match(OPAQUE_SEQ, progress['replicated_seq'])
        assert progress['behind'] == 0, db
    # The replica asked for changes since sequences the source gave out.
    sinces = [parse.parse_qs(parse.urlsplit(path).query).get('since')
              for method, path, _auth in source.server.requests_seen
              if '_changes' in path]
    assert any(s and re.match(OPAQUE_SEQ, s[0]) for s in sinces)


# -- jobs CouchDB reports failing -------------------------------------------

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


def test_an_unreachable_source_is_a_problem_not_a_crash(source, replica,
                                                        attached):
    source.server.stop()
    replica.agent.periodic()
    assert 'cannot read the source' in replica.agent.problems()['source']


# -- bad input changes nothing ------------------------------------------------

def _strategy(info, source):
    info['replication_strategy'] = 'MysqlGTIDReplication'


def _no_password(info, source):
    del info['master']['password']


def _no_url_nor_guest(info, source):
    del info['master']['url']
    info['master']['guest_id'] = ''


def _credentials_in_url(info, source):
    info['master']['url'] = 'http://os_replicator:%s@127.0.0.1:%d' % (
        info['master']['password'], source.server.port)


def _closed_port(info, source):
    info['master']['url'] = 'http://127.0.0.1:%d' % fake.free_port()


def _wrong_password(info, source):
    info['master']['password'] = 'not-the-password'


def _itself(info, source):
    info['master']['guest_id'] = 'guest-replica'


def _unknown_api(info, source):
    info['master']['api_version'] = '2'


def _no_master(info, source):
    del info['master']


@pytest.mark.parametrize('spoil, message', [
    (_strategy, "strategy 'MysqlGTIDReplication'"),
    (_no_password, 'lacks password'),
    (_no_url_nor_guest, 'lacks guest_id, url'),
    (_credentials_in_url, 'without credentials'),
    (_closed_port, 'cannot be reached'),
    (_wrong_password, 'refuses the replication credentials'),
    (_itself, 'from itself'),
    (_unknown_api, "unknown source API version '2'"),
    (_no_master, "no 'master' section"),
])
def test_bad_replica_info_changes_nothing(source, replica, context, spoil,
                                          message):
    info = json.loads(json.dumps(context))
    spoil(info, source)
    dbs_before = replica.user_dbs()
    account_before = source.account()
    seen = len(replica.server.requests_seen)
    with pytest.raises(exception.ReplicationError) as err:
        replica.agent.attach(info)
    assert message in str(err.value)
    assert replica.jobs() == {}
    assert replica.user_dbs() == dbs_before == []
    assert not os.path.exists(replica.state.path)
    assert replica.writes_seen(seen) == []
    assert source.account() == account_before
    assert 'trove_replicas' not in source.account()
    assert context['master']['password'] not in str(err.value)


def test_bad_replica_info_that_is_not_a_dictionary(replica):
    with pytest.raises(exception.ReplicationError) as err:
        replica.agent.attach(['master'])
    assert 'not a dictionary' in str(err.value)
    assert not os.path.exists(replica.state.path)


def test_a_failed_attach_is_undone(source, replica, context):
    """The replica has no _replicator: attach fails after registering."""
    replica.client().request('DELETE', ['_replicator'])
    with pytest.raises(exception.TroveError):
        replica.agent.attach(context)
    assert replica.state.read() == {'read_only': False}
    assert replica.state.master is None
    assert source.account().get('trove_replicas') == {}
    assert replica.agent.problems() == {}


# -- detach -----------------------------------------------------------------

def test_detach_stops_jobs_lifts_read_only_and_unregisters(
        source, replica, attached):
    _copy_all(source, replica)
    result = replica.agent.detach()
    assert result == {'replication_strategy': 'CouchDBReplication',
                      'replica_id': 'guest-replica',
                      'master_id': 'guest-source'}
    assert replica.jobs() == {}
    for db in USER_DBS:
        assert system.READ_ONLY_FIELD not in replica.server.security(db)
    assert replica.server.dbs['db1']['docs']['doc-1']['n'] == 1  # data stays
    assert replica.state.master is None and not replica.state.read_only
    assert source.account()['trove_replicas'] == {}
    assert replica.agent.last_txn() == [None, 0]


def test_detach_for_failover_keeps_the_replica_read_only(source, replica,
                                                         attached):
    replica.agent.detach(for_failover=True)
    assert replica.jobs() == {}
    for db in USER_DBS:
        assert replica.server.security(db)[system.READ_ONLY_FIELD] == {
            'writer': 'os_admin'}
    assert replica.state.read_only and replica.state.master is None
    assert source.account()['trove_replicas'] == {}


def test_the_last_replica_gone_rotates_the_password(source, replica,
                                                    replica2, context):
    old = context['master']['password']
    replica.agent.attach(context)
    replica2.agent.attach(context)
    assert sorted(source.account()['trove_replicas']) == [
        'guest-replica', 'guest-replica2']

    source.agent.cleanup_source_on_replica_detach(replica.agent.detach())
    assert list(source.account()['trove_replicas']) == ['guest-replica2']
    assert source.state.source_password == old
    assert source.client_as('os_replicator', old).session_info()

    source.agent.cleanup_source_on_replica_detach(replica2.agent.detach())
    new = source.state.source_password
    assert new and new != old
    with pytest.raises(exception.CouchDBAuthError):
        source.client_as('os_replicator', old).session_info()
    assert source.client_as('os_replicator', new).session_info()[
        'userCtx']['roles'] == ['trove_replicator']
    assert source.account()['trove_replicas'] == {}
    assert source.agent.get_replica_context()['master']['password'] == new


# -- following the source ---------------------------------------------------

def test_a_database_deleted_on_the_source_goes_on_the_replica(
        source, replica, attached):
    _copy_all(source, replica)
    source.admin.delete_database('db2')
    source.agent.periodic()
    replica.agent.periodic()
    assert 'trove-db2' not in replica.jobs()
    assert 'db2' not in replica.server.dbs
    assert sorted(replica.jobs()) == ['trove-a/b', 'trove-db1']
    assert replica.server.dbs['db1']['docs']['doc-0']['n'] == 0
    assert replica.agent.problems() == {}


def test_new_databases_and_security_follow_the_source(source, replica,
                                                      attached):
    source.admin.create_database(['db3'])
    source.admin.create_user([_user('bob')])
    source.grant('bob', 'db2')
    source.agent.periodic()
    replica.agent.periodic()
    assert 'trove-db3' in replica.jobs()
    assert system.GUARD_DDOC_ID in source.server.dbs['db3']['docs']
    for db in ('db2', 'db3'):
        assert replica.server.security(db) == dict(
            source.server.security(db),
            trove_read_only={'writer': 'os_admin'})
    assert replica.server.security('db2')['members']['names'] == ['bob']
