"""Hot backups of a real CouchDB 3.5: append-only shards under writes.

pouchdb-server keeps LevelDB files, which are not append-only, so what a
hot copy of CouchDB's own storage gives can only be shown on the real
server: the tenant keeps writing while the backup runs, a compaction
replaces shard files in the middle of it, and the view index comes back
with the data.  Uploads in small segments make the backup last seconds,
so the writes and the compaction happen while files are being copied.
"""

import threading
import time
import uuid

import requests

from integration.scenario import control_plane
from integration.services import servers
from integration import test_backup

pytestmark = servers.only_on('couchdb3')
swift_guest = test_backup.swift_guest

_db = control_plane.database
_user = control_plane.user
_backup_info = control_plane.backup_info
_wait_backup = control_plane.wait_for_backup
DOCS = 20000
# The answers to a write CouchDB accepted (202: not yet on a quorum).
ACCEPTED = (201, 202)
# Writes the tenant makes while the backup runs, at least: it lasts
# seconds, and one write takes milliseconds (about 770 writes here).
LIVE_WRITES = 50
# [query_server_config] commit_freq: CouchDB writes a view index's header
# this many seconds after the index was updated; a copy taken before holds
# the index as of its previous header.
COMMIT_FREQ = 5
VIEW = {'views': {'by_n': {'map': 'function (doc) { emit(doc.n % 10, 1); }',
                           'reduce': '_count'}}}


def _load(session, url, start, count, batch=2000):
    for first in range(start, start + count, batch):
        docs = [{'_id': 'doc-%06d' % i, 'n': i, 'text': 'x' * 300}
                for i in range(first, min(first + batch, start + count))]
        answer = session.post(url + '/_bulk_docs', json={'docs': docs},
                              timeout=60)
        assert answer.status_code == 201, answer.text


class Writer(threading.Thread):
    """The tenant writing one document after another until stopped.

    Every write's outcome is kept in order, ``(doc id, answer)``: the HTTP
    status, with CouchDB's body when it is not 201/202, or the error of a
    request that got no answer.  The writer goes on after a failure (a
    server that stops answering shows as failed writes, not as a writer
    that stopped).
    """

    def __init__(self, session, url):
        super().__init__(daemon=True)
        self.session, self.url = session, url
        self.outcomes = []
        self.done = threading.Event()

    def run(self):
        n = 0
        while not self.done.is_set():
            doc_id = 'live-%06d' % n
            try:
                answer = self.session.put('%s/%s' % (self.url, doc_id),
                                          json={'n': n}, timeout=30)
                outcome = answer.status_code
                if outcome not in ACCEPTED:
                    outcome = '%s %s' % (outcome, answer.text.strip())
            except requests.RequestException as exc:
                outcome = repr(exc)
            self.outcomes.append((doc_id, outcome))
            if outcome not in ACCEPTED:
                self.done.wait(0.1)
            n += 1

    def acknowledged(self, first=0, end=None):
        """The ids of the writes CouchDB accepted, of outcomes[first:end]."""
        return [doc_id for doc_id, outcome in self.outcomes[first:end]
                if outcome in ACCEPTED]

    def wait_for_writes(self, count):
        control_plane.wait_until(lambda: len(self.outcomes) >= count, 30,
                                 '%d tenant writes' % count)
        return len(self.outcomes)

    def stop(self):
        self.done.set()
        self.join(30)
        assert not self.is_alive(), 'the tenant writer did not stop'

    def check(self, first, end, minimum):
        """Every write succeeded, and ``minimum`` of them were made in
        outcomes[first:end] (while the backup ran)."""
        failed = [(doc_id, outcome) for doc_id, outcome in self.outcomes
                  if outcome not in ACCEPTED]
        assert not failed, 'tenant write %s failed: %s (%d of %d failed)' % (
            failed[0] + (len(failed), len(self.outcomes)))
        assert end - first >= minimum, (
            'the tenant made %d writes while the backup ran, not %d'
            % (end - first, minimum))


def _shard_inodes(guest):
    return {path.name: path.stat().st_ino for path in
            (guest.couchdb.data_dir / 'shards').glob('*/shop.*.couch')}


def test_hot_backup_under_writes_and_a_compaction_restores(swift_guest):
    a = swift_guest('a', backup_segment_max_size=str(16 * 1024))
    a.prepare_and_wait(databases=[_db('shop')],
                       users=[_user('alice', 'alice-pw', ['shop'])])
    alice = a.session('alice', 'alice-pw')
    shop = a.url('shop')
    _load(alice, shop, 0, DOCS)
    # Rewrite some documents so that compaction has something to drop.
    _load(alice, shop, DOCS, 2000)
    admin = a.admin_session()
    assert admin.put(shop + '/_design/app', json=VIEW,
                     timeout=30).status_code == 201
    counts = alice.get(shop + '/_design/app/_view/by_n',
                       params={'group': 'true'}, timeout=120).json()['rows']
    before = set(row['id'] for row in alice.get(
        shop + '/_all_docs', timeout=60).json()['rows'])
    inodes = _shard_inodes(a)
    time.sleep(COMMIT_FREQ + 1)

    writer = Writer(alice, shop)
    backup_id = str(uuid.uuid4())
    a.conductor.create_backup_row(backup_id, a.id)
    writer.start()
    try:
        # Written before Trove asks for the backup: the backup holds them.
        started = writer.wait_for_writes(10)
        a.api.create_backup(_backup_info(a, backup_id))
        a.conductor.wait_for(
            'update_backup', a.id,
            lambda m: (m.kwargs['backup_id'] == backup_id
                       and m.kwargs.get('state') == 'BUILDING'), timeout=60)
        assert admin.post(shop + '/_compact', json={},
                          timeout=30).status_code == 202
        _wait_backup(a, backup_id, timeout=300)
        ended = len(writer.outcomes)
        control_plane.wait_until(
            lambda: not admin.get(shop, timeout=10).json()['compact_running'],
            60, 'the compaction')
    finally:
        writer.stop()
    # What Trove holds of the backup; every write succeeded meanwhile.
    fields = a.conductor.backup_row(backup_id)
    assert fields['state'] == 'COMPLETED', fields
    writer.check(started, ended, LIVE_WRITES)
    print('%d tenant writes while the backup ran' % (ended - started))
    # The compaction replaced the shard files while the backup ran.
    assert all(_shard_inodes(a)[name] != inode
               for name, inode in inodes.items()), 'no shard was compacted'
    on_source = set(row['id'] for row in alice.get(
        shop + '/_all_docs', timeout=60).json()['rows'])
    assert set(writer.acknowledged()) <= on_source

    b = swift_guest('b')
    message = b.prepare_and_wait(backup_info={
        'id': backup_id, 'instance_id': a.id, 'type': 'CouchDBBackup',
        'location': fields['location'], 'checksum': fields['checksum']})
    assert message.kwargs['payload']['service_status'] == 'running', (
        b.agent.log_text()[-4000:])
    # CouchDB's cluster setup gives the nodes of _nodes 5 s to connect,
    # then takes the server down: the backup's node must not be waited for.
    _stays_up(b, seconds=7)
    assert 'Cluster setup timed out' not in b.agent.server_log.read_text()
    restored = b.session('alice', 'alice-pw')
    after = set(row['id'] for row in restored.get(
        b.url('shop', '_all_docs'), timeout=60).json()['rows'])
    # Every document there when the backup started, and no foreign one.
    assert before | set(writer.acknowledged(end=started)) <= after
    assert after - before <= set(writer.acknowledged())
    # The view index came back with the data: it answers without a
    # rebuild (its sequence is already there before the first query).
    info = restored.get(b.url('shop', '_design', 'app', '_info'),
                        timeout=30).json()['view_index']
    assert info['update_seq'] != 0 and info['updater_running'] is False
    assert restored.get(b.url('shop', '_design', 'app', '_view', 'by_n'),
                        params={'group': 'true', 'stale': 'ok'},
                        timeout=60).json()['rows'] == counts
    # What that saves: the first up-to-date query against the same view
    # built from nothing (another signature: one more space in its code),
    # see with -rP.
    first = _timed_query(restored, b.url('shop', '_design', 'app'))
    rebuilt = {'views': {'by_n': dict(VIEW['views']['by_n'])}}
    rebuilt['views']['by_n']['map'] += ' '
    assert b.admin_session().put(b.url('shop', '_design', 'rebuilt'),
                                 json=rebuilt, timeout=30).status_code == 201
    rebuild = _timed_query(restored, b.url('shop', '_design', 'rebuilt'))
    print('first view query after the restore %.2f s, a rebuild of the '
          'same view %.2f s' % (first, rebuild))


def _stays_up(guest, seconds):
    session = guest.admin_session()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert session.get(guest.url('_up'), timeout=10).ok
        time.sleep(0.5)


def _timed_query(session, ddoc_url):
    start = time.monotonic()
    answer = session.get(ddoc_url + '/_view/by_n', params={'group': 'true'},
                         timeout=300)
    assert answer.ok, answer.text
    return time.monotonic() - start
