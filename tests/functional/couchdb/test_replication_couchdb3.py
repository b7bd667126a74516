"""Replication (couchdb_impl) between real CouchDB 3.5 nodes.

Each guest is a real node with the agent's objects in this process (see
couchdb3_nodes.py); the replication jobs are CouchDB's own and really run,
the guards really run in CouchDB's QuickJS, and 3.x's security model is the
real one: ``_users`` and ``/_all_dbs`` are admin-only, new databases too.
A job CouchDB itself reports ``crashing`` is shown here too; a ``failed``
job and a replica that lacks one revision are in
test_replication_states_couchdb3.py.
"""

import json
import os
import re
import threading
from urllib import parse

import pytest

from integration.services import base
from trove.common import cfg
from trove.common import exception
from trove.common.db import models
from trove.guestagent.datastore.experimental.couchdb import (
    admin as couch_admin)
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.strategies.replication.experimental.couchdb_impl import (
    exchange, guard, shared)

try:
    from . import couchdb3_nodes as nodes
except ImportError:
    import couchdb3_nodes as nodes

CONF = cfg.CONF
ACCOUNT = system.REPLICATION_USER
OPAQUE_SEQ = r'^\d+-g1AAAA'
# Sorted like _all_dbs; 'a/b' checks that names are quoted in URLs.
USER_DBS = ['a/b', 'db1', 'db2']
USER_PW = 'User-pw-123'


@pytest.fixture
def make_node(tmp_path):
    started = []

    def make(name):
        node = nodes.Node(tmp_path, name)
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop()
    CONF.reset()


@pytest.fixture
def source(make_node):
    return make_node('source')


@pytest.fixture
def replica(make_node):
    return make_node('replica')


def _mode(path):
    return os.stat(path).st_mode & 0o777


def _user(name, password=USER_PW):
    return models.User(name=name, password=password, databases=[])


@pytest.fixture
def populated(source):
    """db1 (alice a member), db2 (one doc deleted), a/b."""
    source.admin.create_database(USER_DBS)
    source.admin.create_user([_user('alice')])
    source.admin.grant_access('alice', ['db1'])
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


def _caught_up(source, replica, timeout=60):
    """Every database of the source fully on the replica (wait_for_txn)."""
    replica.agent.wait_for_txn(source.agent.latest_txn(), timeout=timeout)


def _logs_in(client):
    """Whether CouchDB accepts the client's credentials (a new server
    admin's take a moment: CouchDB hashes the password first)."""
    try:
        return client.session_info()['userCtx']['name'] is not None
    except exception.CouchDBAuthError:
        return False


def _refused(call, status):
    with pytest.raises(exception.CouchDBAuthError) as err:
        call()
    assert err.value.status == status
    return err.value


# -- the source -----------------------------------------------------------

def test_replica_context_describes_the_source(source, context):
    assert context['replication_strategy'] == 'CouchDBReplication'
    master = context['master']
    assert {k: master[k] for k in ('url', 'user', 'api_version',
                                   'guest_id')} == {
        'url': source.url, 'user': ACCOUNT, 'api_version': '3',
        'guest_id': 'guest-source'}
    assert master['databases'] == {db: source.update_seq(db)
                                   for db in USER_DBS}
    assert all(re.match(OPAQUE_SEQ, s) for s in master['databases'].values())
    # The password is the agent's, in its 0600 state file only.
    assert _mode(source.state.path) == 0o600
    assert json.load(open(source.state.path)) == {
        'source_password': master['password']}
    assert len(master['password']) == 36
    account = source.user_doc(ACCOUNT)
    assert (account['name'], account['type'], account['roles']) == (
        ACCOUNT, 'user', ['trove_replicator'])
    assert 'password' not in account and 'trove_source' not in account


def test_the_account_reads_every_database_and_is_no_admin(source, context):
    account = source.client_as(ACCOUNT, context['master']['password'])
    assert account.session_info()['userCtx'] == {
        'name': ACCOUNT, 'roles': ['trove_replicator']}
    for db in USER_DBS:
        # Born admin-only on 3.x: the role is a member now.
        assert source.security(db)['members']['roles'] == [
            '_admin', 'trove_replicator']
        account.request('GET', [db, '_changes'])
    assert source.security('db1')['members']['names'] == ['alice']
    # 3.x's security stays whole: no _users, no /_all_dbs, no _replicator.
    _refused(account.all_dbs, 401)
    _refused(lambda: account.request(
        'GET', ['_users', shared.USER_DOC_ID]), 403)
    _refused(lambda: account.request('GET', ['_replicator', '_all_docs']),
             401)
    _refused(lambda: account.request('GET', ['_scheduler', 'docs']), 401)


def test_the_guard_lets_the_account_write_only_checkpoints(source, context):
    account = source.client_as(ACCOUNT, context['master']['password'])
    for db in USER_DBS:
        ddoc = source.doc(db, system.GUARD_DDOC_ID)
        assert ddoc['validate_doc_update'] == guard.GUARD_FUNCTION
    err = _refused(lambda: account.request('PUT', ['db1', 'mine'],
                                           json={'v': 1}), 403)
    assert (err.error, err.reason) == ('forbidden', guard.ACCOUNT_REFUSED)
    rows = account.request('POST', ['db1', '_bulk_docs'],
                           json={'docs': [{'_id': 'b'}]})
    assert rows == [{'id': 'b', 'error': 'forbidden',
                     'reason': guard.ACCOUNT_REFUSED}]
    account.request('PUT', ['db1', '_local', 'checkpoint'], json={'v': 1})
    # Tenants and admins write as before on a source.
    assert source.client_as('alice', USER_PW).request(
        'PUT', ['db1', 'by-alice'], json={'v': 1})['ok']


def test_an_open_database_stays_open_and_is_still_read(source, populated):
    source.client().request('PUT', ['db2', '_security'], json={})
    context = source.agent.get_replica_context()
    assert source.security('db2') == {}
    account = source.client_as(ACCOUNT, context['master']['password'])
    assert account.request('GET', ['db2', 'keep'])['v'] == 1


def test_the_source_publishes_in_its_own_exchange_database(source, context):
    assert source.security(exchange.DB) == exchange.SECURITY
    published = source.doc(exchange.DB, exchange.PUBLICATION_ID)
    assert published['guest_id'] == 'guest-source'
    assert published['databases'] == {db: source.security(db)
                                      for db in USER_DBS}
    alice = source.user_doc('alice')
    assert published['users'] == {'alice': {
        k: alice[k] for k in shared.USER_FIELDS if k in alice}}
    assert 'derived_key' in published['users']['alice']
    # Hidden from the tenant, and closed to the tenant's users.
    assert source.admin.list_databases()[0] == USER_DBS
    with pytest.raises(exception.ReservedName):
        source.admin.create_database([exchange.DB])
    _refused(lambda: source.client_as('alice', USER_PW).request(
        'GET', [exchange.DB, exchange.PUBLICATION_ID]), 403)
    # The account reads it but may write only replica registrations.
    account = source.client_as(ACCOUNT, context['master']['password'])
    doc = account.request('GET', [exchange.DB, exchange.PUBLICATION_ID])
    err = _refused(lambda: account.request(
        'PUT', [exchange.DB, exchange.PUBLICATION_ID],
        json=dict(doc, databases={})), 403)
    assert err.error == 'forbidden'
    account.request('PUT', [exchange.DB, 'replica:x'], json={'since': 'now'})


def test_replica_context_twice_keeps_account_and_publication(source,
                                                             context):
    rev = source.user_doc(ACCOUNT)['_rev']
    published = source.doc(exchange.DB, exchange.PUBLICATION_ID)['_rev']
    again = source.agent.get_replica_context()
    assert again['master']['password'] == context['master']['password']
    assert source.user_doc(ACCOUNT)['_rev'] == rev
    assert source.doc(exchange.DB, exchange.PUBLICATION_ID)[
        '_rev'] == published


def test_the_upkeep_waits_for_a_tenant_change_of_security(source, context):
    """_security has no revision: while the admin changes one (it holds
    SECURITY_LOCK), the upkeep writes none, and it finishes after."""
    source.admin.create_database(['late'])
    before = source.security('late')
    done = threading.Event()

    def upkeep():
        source.agent.periodic()
        done.set()

    with couch_admin.SECURITY_LOCK:
        thread = threading.Thread(target=upkeep)
        thread.start()
        assert not done.wait(0.5)
        assert source.security('late') == before
    thread.join(base.scaled(30))
    assert done.is_set()
    assert source.security('late')['members']['roles'] == [
        '_admin', 'trove_replicator']


# -- the replica: attach --------------------------------------------------

def test_attach_makes_one_running_job_per_database_with_3x_auth(
        source, replica, attached):
    password = attached['master']['password']
    jobs = replica.jobs()
    assert sorted(jobs) == ['trove-' + db for db in USER_DBS]
    for db in USER_DBS:
        job = jobs['trove-' + db]
        quoted = parse.quote(db, safe='')
        assert job['source'] == {
            'url': '%s/%s' % (source.url, quoted),
            'auth': {'basic': {'username': ACCOUNT, 'password': password}}}
        assert job['target'] == {
            'url': '%s/%s' % (replica.url, quoted),
            'auth': {'basic': {'username': 'os_admin',
                               'password': nodes.ADMIN_PASSWORD}}}
        assert (job['continuous'], job['trove_source']) == (
            True, 'guest-source')
    nodes.wait_until(lambda: set(replica.job_states().values()) == {
        'running'}, 30, 'every job running in /_scheduler/docs')
    assert replica.agent.problems() == {}


def test_attach_keeps_replicator_for_admins(replica, attached):
    security = replica.security('_replicator')
    assert security['members']['names'] == ['os_admin']
    assert '_admin' in security['members']['roles']
    replica.admin.create_user([_user('bob')])
    _refused(lambda: replica.client_as('bob', USER_PW).request(
        'GET', ['_replicator', 'trove-db1']), 403)


def test_attach_registers_and_makes_read_only_copies(source, replica,
                                                     attached):
    assert source.registrations() == ['guest-replica']
    assert replica.user_dbs() == USER_DBS
    for db in USER_DBS:
        assert replica.security(db) == dict(
            source.security(db), trove_read_only={'writer': 'os_admin'})
        assert replica.doc(db, system.GUARD_DDOC_ID) is not None
    state = json.load(open(replica.state.path))
    assert state['read_only'] is True
    assert state['master'] == {k: attached['master'][k]
                               for k in shared.MasterInfo.KEYS}
    assert _mode(replica.state.path) == 0o600
    assert replica.admin.list_databases()[0] == USER_DBS


def test_the_data_and_users_arrive_and_the_replica_refuses_writes(
        source, replica, attached):
    _caught_up(source, replica)
    assert replica.doc_ids('db1') == ['doc-0', 'doc-1', 'doc-2']
    assert replica.doc_ids('db2') == ['keep']
    alice = replica.user_doc('alice')
    assert alice['trove_source'] == 'guest-source'
    assert alice['derived_key'] == source.user_doc('alice')['derived_key']
    assert replica.user_doc(ACCOUNT) is None
    tenant = replica.client_as('alice', USER_PW)
    assert tenant.request('GET', ['db1', 'doc-1'])['n'] == 1
    err = _refused(lambda: tenant.request('PUT', ['db1', 'mine'],
                                          json={'v': 1}), 403)
    assert (err.error, err.reason) == ('forbidden', guard.READ_ONLY_REFUSED)
    # Root is a server admin, but not the one the jobs write as.
    replica.client().config_set('admins', 'root', 'Root-pw-123')
    root = replica.client_as('root', 'Root-pw-123')
    nodes.wait_until(lambda: _logs_in(root), 10, 'root logs in')
    rows = root.request('POST', ['db1', '_bulk_docs'],
                        json={'docs': [{'_id': 'by-root'}]})
    assert rows == [{'id': 'by-root', 'error': 'forbidden',
                     'reason': guard.READ_ONLY_REFUSED}]
    # The jobs still write: a change on the source arrives.
    source.write('db1', 'late', v=2)
    nodes.wait_until(lambda: replica.doc('db1', 'late'), 30,
                     'a late write on the replica')


def test_progress_follows_opaque_3x_sequences(source, replica, attached):
    _caught_up(source, replica)
    source.write('db1', 'doc-9', n=9)
    source.admin.create_user([_user('bob')])
    source.admin.grant_access('bob', ['db2'])     # no row in _changes
    source.agent.periodic()
    _caught_up(source, replica)
    status = replica.agent.status()
    assert sorted(status) == USER_DBS
    for db, progress in status.items():
        assert re.match(OPAQUE_SEQ, progress['source_seq'])
        assert re.match(OPAQUE_SEQ, progress['replicated_seq'])
        assert progress['behind'] == 0, db
    guest, changes = replica.agent.last_txn()
    assert guest == 'guest-source'
    assert changes == sum(shared.seq_number(source.update_seq(db))
                          for db in USER_DBS)


def test_wait_for_txn_refuses_what_is_not_a_transaction_point(replica):
    with pytest.raises(exception.ReplicationError) as err:
        replica.agent.wait_for_txn(['db1', 3], timeout=1)
    assert 'dictionary' in str(err.value)
    with pytest.raises(exception.ReplicationError) as err:
        replica.agent.wait_for_txn({'db1': 1}, timeout=1)
    assert 'not a replica' in str(err.value)


def test_without_the_source_last_txn_reports_what_was_verified(
        source, replica, attached):
    _caught_up(source, replica)
    counted = replica.agent.last_txn()
    assert counted[1] > 0
    source.stop()
    assert replica.agent.last_txn() == counted
    replica.agent.periodic()
    assert 'cannot read the source' in replica.agent.problems()['source']


# -- following the source -------------------------------------------------

def test_databases_security_and_users_follow_the_source(source, replica,
                                                        attached):
    _caught_up(source, replica)
    replica.admin.create_user([_user('local')])
    source.admin.delete_database('db2')
    source.admin.create_database(['db3'])
    source.admin.create_user([_user('bob')])
    source.admin.grant_access('bob', ['db3'])
    source.admin.delete_user('alice')
    source.agent.periodic()
    replica.agent.periodic()
    assert sorted(replica.jobs()) == ['trove-a/b', 'trove-db1', 'trove-db3']
    assert replica.user_dbs() == ['a/b', 'db1', 'db3']
    assert replica.security('db3') == dict(
        source.security('db3'), trove_read_only={'writer': 'os_admin'})
    assert replica.security('db3')['members']['names'] == ['bob']
    assert replica.user_doc('alice') is None
    assert replica.user_doc('bob')['trove_source'] == 'guest-source'
    assert replica.user_doc('local') is not None
    source.write('db3', 'new', v=3)
    nodes.wait_until(lambda: replica.doc('db3', 'new'), 30,
                     'a document of the new database on the replica')
    assert replica.agent.problems() == {}


def test_a_job_couchdb_reports_crashing_is_a_problem(source, replica,
                                                     attached):
    """db1 is deleted on the source behind its agent's back (the source
    still publishes it): the job's changes feed gets 404, and CouchDB's
    scheduler says ``crashing`` with its reason.  (It retries after a
    backoff of 30 s or more; a job that runs again clears the problem,
    shown with a ``failed`` job in test_replication_states_couchdb3.py.)"""
    _caught_up(source, replica)
    source.client().request('DELETE', ['db1'])
    nodes.wait_until(
        lambda: replica.job_states().get('trove-db1') == 'crashing', 60,
        'the job of db1 crashing in /_scheduler/docs')
    replica.agent.periodic()
    problems = replica.agent.problems()
    assert sorted(problems) == ['db1']
    assert problems['db1'].startswith('replication job crashing: ')
    assert 'changes_req_failed,404' in problems['db1']


# -- bad input changes nothing --------------------------------------------

def _strategy(info, source):
    info['replication_strategy'] = 'MysqlGTIDReplication'


def _no_password(info, source):
    del info['master']['password']


def _credentials_in_url(info, source):
    info['master']['url'] = 'http://%s:%s@127.0.0.1:%d' % (
        ACCOUNT, info['master']['password'], source.server.port)


def _closed_port(info, source):
    info['master']['url'] = 'http://127.0.0.1:%d' % base.free_port()


def _wrong_password(info, source):
    info['master']['password'] = 'not-the-password'


def _itself(info, source):
    info['master']['guest_id'] = 'guest-replica'


def _unknown_api(info, source):
    info['master']['api_version'] = '2'


@pytest.fixture(scope='module')
def bad_input_pair(tmp_path_factory):
    """A source with a context and a fresh replica, shared by the cases
    of bad input: none of them may change anything."""
    root = tmp_path_factory.mktemp('bad-input')
    pair = [nodes.Node(root, 'source'), nodes.Node(root, 'replica')]
    try:
        source, replica = pair
        source.admin.create_database(USER_DBS)
        source.admin.create_user([_user('alice')])
        yield source, replica, source.agent.get_replica_context()
    finally:
        for node in pair:
            node.stop()
        CONF.reset()


def _nothing_changed(source, replica):
    assert replica.jobs() == {}
    assert replica.user_dbs() == []
    assert not os.path.exists(replica.state.path)
    assert replica.user_doc('alice') is None
    assert source.registrations() == []


@pytest.mark.parametrize('spoil, message', [
    (_strategy, "strategy 'MysqlGTIDReplication'"),
    (_no_password, 'lacks password'),
    (_credentials_in_url, 'without credentials'),
    (_closed_port, 'cannot be reached'),
    (_wrong_password, 'refuses the replication credentials'),
    (_itself, 'from itself'),
    (_unknown_api, "unknown source API version '2'"),
])
def test_bad_replica_info_changes_nothing(bad_input_pair, spoil, message):
    source, replica, context = bad_input_pair
    info = json.loads(json.dumps(context))
    spoil(info, source)
    with pytest.raises(exception.ReplicationError) as err:
        replica.agent.attach(info)
    assert message in str(err.value)
    assert context['master']['password'] not in str(err.value)
    _nothing_changed(source, replica)


def test_attach_to_an_instance_that_is_not_a_source_changes_nothing(
        source, replica, context):
    """The account works but nothing is published: no exchange."""
    source.agent.demote_master()
    source.client().request('PUT', ['_users', shared.USER_DOC_ID], json={
        'name': ACCOUNT, 'type': 'user', 'roles': [],
        'password': context['master']['password']})
    with pytest.raises(exception.ReplicationError) as err:
        replica.agent.attach(context)
    assert 'is it a replication source?' in str(err.value)
    _nothing_changed(source, replica)


def test_a_failed_attach_is_undone(source, replica, context):
    """The replica has no _replicator: attach fails after registering."""
    replica.client().request('DELETE', ['_replicator'])
    with pytest.raises(exception.TroveError):
        replica.agent.attach(context)
    assert replica.state.read() == {'read_only': False}
    assert replica.state.master is None
    assert source.registrations() == []
    assert replica.agent.problems() == {}
    for db in replica.user_dbs():
        assert system.READ_ONLY_FIELD not in replica.security(db)


# -- detach ---------------------------------------------------------------

def test_detach_stops_jobs_lifts_read_only_and_unregisters(
        source, replica, attached):
    _caught_up(source, replica)
    result = replica.agent.detach()
    assert result == {'replication_strategy': 'CouchDBReplication',
                      'replica_id': 'guest-replica',
                      'master_id': 'guest-source'}
    assert replica.jobs() == {}
    for db in USER_DBS:
        assert system.READ_ONLY_FIELD not in replica.security(db)
    assert replica.doc('db1', 'doc-1')['n'] == 1                # data stays
    assert replica.client_as('alice', USER_PW).request(
        'PUT', ['db1', 'mine'], json={'v': 1})['ok']
    assert replica.state.master is None and not replica.state.read_only
    assert source.registrations() == []
    assert replica.agent.last_txn() == [None, 0]


def test_detach_for_failover_keeps_the_replica_read_only(source, replica,
                                                         attached):
    replica.agent.detach(for_failover=True)
    assert replica.jobs() == {}
    for db in USER_DBS:
        assert replica.security(db)[system.READ_ONLY_FIELD] == {
            'writer': 'os_admin'}
    assert replica.state.read_only and replica.state.master is None
    assert source.registrations() == []


def test_the_last_replica_gone_rotates_the_password(source, replica,
                                                    make_node, context):
    replica2 = make_node('replica2')
    old = context['master']['password']
    replica.agent.attach(context)
    replica2.agent.attach(context)
    assert source.registrations() == ['guest-replica', 'guest-replica2']

    source.agent.cleanup_source_on_replica_detach(replica.agent.detach())
    assert source.registrations() == ['guest-replica2']
    assert source.state.source_password == old
    assert source.client_as(ACCOUNT, old).session_info()

    source.agent.cleanup_source_on_replica_detach(replica2.agent.detach())
    new = source.state.source_password
    assert new and new != old
    _refused(source.client_as(ACCOUNT, old).session_info, 401)
    assert source.client_as(ACCOUNT, new).session_info()['userCtx'][
        'roles'] == ['trove_replicator']
    assert source.agent.get_replica_context()['master']['password'] == new


def test_registrations_of_an_earlier_agent_version_are_adopted(
        source, replica, make_node, context):
    """An earlier version kept the publication and the registrations in
    the account's _users document; they move into the exchange."""
    replica2 = make_node('replica2')
    replica.agent.attach(context)
    client = source.client()
    account = client.request('GET', ['_users', shared.USER_DOC_ID])
    account[exchange.LEGACY_REPLICAS_FIELD] = {'guest-replica2': {
        'since': '2026-01-01T00:00:00Z'}}
    account[exchange.LEGACY_PUBLISHED_FIELD] = {'databases': {}}
    client.request('PUT', ['_users', shared.USER_DOC_ID], json=account)

    source.agent.cleanup_source_on_replica_detach(replica.agent.detach())
    assert source.registrations() == ['guest-replica2']
    password = context['master']['password']
    assert source.state.source_password == password     # not rotated
    account = source.user_doc(ACCOUNT)
    assert exchange.LEGACY_REPLICAS_FIELD not in account
    assert exchange.LEGACY_PUBLISHED_FIELD not in account
    replica2.agent.attach(source.agent.get_replica_context())
    _caught_up(source, replica2)


def test_demote_deletes_the_account_and_the_exchange(source, replica,
                                                     attached):
    source.agent.demote_master()
    assert source.user_doc(ACCOUNT) is None
    assert not source.client().exists([exchange.DB])
    assert source.state.source_password is None
    replica.agent.periodic()
    assert 'source' in replica.agent.problems()
