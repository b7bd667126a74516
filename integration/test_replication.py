"""Read replicas, driven as Trove's taskmanager drives replication.

Each guest is a real agent managing its own server (a real CouchDB 3.5
node, or a pouchdb-server for the 1.6 API: every test runs on both),
reached only through ``trove/guestagent/api.py`` over RabbitMQ.  The flows
follow Trove 26's taskmanager (``trove/taskmanager/{manager,models}.py``):
a replica is prepared with the source's ``get_replication_snapshot``;
promote and eject call the same guest methods in the same order as Trove
does.

Where pouchdb-server and CouchDB differ, the tests assert what CouchDB
does and say what the stand-in does instead.
"""

import json
import time

import pytest
import requests

from integration.scenario import control_plane
from integration.services import base

MASTER_USERS = [{'_name': 'alice', '_password': 'alice-pw', '_host': '%',
                 '_databases': [{'_name': 'shop'}]}]
ACCOUNT = 'os_replicator'
EXCHANGE = 'trove_replication'
# CouchDB's answers to writes the guard refuses (validate_doc_update).
READ_ONLY = {'error': 'forbidden',
             'reason': 'This database is read-only: it is a replica. '
                       'Write to the replication source.'}
ACCOUNT_ONLY_READS = {'error': 'forbidden', 'reason': 'The replication '
                      'account of this instance only reads.'}

_db = control_plane.database


def _wait(predicate, timeout, what):
    return control_plane.wait_until(predicate, timeout, what, interval=0.05)


def _real(guest):
    """Whether the guest runs a real CouchDB 3.x (not pouchdb-server)."""
    return guest.couchdb.kind == 'couchdb3'


def _create_replica(master, replica):
    message, = control_plane.create_replica(master, replica,
                                            master.swift.connection())
    assert message.kwargs['payload']['service_status'] == 'running', (
        replica.agent.log_text()[-3000:])


def _admin(guest):
    """An os_admin session on a guest's CouchDB (the agent's credentials)."""
    creds = json.loads((guest.agent.state_dir /
                        'couchdb-os_admin.json').read_text())
    session = requests.Session()
    session.auth = (creds['user'], creds['password'])
    return session


def _doc_count(guest, db):
    answer = _admin(guest).get(guest.url(db), timeout=10)
    return answer.json().get('doc_count', 0) if answer.ok else None


def _has_doc(guest, db, doc_id):
    return _admin(guest).get(guest.url(db, doc_id), timeout=10).ok


def _seq(seq):
    """The number of an update sequence: 1.x's int, 3.x's "N-opaque"."""
    return int(str(seq).split('-', 1)[0])


def _account(master):
    """A session on the source as the replication account."""
    context = master.api.get_replica_context()['master']
    return master.session(context['user'], context['password'])


def _registrations(master):
    """The replicas registered in the source's exchange database."""
    rows = _admin(master).get(master.url(EXCHANGE, '_all_docs'),
                              timeout=10).json().get('rows', [])
    return sorted(r['id'] for r in rows if r['id'].startswith('replica:'))


def _job_states(replica):
    """{_replicator doc id: state} from CouchDB 3.x's /_scheduler/docs."""
    docs = _admin(replica).get(replica.url('_scheduler', 'docs',
                                           '_replicator'),
                               timeout=10).json()['docs']
    return {d['doc_id']: d['state'] for d in docs
            if d['doc_id'].startswith('trove-')}


def _gone_from_replica(master, replica, db):
    """Whether the replica's agent stopped the job of ``db`` and deleted it
    after the source deleted it.

    CouchDB answers 404 to a write into a deleted database.  pouchdb-server
    creates the database instead, and a job that stops just after a
    deletion still writes its checkpoint (a ``_local`` document): on the
    source, where the source's agent then guards and publishes the
    database again (3 of 12 deletions in a trial here; the tenant's
    deletion is repeated, as the tenant would), and on the replica after
    the agent deleted it, which brings it back empty (2 of 12).  So on
    pouchdb-server the replica's database is gone or holds no document.
    """
    if _real(master):
        gone = (None,)
    elif _doc_count(master, db) is not None:
        _admin(master).delete(master.url(db), timeout=10)
        return False
    else:
        gone = (None, 0)
    jobs = _admin(replica).get(replica.url('_replicator', '_all_docs'),
                               timeout=10).json()['rows']
    return ('Database %s: deleted on the source, deleted here' % db
            in replica.agent.log_text()
            and 'trove-' + db not in [row['id'] for row in jobs]
            and _doc_count(master, db) is None
            and _doc_count(replica, db) in gone)


BACKUP_KEY = 'replication-backup-key-0123456789'
SEGMENT = 64 * 1024


@pytest.fixture
def make_guest(guest_factory, swift):
    """Guests whose backups (the replication snapshots) go to the Swift."""
    def make(name):
        guest = control_plane.swift_guest(
            guest_factory, swift, name, BACKUP_KEY, SEGMENT,
            options={'couchdb': {'replication_sync_interval': '0.5'}})
        guest.swift = swift
        return guest
    return make


@pytest.fixture
def master(make_guest):
    guest = make_guest('master')
    message = guest.prepare_and_wait(databases=[_db('shop')],
                                     users=MASTER_USERS,
                                     root_password='root-pw')
    assert message.kwargs['payload']['service_status'] == 'running'
    docs = [{'_id': 'doc-%04d' % i, 'n': i, 'text': 'x' * (i % 40)}
            for i in range(1000)]
    answer = guest.session('alice', 'alice-pw').post(
        guest.url('shop', '_bulk_docs'), json={'docs': docs}, timeout=60)
    assert answer.status_code == 201, answer.text
    return guest


@pytest.fixture
def make_replica(make_guest):
    return make_guest


def test_replica_follows_its_source(master, make_replica):
    replica = make_replica('replica')
    _create_replica(master, replica)

    # Every document arrives, and the tenant's user logs in on the replica.
    _wait(lambda: _doc_count(replica, 'shop') == _doc_count(master, 'shop'),
          60, 'the 1,000 documents on the replica')
    alice = replica.session('alice', 'alice-pw')
    assert alice.get(replica.url('shop', 'doc-0999'), timeout=10).ok

    # Once its job runs (CouchDB 3.x starts a new one after a random delay
    # of up to 5 s, [replicator] startup_jitter), a write on the source
    # shows on the replica within 5 seconds.
    if _real(replica):
        _wait(lambda: _job_states(replica) == {'trove-shop': 'running'}, 30,
              'the job running on the replica')
    writer = master.session('alice', 'alice-pw')
    assert writer.put(master.url('shop', 'late'), json={'v': 1},
                      timeout=10).status_code == 201
    _wait(lambda: _has_doc(replica, 'shop', 'late'), 5,
          'a new document on the replica')

    # Writes on the replica are refused, for its users and its admins.
    refused = alice.put(replica.url('shop', 'local'), json={'v': 1},
                        timeout=10)
    assert refused.status_code == 403, refused.text
    assert refused.json() == READ_ONLY

    # Databases created and deleted on the source follow.  CouchDB 3.x
    # creates databases admin-only: alice writes once she is granted.
    master.api.create_database([_db('orders')])    # a cast: wait for it
    _wait(lambda: _doc_count(master, 'orders') is not None, 30,
          'the new database on the source')
    master.api.grant_access('alice', '%', [_db('orders')])
    assert writer.put(master.url('orders', 'o1'), json={'v': 1},
                      timeout=10).status_code == 201
    _wait(lambda: _has_doc(replica, 'orders', 'o1'), 30,
          'a new database on the replica')
    master.api.delete_database(_db('orders'))
    _wait(lambda: _gone_from_replica(master, replica, 'orders'), 30,
          'a deleted database gone from the replica')
    names = [d['_name'] for d in replica.api.list_databases()[0]]
    if not _real(replica) and _doc_count(replica, 'orders') == 0:
        names.remove('orders')      # pouchdb-server's empty re-creation
    assert names == ['shop']

    # The source's _security follows: a grant on the source shows.
    master.api.create_user([{'_name': 'bob', '_password': 'bob-pw',
                             '_host': '%', '_databases': []}])
    _wait(lambda: master.api.get_user('bob', '%') is not None, 30,
          'the new user on the source')         # create_user is a cast
    master.api.grant_access('bob', '%', [_db('shop')])
    _wait(lambda: replica.session('bob', 'bob-pw').get(
        replica.url('shop', 'doc-0001'), timeout=10).ok, 30,
        'a new user and its grant on the replica')

    # The transaction-id calls say how far the replica has got.
    txn = master.api.get_latest_txn_id()
    replica.api.wait_for_txn(txn)
    source_id, replicated = replica.api.get_last_txn()
    assert source_id == master.id
    assert replicated >= _seq(txn['shop'])
    # Per database, how far the replica has got in the source's sequence.
    assert _seq(replica.api.get_latest_txn_id()['shop']) >= _seq(txn['shop'])
    lag = replica.api.get_diagnostics()['replication']['shop']
    assert lag['behind'] == 0
    assert _seq(lag['replicated_seq']) >= _seq(txn['shop'])

    # Restart the replica's CouchDB: replication resumes.
    replica.api.restart()
    writer.put(master.url('shop', 'after-restart'), json={'v': 1},
               timeout=10)
    _wait(lambda: _has_doc(replica, 'shop', 'after-restart'), 30,
          'a write after the replica restarted')

    # Detach: the replica keeps its data and becomes writable.
    account = master.api.get_replica_context()['master']
    assert _registrations(master) == ['replica:' + replica.id]
    info = control_plane.detach(replica, master)
    assert info['replica_id'] == replica.id
    assert _registrations(master) == []
    # The last replica has gone: the account's password is rotated.
    _wait(lambda: requests.get(
        master.url('_session'), timeout=10,
        auth=(account['user'], account['password'])).status_code == 401,
        10, 'the old replication password refused')
    assert alice.put(replica.url('shop', 'mine'), json={'v': 1},
                     timeout=10).status_code == 201
    writer.put(master.url('shop', 'after-detach'), json={'v': 1},
               timeout=10)
    time.sleep(2)
    assert not _has_doc(replica, 'shop', 'after-detach')


def test_a_new_replica_starts_from_the_snapshot_backup(master,
                                                       make_replica):
    """Trove 26 makes a backup for every new replica and deletes it at the
    end: the replica is restored from it and replicates only what came
    after, including a database deleted since the backup."""
    master.api.create_database([_db('scratch')])
    _wait(lambda: _doc_count(master, 'scratch') is not None, 30, 'scratch')
    writer = master.session('alice', 'alice-pw')
    seen = {}

    def meanwhile(snapshot):
        seen['snapshot'] = snapshot
        conn = master.swift.connection()
        seen['objects'] = [o['name'] for o in conn.get_container(
            control_plane.BACKUP_CONTAINER)[1]]
        assert writer.put(master.url('shop', 'after-snapshot'),
                          json={'v': 1}, timeout=10).status_code == 201
        master.api.delete_database(_db('scratch'))
        _wait(lambda: _doc_count(master, 'scratch') is None, 30,
              'scratch deleted on the source')

    replica = make_replica('replica')
    message, = control_plane.create_replica(
        master, replica, master.swift.connection(),
        after_snapshot=meanwhile)
    assert message.kwargs['payload']['service_status'] == 'running'
    snapshot = seen['snapshot']
    backup_id = snapshot['dataset']['snapshot_id']
    assert snapshot['seed']['backup_id'] == backup_id
    assert any(name.startswith(backup_id) for name in seen['objects'])

    _wait(lambda: _has_doc(replica, 'shop', 'after-snapshot'), 30,
          'the write made after the snapshot')
    # 1,000 documents, the guard and the write after the snapshot.
    assert _doc_count(replica, 'shop') == _doc_count(master, 'shop') == 1002
    _wait(lambda: _doc_count(replica, 'scratch') is None, 30,
          'the database deleted since the backup gone from the replica')
    # What the backup brought of the source's own replication is gone.
    admin = _admin(replica)
    assert admin.get(replica.url('_users', 'org.couchdb.user:' + ACCOUNT),
                     timeout=10).status_code == 404
    assert admin.get(replica.url(EXCHANGE), timeout=10).status_code == 404
    # Trove deleted the snapshot's backup at the end of its flow.
    conn = master.swift.connection()
    assert not [o for o in conn.get_container(
        control_plane.BACKUP_CONTAINER)[1]
        if o['name'].startswith(backup_id)]
    if _real(replica):
        # The job starts at the sequence the backup holds: of the 1,001
        # documents it wrote only the one written after the snapshot.
        job = admin.get(replica.url('_replicator', 'trove-shop'),
                        timeout=10).json()
        assert job['since_seq'] == snapshot['seed']['since']['shop']
        stats = _wait(lambda: _job_stats(replica, 'trove-shop'), 30,
                      "the job's statistics")
        assert stats['docs_written'] == 1, stats


def _job_stats(replica, doc_id):
    """The statistics CouchDB 3.x keeps of one _replicator job, once it
    has written something."""
    info = _admin(replica).get(
        replica.url('_scheduler', 'docs', '_replicator', doc_id),
        timeout=10).json().get('info') or {}
    return info if info.get('docs_written') else None


def test_the_account_reads_all_it_replicates_and_writes_nothing(
        master, make_replica):
    replica = make_replica('replica')
    _create_replica(master, replica)
    _wait(lambda: _doc_count(replica, 'shop') == 1001, 60,
          'the documents on the replica')
    account = _account(master)

    # It reads the tenant's databases and writes only _local checkpoints:
    # the guard refuses it any document, one by one or in bulk.
    assert account.get(master.url('shop', 'doc-0001'), timeout=10).ok
    refused = account.put(master.url('shop', 'mine'), json={'v': 1},
                          timeout=10)
    assert (refused.status_code, refused.json()) == (403, ACCOUNT_ONLY_READS)
    assert account.put(master.url('shop', '_local', 'checkpoint'),
                       json={'v': 1}, timeout=10).status_code == 201
    # In the exchange, it reads the publication and may write its
    # registrations, nothing else.
    published = account.get(master.url(EXCHANGE, 'source'), timeout=10)
    assert sorted(published.json()['databases']) == ['shop']
    refused = account.put(master.url(EXCHANGE, 'source'),
                          json=dict(published.json(), databases={}),
                          timeout=10)
    assert refused.status_code == 403, refused.text
    assert _registrations(master) == ['replica:' + replica.id]

    # The exchange is the agent's: hidden from the tenant, refused to it.
    assert [d['_name'] for d in master.api.list_databases()[0]] == ['shop']
    with pytest.raises(Exception) as raised:
        master.api.grant_access('alice', '%', [_db(EXCHANGE)])
    assert 'reserved' in str(raised.value)
    # (pouchdb-server answers 401 where CouchDB says 403 to a non-member.)
    assert master.session('alice', 'alice-pw').get(
        master.url(EXCHANGE, 'source'), timeout=10).status_code == (
            403 if _real(master) else 401)
    assert [d['_name'] for d in replica.api.list_databases()[0]] == ['shop']
    assert _doc_count(replica, EXCHANGE) is None      # never replicated

    alice = replica.session('alice', 'alice-pw')
    if _real(master):
        # CouchDB 3.x: _users and /_all_dbs are admin-only, the account
        # cannot even read its own _users document.  (pouchdb-server lets
        # users read their own _users document and anyone list databases,
        # as CouchDB 1.6 did.)
        own = account.get(master.url('_users',
                                     'org.couchdb.user:' + ACCOUNT),
                          timeout=10)
        assert (own.status_code, own.json()['error']) == (403, 'forbidden')
        assert account.get(master.url('_all_dbs'),
                           timeout=10).status_code == 401
        _wait(lambda: _job_states(replica) == {'trove-shop': 'running'}, 15,
              'the job running on the replica')
        # pouchdb-server runs no validate_doc_update on _bulk_docs.
        bulk = alice.post(replica.url('shop', '_bulk_docs'),
                          json={'docs': [{'_id': 'b'}]}, timeout=10)
        assert bulk.status_code == 201
        assert bulk.json() == [dict(READ_ONLY, id='b')]
    # The replica refuses the tenant's writes and follows the source's.
    refused = alice.put(replica.url('shop', 'b'), json={'v': 1}, timeout=10)
    assert (refused.status_code, refused.json()) == (403, READ_ONLY)
    assert master.session('alice', 'alice-pw').put(
        master.url('shop', 'new'), json={'v': 1},
        timeout=10).status_code == 201
    _wait(lambda: _has_doc(replica, 'shop', 'new'), 10,
          'a write on the source on the replica')
    assert not _has_doc(replica, 'shop', 'b')


def test_attach_refuses_bad_input_and_changes_nothing(master, make_replica):
    replica = make_replica('replica')
    assert replica.prepare_and_wait().kwargs['payload'][
        'service_status'] == 'running'
    context = master.api.get_replica_context()

    wrong = dict(context, master=dict(context['master'], password='wrong'))
    gone = dict(context, master=dict(context['master'],
                                     url='http://127.0.0.1:%d' %
                                     base.free_port()))
    other = dict(context, replication_strategy='MysqlGTIDReplication')
    for bad, words in ((wrong, 'refuses the replication credentials'),
                       (gone, 'cannot be reached'),
                       (other, 'MysqlGTIDReplication')):
        with pytest.raises(Exception) as raised:
            replica.api.attach_replica(bad, '')
        assert words in str(raised.value)
    assert replica.api.list_databases()[0] == []
    jobs = _admin(replica).get(replica.url('_replicator', '_all_docs'),
                               timeout=10).json()['rows']
    assert [r['id'] for r in jobs if r['id'].startswith('trove-')] == []
    assert replica.api.get_last_txn() == [None, 0]
    assert _registrations(master) == []


def test_a_failing_job_shows_in_the_heartbeat(master, make_replica):
    replica = make_replica('replica')
    _create_replica(master, replica)
    _wait(lambda: _doc_count(replica, 'shop') == 1001, 60,
          'the documents on the replica')
    # Someone changes the replication account's password on the source.
    admin = _admin(master)
    url = master.url('_users', 'org.couchdb.user:' + ACCOUNT)
    doc = admin.get(url, timeout=10).json()
    for field in ('derived_key', 'salt', 'iterations', 'password_scheme',
                  'pbkdf2_prf'):
        doc.pop(field, None)
    doc['password'] = 'changed-behind-its-back'
    assert admin.put(url, json=doc, timeout=10).ok
    replica.conductor.wait_for_status(replica.id, 'blocked', timeout=30)
    assert 'Replication problem' in replica.agent.log_text()


def test_promote_and_eject_with_three_instances(master, make_replica):
    first = make_replica('first')
    second = make_replica('second')
    _create_replica(master, first)
    _create_replica(master, second)
    for replica in (first, second):
        _wait(lambda r=replica: _doc_count(r, 'shop') == 1001, 60,
              'the documents on %s' % replica.agent.workdir.name)

    # Promote the first replica: it takes writes, the others follow it.
    control_plane.promote(first, master, [first, second])
    writer = first.session('alice', 'alice-pw')
    answer = writer.put(first.url('shop', 'promoted'), json={'v': 1},
                        timeout=10)
    assert answer.status_code == 201, answer.text
    for follower in (master, second):
        _wait(lambda f=follower: _has_doc(f, 'shop', 'promoted'), 30,
              'the new source\'s write on %s' % follower.agent.workdir.name)
    refused = master.session('alice', 'alice-pw').put(
        master.url('shop', 'old'), json={'v': 1}, timeout=10)
    assert (refused.status_code, refused.json()) == (403, READ_ONLY)
    # The old source is a replica now: its account and exchange are gone.
    assert _doc_count(master, EXCHANGE) is None
    assert _registrations(first) == ['replica:' + g.id
                                     for g in sorted((master, second),
                                                     key=lambda g: g.id)]

    # The new source dies: eject it; the most current replica takes over.
    first.agent.stop()
    first.couchdb.stop()
    new_source = control_plane.eject(first.id, [master, second])
    other = second if new_source is master else master
    writer = new_source.session('alice', 'alice-pw')
    answer = writer.put(new_source.url('shop', 'ejected'), json={'v': 1},
                        timeout=10)
    assert answer.status_code == 201, answer.text
    _wait(lambda: _has_doc(other, 'shop', 'ejected'), 30,
          'a write after the eject on the remaining replica')
