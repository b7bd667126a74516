"""Backups and restores that go wrong, driven as Trove drives the agent.

Each fault ends the same way: a clear error, the conductor told (an
``update_backup`` FAILED whose note says what went wrong, or a ``failed to
spawn`` heartbeat for a prepare), nothing written outside the data
directory, and the agent still serving (``rpc_ping`` and a real call after
it).  Real agents, each with its own real CouchDB 3.5 node, and a real
single-node Swift, as in test_backup.py, whose helpers these tests share.
The faults are the agent's, Swift's and the archive's, the same whichever
server runs under the agent: they run on CouchDB 3.5 alone (what 1.6 shows
of backups, its layout and upstream's old backups, test_backup.py and
test_backup_incremental.py show on pouchdb-server).

The restore faults damage one backup, made once for the module by a source
guest: a broken restore never needs a fresh source.  The faults in the
middle of a backup need a backup that lasts a few seconds: an
incompressible ballast file and small segments give one.
"""

import gzip
import io
import os
import signal
import tarfile
import threading
import time
import types
import uuid

import pytest
from swiftclient import exceptions as swift_exc

from integration import guest as guest_mod
from integration import test_backup
from integration.services import base
from integration.services import servers
from integration.test_backup import _backup_info
from integration.test_backup import _db
from integration.test_backup import _fill
from integration.test_backup import _user
from integration.test_backup import _wait_backup
from integration.test_backup import CONTAINER
from integration.test_backup import KEY
from integration.test_backup import SEGMENT
from trove.guestagent.backup import encryption

pytestmark = servers.only_on('couchdb3')

# test_backup's fixture: guests whose backups go to the test Swift.
swift_guest = test_backup.swift_guest

OTHER_KEY = 'another-operator-key-9876543210abc'
MiB = 1024 * 1024
# A backup of a few BALLAST bytes in SLOW_SEGMENT segments lasts seconds.
BALLAST = 32 * MiB
SLOW_SEGMENT = 128 * 1024
# What a guest keeps outside its data dir (<guest>/agent, <guest>/couchdb).
# The agent's own files in CouchDB's configuration directory count too
# (its admin, the runtime settings CouchDB writes), and the server's logs.
BOOKKEEPING = ('*/agent/*.log', '*/agent/couchdb.pid',
               '*/agent/state/couchdb-*', '*/agent/state/prepare.*',
               '*/couchdb/etc/config.json', '*/couchdb-etc/local.d/*.ini',
               '*/couchdb/etc/local.d/*.ini', '*/couchdb/couchdb.log',
               '*/couchdb/couchdb.out', '*/couchdb/epmd.log')


# --- the source backup every restore fault damages ---------------------------

@pytest.fixture(scope='module')
def source(tmp_path_factory, rabbitmq, control_plane, swift, server_kind):
    """Guest A with documents, users and a marker file, backed up once."""
    workdir = tmp_path_factory.mktemp('source')
    couchdb = servers.make_server(server_kind, workdir / 'couchdb')
    couchdb.data_dir.mkdir(parents=True)
    token, storage_url = swift.token_and_storage_url()
    agent = guest_mod.GuestAgent(
        workdir / 'agent', rabbitmq.transport_url, couchdb,
        options={'DEFAULT': _swift_options(storage_url, KEY, SEGMENT)})
    try:
        agent.start()
        a = guest_mod.Guest(agent, control_plane, auth_token=token,
                            project_id='test')
        yield _backed_up(a, swift)
    finally:
        try:
            agent.stop()
        finally:
            couchdb.stop()


def _swift_options(storage_url, key, segment):
    """What swift_guest configures, for a guest made outside it."""
    return {'swift_url': storage_url[:-len('test')],
            'backup_aes_cbc_key': key,
            'backup_segment_max_size': str(segment)}


def _backed_up(a, swift):
    message = a.prepare_and_wait(
        databases=[_db('shop')], users=[_user('alice', 'alice-pw', ['shop'])])
    assert message.kwargs['payload']['service_status'] == 'running', (
        a.agent.log_text()[-4000:])
    _fill(a, 'alice-pw')
    marker = 'a-only-%s.txt' % uuid.uuid4()
    (a.couchdb.data_dir / marker).write_text('only in the backup of A')
    backup_id = str(uuid.uuid4())
    a.api.create_backup(_backup_info(a, backup_id))
    fields = _wait_backup(a, backup_id).kwargs
    assert fields['state'] == 'COMPLETED', fields
    _, body = swift.connection().get_object(
        CONTAINER, '%s.tar.gz.enc' % backup_id)
    return types.SimpleNamespace(guest=a, fields=fields, body=body,
                                 only_in_a=(marker, 'shop'))


# --- helpers -----------------------------------------------------------------

def _restore_info(source_id, location, checksum):
    return {'id': str(uuid.uuid4()), 'instance_id': source_id,
            'type': 'CouchDBBackup', 'location': location,
            'checksum': checksum}


def _upload(swift, data):
    """Put ``data`` as a plain object: (its location, its ETag)."""
    conn = swift.connection()
    conn.put_container(CONTAINER)
    name = 'fault-%s.tar.gz.enc' % uuid.uuid4()
    etag = conn.put_object(CONTAINER, name, data)
    return '%s/%s/%s' % (conn.url, CONTAINER, name), etag


def _files_outside(root, data_dirs):
    """Files under ``root`` outside the data dirs, relative to ``root``."""
    found = set()
    for path in root.rglob('*'):
        inside = any(path == d or d in path.parents for d in data_dirs)
        if not inside and not path.is_dir():
            found.add(path.relative_to(root))
    return found


def _written_outside(root, before, data_dirs):
    """New files outside the data dirs but the agents' bookkeeping."""
    return sorted(
        str(path) for path in _files_outside(root, data_dirs) - before
        if not any(path.match(pattern) for pattern in BOOKKEEPING))


def _failed_to_spawn(guest, **prepare):
    message = guest.prepare_and_wait(**prepare)
    assert message.kwargs['payload']['service_status'] == 'failed to spawn', (
        guest.agent.log_text()[-4000:])


def _assert_serves(guest, couchdb_up=True):
    """The agent answers a ping and then a real call; with CouchDB down,
    it brings CouchDB back on request and manages it again."""
    assert guest.api.rpc_ping() is True
    if not couchdb_up:
        stats = guest.api.get_filesystem_stats(str(guest.couchdb.data_dir))
        assert stats['total'] > 0
        guest.api.restart()
    assert isinstance(guest.api.list_databases()[0], list)


def _failed_backup(guest, backup_id, timeout=120):
    fields = _wait_backup(guest, backup_id, timeout=timeout).kwargs
    assert fields['state'] == 'FAILED', fields
    assert fields['success'] is False
    return fields['note']


def _assert_backup_left_nothing(guest, tmp_path, before):
    """No running-backup marker, no new file outside the data dir."""
    _assert_no_backup_marker(guest)
    assert _written_outside(tmp_path, before,
                            [guest.couchdb.data_dir]) == []


def _assert_no_backup_marker(guest, timeout=10):
    """The running-backup marker goes (just after the conductor is told)."""
    for _ in base.polling_loop(base.scaled(timeout)):
        left = [p.name for p in guest.agent.state_dir.iterdir()
                if p.name.startswith('backup-running-')]
        if not left:
            return
    raise AssertionError("backup markers left: %s" % left)


def _wait_log(guest, *texts, timeout=10):
    """The agent's log, once it holds all ``texts``: a failed cast is
    logged just after its heartbeat or conductor update is sent."""
    for _ in base.polling_loop(base.scaled(timeout)):
        log = guest.agent.log_text()
        if all(text in log for text in texts):
            return log
    raise AssertionError("%s not all in the agent log:\n%s" % (
        texts, log[-4000:]))


def _assert_restore_left_nothing(b, names):
    """B's data dir holds none of ``names`` and no staging leftover."""
    present = os.listdir(b.couchdb.data_dir)
    assert not set(names) & set(present), present
    assert not [n for n in present if n.startswith('.trove-')], present
    assert not [p for n in names for p in b.agent.workdir.parent.rglob(n)]


def _ballast(guest, size=BALLAST):
    """An incompressible file: the backup of the data dir takes seconds."""
    with open(guest.couchdb.data_dir / 'ballast.bin', 'wb') as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))


def _segments(conn, backup_id):
    try:
        _, listing = conn.get_container(CONTAINER, prefix=backup_id)
    except swift_exc.ClientException as exc:
        if exc.http_status != 404:
            raise
        return []  # no backup made the container yet
    return [o['name'] for o in listing]


def _wait_uploading(guest, conn, backup_id, segments=3, timeout=60):
    """Block until BUILDING was sent and some segments are in Swift."""
    guest.conductor.wait_for(
        'update_backup', guest.id,
        lambda m: (m.kwargs['backup_id'] == backup_id and
                   m.kwargs.get('state') == 'BUILDING'), timeout=timeout)
    for _ in base.polling_loop(base.scaled(timeout), interval=0.05):
        found = _segments(conn, backup_id)
        if len(found) >= segments:
            return found
    raise AssertionError("no %d segments of %s within %ss" % (
        segments, backup_id, timeout))


def _wait_no_segments(conn, backup_id, timeout=20):
    """Poll until nothing named after the backup is in the container."""
    for _ in base.polling_loop(base.scaled(timeout), interval=0.2):
        left = _segments(conn, backup_id)
        if not left:
            return
    raise AssertionError("left in Swift after %ss: %s" % (timeout, left))


def _kill_couchdb(guest):
    """SIGKILL the server the agent started (a crash)."""
    pid = int((guest.agent.workdir / 'couchdb.pid').read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    for _ in base.polling_loop(base.scaled(10)):
        if not base.pid_exists(pid):
            return
    raise AssertionError("CouchDB server %s survived SIGKILL" % pid)


# --- Swift faults during a backup --------------------------------------------

def test_swift_unreachable_at_start_fails_the_backup(swift_guest, tmp_path):
    port = base.free_port()
    closed = 'http://127.0.0.1:%d/v1/AUTH_' % port
    a = swift_guest('a', swift_url=closed)
    a.prepare_and_wait(databases=[_db('shop')])
    before = _files_outside(tmp_path, [a.couchdb.data_dir])
    backup_id = str(uuid.uuid4())
    a.api.create_backup(_backup_info(a, backup_id))

    note = _failed_backup(a, backup_id)
    assert 'ConnectionError' in note and 'port=%d' % port in note, note
    assert a.auth_token not in note
    _assert_backup_left_nothing(a, tmp_path, before)
    _assert_serves(a)


def swift_stops_during(swift, a, info, tmp_path, before):
    """create_backup(info) on A with Swift's proxy killed mid-upload and
    back 2 s later: FAILED, saying so, nothing left in Swift or outside
    A's data dir, A serving."""
    backup_id = info['id']
    conn = swift.connection()
    a.api.create_backup(info)
    _wait_uploading(a, conn, backup_id)
    swift.proxy.kill()
    restart = threading.Timer(2, swift.start_proxy)
    restart.start()
    try:
        note = _failed_backup(a, backup_id)
    finally:
        restart.join()
        if not swift.proxy.is_running():
            swift.start_proxy()
    assert 'Swift' in note and backup_id in note, note
    _wait_no_segments(swift.connection(), backup_id)  # its _index too
    _assert_backup_left_nothing(a, tmp_path, before)
    _assert_serves(a)


def test_swift_stopping_mid_upload_fails_and_leaves_nothing(
        swift_guest, tmp_path):
    swift = swift_guest.swift
    a = swift_guest('a', backup_segment_max_size=str(SLOW_SEGMENT))
    a.prepare_and_wait(databases=[_db('shop')])
    _ballast(a)
    before = _files_outside(tmp_path, [a.couchdb.data_dir])
    backup_id = str(uuid.uuid4())
    swift_stops_during(swift, a, _backup_info(a, backup_id), tmp_path,
                       before)
    conn = swift.connection()
    # Swift is back: the next backup of the same guest completes.
    (a.couchdb.data_dir / 'ballast.bin').unlink()
    again = str(uuid.uuid4())
    a.api.create_backup(_backup_info(a, again))
    assert _wait_backup(a, again).kwargs['state'] == 'COMPLETED'
    conn.delete_object(CONTAINER, '%s.tar.gz.enc' % again,
                       query_string='multipart-manifest=delete')


# --- damaged or foreign backups at restore -----------------------------------

def _restore_fails(swift_guest, tmp_path, source, location, checksum,
                   errors, key=KEY):
    """B restores A's (damaged) backup: failed to spawn, nothing left;
    the agent's log names one of ``errors``.  Returns that log."""
    b = swift_guest('b', key=key)
    before = _files_outside(tmp_path, [b.couchdb.data_dir])
    _failed_to_spawn(b, backup_info=_restore_info(
        source.guest.id, location, checksum))
    log = _wait_log(b, 'prepare failed')
    assert [e for e in errors if e in log], (errors, log[-4000:])
    _assert_restore_left_nothing(b, source.only_in_a)
    assert _written_outside(tmp_path, before, [b.couchdb.data_dir]) == []
    _assert_serves(b, couchdb_up=False)
    return log


def test_wrong_key_is_refused(swift_guest, tmp_path, source):
    log = _restore_fails(swift_guest, tmp_path, source,
                         source.fields['location'],
                         source.fields['checksum'],
                         ['chunk 0 failed authentication'], key=OTHER_KEY)
    assert OTHER_KEY not in log and KEY not in log


def test_truncated_object_is_refused(swift_guest, tmp_path, source):
    half = source.body[:len(source.body) // 2]
    location, etag = _upload(swift_guest.swift, half)
    _restore_fails(swift_guest, tmp_path, source, location, etag,
                   ['DecryptionError: Cannot decrypt the backup: truncated'])


@pytest.mark.parametrize('checksum', ['recomputed', 'original'])
def test_flipped_byte_is_refused(swift_guest, tmp_path, source, checksum):
    damaged = bytearray(source.body)
    damaged[len(damaged) // 2] ^= 0x01
    location, etag = _upload(swift_guest.swift, bytes(damaged))
    given = etag if checksum == 'recomputed' else source.fields['checksum']
    # With the checksum recomputed only the authentication can catch it;
    # with the original one, whichever check sees the damage first.
    errors = ['failed authentication']
    if checksum == 'original':
        errors.append('ChecksumMismatch')
    _restore_fails(swift_guest, tmp_path, source, location, given, errors)


def test_intact_object_with_another_checksum_is_refused(
        swift_guest, tmp_path, source):
    # Every byte authenticates: only the checksum, known once the last
    # segment is in, stops the restore, before the staged data is used.
    wrong = '0123456789abcdef0123456789abcdef'
    _restore_fails(swift_guest, tmp_path, source, source.fields['location'],
                   wrong, ['ChecksumMismatch'])


# --- hostile archives --------------------------------------------------------

def _tar(members):
    """A tar of ('file', name, bytes) and ('symlink', name, target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w', format=tarfile.PAX_FORMAT) as tar:
        for kind, name, value in [('file', 'data/ok.txt', b'ok')] + members:
            info = tarfile.TarInfo(name)
            if kind == 'symlink':
                info.type, info.linkname = tarfile.SYMTYPE, value
                tar.addfile(info)
            else:
                info.size = len(value)
                tar.addfile(info, io.BytesIO(value))
    return out.getvalue()


def _as_backup(tar_bytes):
    """This project's backup format: gzip, then our authenticated format."""
    return b''.join(encryption.encrypt([gzip.compress(tar_bytes)], KEY))


# case: (members naming the file ``evil``, why the agent refuses them)
HOSTILE = {
    'dotdot': (lambda evil: [('file', 'data/../../%s' % evil, b'x')],
               "'..' in its name"),
    'absolute': (lambda evil: [('file', '/etc/%s' % evil, b'x')],
                 "absolute name"),
    'legacy-dotdot': (lambda evil: [
        ('file', '/var/lib/couchdb/../../%s' % evil, b'x')],
        "'..' in its name"),
    'symlink': (lambda evil: [('symlink', 'data/link', '/'),
                              ('file', 'data/link/tmp/%s' % evil, b'x')],
                "it is a symlink to '/'"),
}


@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_hostile_archive_is_refused(swift_guest, tmp_path, case):
    evil = 'evil-%s' % uuid.uuid4()
    members, reason = HOSTILE[case]
    location, etag = _upload(swift_guest.swift,
                             _as_backup(_tar(members(evil))))
    b = swift_guest('b')
    before = _files_outside(tmp_path, [b.couchdb.data_dir])
    _failed_to_spawn(b, backup_info=_restore_info('hostile', location, etag))

    _wait_log(b, 'prepare failed', 'UnsafeArchiveError', reason)
    targets = ['/etc', '/tmp', '/var', '/var/lib', '/', str(tmp_path)]
    assert not [t for t in targets if os.path.lexists(os.path.join(t, evil))]
    assert not list(tmp_path.rglob('*%s*' % evil))
    _assert_restore_left_nothing(b, ['ok.txt', 'link'])
    assert _written_outside(tmp_path, before, [b.couchdb.data_dir]) == []
    _assert_serves(b, couchdb_up=False)


# --- CouchDB and the agent going away during a backup ------------------------

def test_couchdb_stopped_before_the_backup_fails_it(swift_guest, tmp_path):
    a = swift_guest('a')
    a.prepare_and_wait(databases=[_db('shop')])
    before = _files_outside(tmp_path, [a.couchdb.data_dir])
    _kill_couchdb(a)
    backup_id = str(uuid.uuid4())
    a.api.create_backup(_backup_info(a, backup_id))

    note = _failed_backup(a, backup_id)
    assert 'CouchDBUnavailable' in note, note
    _assert_backup_left_nothing(a, tmp_path, before)
    _assert_serves(a, couchdb_up=False)


def test_couchdb_killed_during_the_copy_still_gives_a_backup(
        swift_guest, tmp_path):
    # The snapshot (flush, document counts) needs CouchDB; the copy of the
    # files after it does not, and a killed server's files are as it left
    # them: the backup completes, and it restores.
    a = swift_guest('a', backup_segment_max_size=str(SLOW_SEGMENT))
    a.prepare_and_wait(databases=[_db('shop')],
                       users=[_user('alice', 'alice-pw', ['shop'])])
    _fill(a, 'alice-pw')
    _ballast(a, BALLAST // 2)  # B downloads it all again
    before = _files_outside(tmp_path, [a.couchdb.data_dir])
    conn = swift_guest.swift.connection()
    backup_id = str(uuid.uuid4())
    a.api.create_backup(_backup_info(a, backup_id))
    _wait_uploading(a, conn, backup_id)
    _kill_couchdb(a)
    killed = time.time()

    done = _wait_backup(a, backup_id)
    assert done.kwargs['state'] == 'COMPLETED', done.kwargs
    assert done.received > killed  # CouchDB died before the copy ended
    fields = done.kwargs
    _assert_backup_left_nothing(a, tmp_path, before)
    _assert_serves(a, couchdb_up=False)
    b = swift_guest('b', backup_segment_max_size=str(SLOW_SEGMENT))
    message = b.prepare_and_wait(backup_info=_restore_info(
        a.id, fields['location'], fields['checksum']))
    assert message.kwargs['payload']['service_status'] == 'running', (
        b.agent.log_text()[-4000:])
    rows = b.session('alice', 'alice-pw').get(
        b.url('shop', '_all_docs'), timeout=10).json()
    assert rows['total_rows'] == 200
    conn.delete_object(CONTAINER, '%s.tar.gz.enc' % backup_id,
                       query_string='multipart-manifest=delete')


def test_agent_restarted_during_a_backup_reports_it_failed(
        swift_guest, tmp_path):
    a = swift_guest('a', backup_segment_max_size=str(SLOW_SEGMENT))
    a.prepare_and_wait(databases=[_db('shop')])
    _ballast(a)
    before = _files_outside(tmp_path, [a.couchdb.data_dir])
    conn = swift_guest.swift.connection()
    backup_id = str(uuid.uuid4())
    a.api.create_backup(_backup_info(a, backup_id))
    _wait_uploading(a, conn, backup_id)
    since = time.time()
    a.agent.kill()
    a.agent.start()

    note = _failed_backup(a, backup_id, timeout=60)
    assert 'interrupted' in note, note
    assert [m.kwargs['state'] for m in a.conductor.select(
        'update_backup', a.id, since)] == ['FAILED']
    _assert_backup_left_nothing(a, tmp_path, before)
    _assert_serves(a)
