"""Incremental backups as Trove makes them: ``trove backup-create --parent``.

Trove's taskmanager sends create_backup with ``backup_info['parent']`` =
the parent's location and checksum, and a restore of the newest backup
gets only that backup's location: the agent finds the rest of the chain
through the objects' metadata.  On the real CouchDB 3.5 the shard and view
files are append-only, so most files of an incremental are deltas; on
pouchdb-server (LevelDB) files are rewritten and stored whole, which must
restore just as well.
"""

import json
import uuid

from integration.scenario import control_plane
from integration import test_backup
from integration import test_backup_couchdb3 as hot

swift_guest = test_backup.swift_guest
CONTAINER = control_plane.BACKUP_CONTAINER

_db = control_plane.database
_user = control_plane.user
_wait_backup = control_plane.wait_for_backup
VIEW = hot.VIEW
# Writes the tenant makes while an incremental backup runs, at least: it
# stores little and is quick (about 50 writes here).
LIVE_WRITES = 10


def backup(guest, parent=None, timeout=300):
    """create_backup as the taskmanager sends it; the COMPLETED fields."""
    backup_id = str(uuid.uuid4())
    guest.api.create_backup(control_plane.backup_info(guest, backup_id,
                                                      parent=parent))
    fields = _wait_backup(guest, backup_id, timeout=timeout).kwargs
    assert fields['state'] == 'COMPLETED', (
        fields, guest.agent.log_text()[-4000:])
    print('%s: %s' % (fields['backup_type'], fields['note']))
    return dict(fields, id=backup_id)


def restore_info(source, fields):
    """prepare's backup_info for a restore of the backup ``fields``."""
    return {'id': fields['id'], 'instance_id': source.id,
            'type': fields['backup_type'], 'location': fields['location'],
            'checksum': fields['checksum']}


def object_head(swift, fields):
    return swift.connection().head_object(
        CONTAINER, fields['location'].rsplit('/', 1)[1])


def _ids(session, url):
    answer = session.get(url + '/_all_docs', timeout=60)
    assert answer.ok, answer.text
    return set(row['id'] for row in answer.json()['rows'])


def _compact(admin, url, server_kind):
    assert admin.post(url + '/_compact', json={},
                      timeout=30).status_code == 202
    if server_kind == 'couchdb3':
        control_plane.wait_until(
            lambda: not admin.get(url, timeout=10).json()['compact_running'],
            60, 'the compaction of %s' % url)


def test_a_chain_of_incrementals_restores_the_newest_state(
        swift_guest, server_kind):
    a = swift_guest('a', backup_segment_max_size=str(256 * 1024))
    a.prepare_and_wait(databases=[_db('shop'), _db('stock')],
                       users=[_user('alice', 'alice-pw',
                                    ['shop', 'stock'])])
    alice, admin = a.session('alice', 'alice-pw'), a.admin_session()
    shop, stock = a.url('shop'), a.url('stock')
    hot._load(alice, shop, 0, 4000)
    hot._load(alice, stock, 0, 2000)
    assert admin.put(shop + '/_design/app', json=VIEW,
                     timeout=30).status_code == 201
    alice.get(shop + '/_design/app/_view/by_n', timeout=120)
    full = backup(a)
    assert full['backup_type'] == 'CouchDBBackup'
    assert 'parent-location' not in json.dumps(dict(object_head(
        swift_guest.swift, full)))

    # Writes, then the first incremental: most files only grew.
    hot._load(alice, shop, 4000, 40)
    first = backup(a, parent=full)
    assert first['backup_type'] == 'CouchDBBackupIncremental'
    head = object_head(swift_guest.swift, first)
    assert head['x-object-meta-parent-location'] == full['location']
    assert head['x-object-meta-parent-checksum'] == full['checksum']
    assert 'incremental on %s' % full['id'] in first['note']
    if server_kind == 'couchdb3':
        assert int(head['content-length']) * 5 < int(object_head(
            swift_guest.swift, full)['content-length']), (first['note'])

    # A compaction replaces stock's shard files: they are stored whole.
    _compact(admin, stock, server_kind)
    second = backup(a, parent=first)

    # A database deleted, another created; the newest incremental is made
    # while the tenant writes.
    assert admin.delete(stock, timeout=30).ok
    a.api.create_database([_db('fresh')])
    control_plane.wait_until(
        lambda: admin.get(a.url('fresh'), timeout=10).ok, 30, 'fresh')
    a.api.grant_access('alice', '%', ['fresh'])
    hot._load(alice, a.url('fresh'), 0, 500)
    writer = hot.Writer(alice, shop) if server_kind == 'couchdb3' else None
    before = {'shop': _ids(alice, shop), 'fresh': _ids(alice, a.url('fresh'))}
    counts = alice.get(shop + '/_design/app/_view/by_n',
                       params={'group': 'true'}, timeout=120).json()['rows']
    if writer:
        writer.start()
    try:
        # Written before Trove asks for the backup: the backup holds them.
        started = writer.wait_for_writes(10) if writer else 0
        third = backup(a, parent=second)
        ended = len(writer.outcomes) if writer else 0
    finally:
        if writer:
            writer.stop()
    if writer:
        writer.check(started, ended, LIVE_WRITES)
        print('%d tenant writes while the backup ran' % (ended - started))
        assert set(writer.acknowledged()) <= _ids(alice, shop)
    written = set(writer.acknowledged() if writer else ())

    # Trove restores the newest one: only its location and checksum.
    b = swift_guest('b')
    message = b.prepare_and_wait(backup_info=restore_info(a, third),
                                 timeout=300)
    assert message.kwargs['payload']['service_status'] == 'running', (
        b.agent.log_text()[-4000:])
    log = b.agent.log_text()
    assert 'restoring a chain of 4 backups' in log, log[-4000:]
    restored = b.session('alice', 'alice-pw')
    assert sorted(d['_name'] for d in b.api.list_databases()[0]) == [
        'fresh', 'shop']
    assert b.admin_session().get(b.url('stock'),
                                 timeout=10).status_code == 404
    after = {'shop': _ids(restored, b.url('shop')),
             'fresh': _ids(restored, b.url('fresh'))}
    assert before['fresh'] == after['fresh']
    held = set(writer.acknowledged(end=started) if writer else ())
    assert before['shop'] | held <= after['shop']
    assert after['shop'] - before['shop'] <= written
    # The view answers, and with the counts it had when the backup began.
    rows = restored.get(b.url('shop', '_design', 'app', '_view', 'by_n'),
                        params={'group': 'true'}, timeout=120).json()['rows']
    if not writer:
        assert rows == counts
    assert sum(row['value'] for row in rows) == len(
        [i for i in after['shop'] if i.startswith(('doc-', 'live-'))])
    # B is managed by the agent afterwards, with its own admin.
    b.api.create_database([_db('after-restore')])
    b.conductor.wait_for_status(b.id, 'running', timeout=30)
