"""The archive stage: order, hot copy, round trips, and hostile archives.

Real files in tmp_path, real GNU tar; files are changed while the archive
is written through ``write_tar``'s ``on_event`` hook or by advancing the
generator chunk by chunk.
"""

import contextlib
import hashlib
import io
import logging
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import tracemalloc

import pytest

from trove.guestagent.backup import archive, compression, extract
from trove.guestagent.backup.archive import backup_order, write_tar
from trove.guestagent.backup.extract import (
    CorruptArchiveError, UnsafeArchiveError, safe_extract, staged_restore)

IS_ROOT = os.geteuid() == 0
KIB = 1024


# --- helpers ---------------------------------------------------------------

def _write(path, data=b'', mode=0o644, mtime_ns=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def _data(size, seed=1):
    block = hashlib.sha256(b'%d' % seed).digest()
    return (block * (size // len(block) + 1))[:size]


def _snapshot(root):
    """{relative path: (kind, mode, mtime_ns, sha256 or link)}, root too."""
    root = str(root)
    found = {'.': _describe(root)}
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(top, name)
            found[os.path.relpath(path, root)] = _describe(path)
    return found


def _describe(path):
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return ('link', os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return ('dir', stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    with open(path, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return ('file', stat.S_IMODE(st.st_mode), st.st_mtime_ns, digest)


def _tar(chunks):
    return b''.join(chunks)


def _members(blob):
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return [(m.name, m.size, tar.extractfile(m).read() if m.isreg()
                 else None) for m in tar]


def _pieces(blob, size=1000):
    return (blob[i:i + size] for i in range(0, len(blob), size))


def _run(*argv, **kwargs):
    return subprocess.run(list(argv), check=True, capture_output=True,
                          **kwargs)


@pytest.fixture
def couchdb3(tmp_path):
    """A CouchDB 3.x-like data dir with known modes and mtimes."""
    root = tmp_path / 'couchdb3'
    _write(root / '_dbs.couch', _data(3000, 1), 0o640)
    _write(root / '_nodes.couch', _data(10, 2))
    _write(root / '_users.couch', _data(0, 3))
    _write(root / 'shards/00000000-7fffffff/db.1700000000.couch',
           _data(300 * KIB, 4), 0o600)
    _write(root / 'shards/80000000-ffffffff/db.1700000000.couch',
           _data(513, 5))
    _write(root / '.shards/00000000-7fffffff/db.1700000000_design/mrview/'
           'a1b2.view', _data(2 * KIB + 7, 6))
    _write(root / 'zz-notes.txt', b'other')
    (root / 'empty').mkdir(mode=0o750)
    os.chmod(root / 'empty', 0o750)
    for i, path in enumerate(sorted(root.rglob('*'), reverse=True)):
        os.utime(path, ns=(1, 1_600_000_000_123_456_789 + i))
    return root


# --- order -----------------------------------------------------------------

def test_order_couchdb3(couchdb3):
    (couchdb3 / '.delete').mkdir()
    assert backup_order(couchdb3) == [
        '.shards',
        '.shards/00000000-7fffffff',
        '.shards/00000000-7fffffff/db.1700000000_design',
        '.shards/00000000-7fffffff/db.1700000000_design/mrview',
        '.shards/00000000-7fffffff/db.1700000000_design/mrview/a1b2.view',
        '_dbs.couch', '_nodes.couch', '_users.couch',
        'shards',
        'shards/00000000-7fffffff',
        'shards/00000000-7fffffff/db.1700000000.couch',
        'shards/80000000-ffffffff',
        'shards/80000000-ffffffff/db.1700000000.couch',
        '.delete', 'empty', 'zz-notes.txt',
    ]


def test_order_couchdb1(tmp_path):
    root = tmp_path / 'couchdb1'
    for name in ('a.couch', 'b.couch', '_users.couch', 'team/c.couch',
                 '.a_design/9f.view', '.team/c_design/77.view', 'couch.uri',
                 '.b_design/mrview/1.view'):
        _write(root / name, b'x')
    assert backup_order(root) == [
        '.a_design', '.a_design/9f.view',
        '.b_design', '.b_design/mrview', '.b_design/mrview/1.view',
        '.team', '.team/c_design', '.team/c_design/77.view',
        '_users.couch', 'a.couch', 'b.couch', 'team', 'team/c.couch',
        'couch.uri',
    ]


def test_order_other_layout_is_a_sorted_walk(tmp_path):
    root = tmp_path / 'pouchdb'
    for name in ('db1/CURRENT', 'db1/000003.log', 'db1/LOCK', 'config.json',
                 'pouch__all_dbs__/MANIFEST-000002', 'log.txt'):
        _write(root / name, b'x')
    assert backup_order(root) == [
        'config.json', 'db1', 'db1/000003.log', 'db1/CURRENT', 'db1/LOCK',
        'log.txt', 'pouch__all_dbs__', 'pouch__all_dbs__/MANIFEST-000002']


def test_order_skips_links_specials_and_restore_leftovers(tmp_path, caplog):
    root = tmp_path / 'd'
    _write(root / 'a.couch', b'x')
    (root / 'lost+found').mkdir()
    (root / '.trove-restore-abc').mkdir()
    os.symlink('/etc', root / 'etc-link')
    os.symlink(root / 'a.couch', root / 'b.couch')
    os.mkfifo(root / 'fifo')
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / 'sock'))
        assert IS_ROOT, 'making a device file needs root'
        os.mknod(root / 'null', stat.S_IFCHR | 0o600, os.makedev(1, 3))
        with caplog.at_level(logging.WARNING):
            assert backup_order(root) == ['a.couch']
    assert 'etc-link' in caplog.text and 'fifo' in caplog.text
    assert 'sock' in caplog.text and 'null' in caplog.text


def test_members_follow_backup_order_and_extras_come_last(couchdb3):
    blob = _tar(write_tar(couchdb3, [('config/local.ini', b'[admins]\n'),
                                     ('meta/backup.json', b'{}')]))
    names = [name for name, _, _ in _members(blob)]
    assert names == (['data'] + ['data/' + rel for rel in
                                 backup_order(couchdb3)]
                     + ['config/local.ini', 'meta/backup.json'])
    assert len(blob) % tarfile.RECORDSIZE == 0


@pytest.mark.parametrize('name', ['/abs', 'a/../b', 'data/x', 'dir/'])
def test_bad_extra_names_are_refused(tmp_path, name):
    with pytest.raises(archive.ArchiveError):
        _tar(write_tar(tmp_path, [(name, b'x')]))


# --- round trip --------------------------------------------------------------

@pytest.mark.parametrize('bufsize', [4096, archive.BUFSIZE])
def test_round_trip_is_identical(couchdb3, tmp_path, bufsize):
    _write(couchdb3 / 'shards/n\u00e9e/' / ('x' * 200 + '.couch'), b'long')
    os.utime(couchdb3 / 'shards', ns=(5, 1_650_000_000_000_000_001))
    ini = _write(tmp_path / 'local.ini', b'[couchdb]\nuuid = 42\n')
    dest = tmp_path / 'dest'
    dest.mkdir()
    chunks = write_tar(couchdb3, [('config/local.ini', ini),
                                  ('meta/backup.json', b'{"v": 1}')],
                       bufsize=bufsize)
    result = safe_extract(chunks, dest)
    source, restored = _snapshot(couchdb3), _snapshot(dest)
    del source['.'], restored['.']
    assert restored == source
    assert result.files == sum(v[0] == 'file' for v in source.values())
    assert result.directories == sum(v[0] == 'dir' for v in source.values())
    assert result.bytes == sum(p.stat().st_size for p in couchdb3.rglob('*')
                               if p.is_file())
    assert result.extras == [('config/local.ini', b'[couchdb]\nuuid = 42\n'),
                             ('meta/backup.json', b'{"v": 1}')]
    assert result.extra('meta/backup.json') == b'{"v": 1}'
    assert not (dest / 'config').exists() and not (dest / 'meta').exists()


def test_file_data_is_cut_on_bufsize_boundaries_of_the_stream(tmp_path):
    # The gzip stage takes bufsize blocks: aligned chunks pass without a copy.
    bufsize = 4096
    _write(tmp_path / 'src/a.couch', _data(10_000, seed=2))
    _write(tmp_path / 'src/b.couch', _data(3 * bufsize + 7, seed=3))
    offset, ends = 0, []
    for chunk in write_tar(tmp_path / 'src', bufsize=bufsize):
        offset += len(chunk)
        ends.append(offset)
    # a.couch's data: one read up to the first boundary, one to the next
    # (10 000 bytes are more than a whole block), one to its end.
    assert bufsize in ends and 2 * bufsize in ends
    assert 3 * bufsize in ends and 4 * bufsize in ends  # b.couch's data
    blocks = list(compression.blocks(
        write_tar(tmp_path / 'src', bufsize=bufsize), bufsize))
    assert sum(map(len, blocks)) == offset
    assert all(len(b) == bufsize for b in blocks[:-1])


def test_extraction_keeps_only_its_window_in_the_page_cache(
        tmp_path, monkeypatch, page_cache):
    # Scaled down: write back every 256 KiB, keep at most 1 MiB cached.
    monkeypatch.setattr(extract, 'WRITEBACK_STEP', 256 * KIB)
    monkeypatch.setattr(extract, 'PAGE_CACHE_WINDOW', 1024 * KIB)
    big = _data(8 * 1024 * KIB, seed=4)
    _write(tmp_path / 'src/big.couch', big)
    _write(tmp_path / 'src/small.couch', _data(100 * KIB, seed=5))
    dest = tmp_path / 'dest'
    dest.mkdir()
    safe_extract(write_tar(tmp_path / 'src'), dest)
    restored = dest / 'big.couch'
    # Everything but the last ~1 MiB went to disk and left the cache.
    assert page_cache.resident_bytes(restored, 0, 6 * 1024 * KIB) == 0
    assert restored.read_bytes() == big
    assert (dest / 'small.couch').read_bytes() == _data(100 * KIB, seed=5)


def test_numeric_owner_in_headers_and_owner_on_extract(couchdb3, tmp_path):
    assert IS_ROOT, 'changing file owners needs root'
    os.chown(couchdb3 / '_dbs.couch', 4321, 8765)
    blob = _tar(write_tar(couchdb3))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        member = tar.getmember('data/_dbs.couch')
    assert (member.uid, member.gid, member.uname) == (4321, 8765, '')
    listing = _run('tar', '--numeric-owner', '-tvf', '-', input=blob).stdout
    assert b'4321/8765' in listing
    dest = tmp_path / 'dest'
    dest.mkdir()
    safe_extract(_pieces(blob), dest, owner=(1234, 5678))
    for path in dest.rglob('*'):
        st = path.lstat()
        assert (st.st_uid, st.st_gid) == (1234, 5678), path


def test_gnu_tar_lists_and_extracts_it(couchdb3, tmp_path):
    blob = _tar(write_tar(couchdb3, [('meta/backup.json', b'{}')]))
    listed = _run('tar', '-tvf', '-', input=blob)
    assert listed.stderr == b''
    listing = listed.stdout.decode()
    assert 'data/shards/00000000-7fffffff/db.1700000000.couch' in listing
    assert str(300 * KIB) in listing
    out = tmp_path / 'gnu'
    out.mkdir()
    assert _run('tar', '-xf', '-', '-C', str(out), input=blob).stderr == b''
    source, restored = _snapshot(couchdb3), _snapshot(out / 'data')
    del source['.'], restored['.']
    assert restored == source
    assert (out / 'meta/backup.json').read_bytes() == b'{}'


def test_extracts_a_gnu_tar_archive(couchdb3, tmp_path):
    blob = _run('tar', '-C', str(tmp_path), '-cf', '-', 'couchdb3').stdout
    dest = tmp_path / 'dest'
    dest.mkdir()
    safe_extract(_pieces(blob, 4099), dest, strip_prefix='couchdb3/')
    # GNU tar keeps whole seconds in its default format.
    def seconds(snapshot):
        return {k: (v[0], v[1], v[2] // 10**9, v[3:])
                for k, v in snapshot.items() if k != '.'}
    assert seconds(_snapshot(dest)) == seconds(_snapshot(couchdb3))


def test_legacy_absolute_archive_of_upstream_restores(couchdb3, tmp_path):
    # Upstream: tar cpPf - /var/lib/couchdb (absolute member names).
    blob = _run('tar', '-cpPf', '-', str(couchdb3)).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert tar.getnames()[1].startswith(str(couchdb3) + '/')
    dest = tmp_path / 'dest'
    dest.mkdir()
    result = safe_extract(_pieces(blob), dest, legacy_root=str(couchdb3))
    assert result.files == 7
    assert (dest / '_dbs.couch').read_bytes() == _data(3000, 1)
    assert (dest / 'shards/00000000-7fffffff/db.1700000000.couch'
            ).read_bytes() == _data(300 * KIB, 4)


def test_legacy_var_lib_couchdb_names_map_into_dest(tmp_path):
    blob = _crafted(_dir('/var/lib/couchdb/'),
                    _file('/var/lib/couchdb/x.couch', b'db'),
                    _file('/var/lib/couchdb/.x_design/v.view', b'view'))
    dest = tmp_path / 'dest'
    dest.mkdir()
    safe_extract([blob], dest, legacy_root='/var/lib/couchdb/')
    assert (dest / 'x.couch').read_bytes() == b'db'
    assert (dest / '.x_design/v.view').read_bytes() == b'view'


def test_a_later_member_of_the_same_name_supersedes(tmp_path):
    blob = _crafted(_file('data/a.couch', b'first, longer'),
                    _file('data/a.couch', b'second'))
    dest = tmp_path / 'dest'
    dest.mkdir()
    safe_extract([blob], dest)
    assert (dest / 'a.couch').read_bytes() == b'second'


def test_setuid_setgid_sticky_and_group_write_are_dropped(tmp_path):
    blob = _crafted(_dir('data/sticky', mode=0o3777),
                    _file('data/suid', b'#!', mode=0o6755),
                    _file('data/shared', b'x', mode=0o666))
    dest = tmp_path / 'dest'
    dest.mkdir()
    safe_extract([blob], dest)
    assert stat.S_IMODE((dest / 'suid').stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / 'shared').stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / 'sticky').stat().st_mode) == 0o755


def test_the_whole_stream_is_read_and_its_late_errors_surface(tmp_path):
    blob = _crafted(_file('data/a', b'x'))

    class AuthFailed(Exception):
        pass

    def stream(fail):
        yield blob
        yield b'\0' * 10240
        if fail:
            raise AuthFailed('tag mismatch')

    dest = tmp_path / 'dest'
    dest.mkdir()
    assert safe_extract(stream(False), dest).files == 1
    with pytest.raises(AuthFailed):
        safe_extract(stream(True), tmp_path)


def test_memory_stays_bounded_by_the_read_buffer(tmp_path):
    big = _write(tmp_path / 'src/shards/r/big.couch', b'')
    with open(big, 'wb') as f:
        for i in range(24):
            f.write(_data(1024 * 1024, i))
    dest = tmp_path / 'dest'
    dest.mkdir()
    tracemalloc.start()
    try:
        safe_extract(write_tar(tmp_path / 'src'), dest)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * archive.BUFSIZE
    assert (dest / 'shards/r/big.couch').stat().st_size == 24 * 1024 * 1024


# --- hot copy --------------------------------------------------------------

TARGET = 'shards/00000000-7fffffff/db.1700000000.couch'
ORIGINAL = _data(300 * KIB, 4)


def _member_data(blob, name='data/' + TARGET):
    return [data for member, _, data in _members(blob) if member == name]


def _drive(chunks, on_chunk):
    """Consume ``chunks``, calling ``on_chunk(n)`` after each one."""
    out = []
    for chunk in chunks:
        out.append(chunk)
        on_chunk(len(out))
    return b''.join(out)


def _mid_copy(couchdb3, change, after_chunks=3):
    """Archive with 4 KiB reads; ``change()`` runs ``after_chunks`` chunks
    after the target was opened (its header and first data chunks out)."""
    state = {'opened_at': None, 'done': False}
    chunks = []

    def on_event(event, rel):
        if event == 'opened' and rel == TARGET and not state['done']:
            state['opened_at'] = len(chunks)

    def on_chunk(n):
        chunks.append(n)
        at = state['opened_at']
        if at is not None and not state['done'] and n == at + after_chunks:
            state['done'] = True
            change()

    blob = _drive(write_tar(couchdb3, bufsize=4096, on_event=on_event),
                  on_chunk)
    assert state['done']
    return blob


def _on_open(couchdb3, change, event='opened', rel=TARGET, **kwargs):
    def on_event(name, path):
        if name == event and path == rel:
            change()
    return _tar(write_tar(couchdb3, on_event=on_event, **kwargs))


def _append(path, data):
    with open(path, 'ab') as f:
        f.write(data)


def test_a_file_growing_after_open_is_stored_as_opened(couchdb3, tmp_path):
    blob = _on_open(couchdb3, lambda: _append(couchdb3 / TARGET, b'N' * 999))
    assert _member_data(blob) == [ORIGINAL]
    dest = tmp_path / 'dest'
    dest.mkdir()
    safe_extract([blob], dest)
    assert (dest / TARGET).read_bytes() == ORIGINAL


def test_a_file_growing_mid_copy_is_stored_as_opened(couchdb3):
    blob = _mid_copy(couchdb3, lambda: _append(couchdb3 / TARGET,
                                               b'N' * 99999))
    assert _member_data(blob) == [ORIGINAL]
    assert (couchdb3 / TARGET).stat().st_size == len(ORIGINAL) + 99999


def _compact(couchdb3):
    """What compaction does: a new file renamed over the database."""
    new = _write(couchdb3 / (TARGET + '.compact'), b'compacted' * 10)
    os.replace(new, couchdb3 / TARGET)


@pytest.mark.parametrize('when', ['after-open', 'mid-copy'])
def test_a_file_replaced_by_compaction_is_stored_old_and_whole(couchdb3,
                                                                when):
    if when == 'after-open':
        blob = _on_open(couchdb3, lambda: _compact(couchdb3))
    else:
        blob = _mid_copy(couchdb3, lambda: _compact(couchdb3))
    assert _member_data(blob) == [ORIGINAL]
    assert (couchdb3 / TARGET).read_bytes() == b'compacted' * 10


def test_a_file_deleted_before_open_is_skipped(couchdb3, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        blob = _on_open(couchdb3, lambda: os.unlink(couchdb3 / TARGET),
                        event='open')
    names = [name for name, _, _ in _members(blob)]
    assert 'data/' + TARGET not in names
    assert 'data/shards/80000000-ffffffff/db.1700000000.couch' in names
    assert TARGET in caplog.text and 'disappeared' in caplog.text


def test_a_directory_deleted_before_open_is_skipped(couchdb3, tmp_path):
    gone = 'shards/00000000-7fffffff'
    blob = _on_open(couchdb3, lambda: shutil.rmtree(couchdb3 / gone),
                    event='open', rel=gone)
    names = [name for name, _, _ in _members(blob)]
    assert not [n for n in names if n.startswith('data/' + gone)]
    assert 'data/zz-notes.txt' in names
    _run('tar', '-tf', '-', input=blob)


@pytest.mark.parametrize('when', ['after-open', 'mid-copy'])
def test_a_file_shrinking_is_copied_again(couchdb3, tmp_path, when, caplog):
    def truncate():
        os.truncate(couchdb3 / TARGET, 10 * KIB)

    with caplog.at_level(logging.WARNING):
        if when == 'after-open':
            state = []
            blob = _on_open(couchdb3, lambda: state or (
                state.append(1), truncate()))
        else:
            blob = _mid_copy(couchdb3, truncate)
    assert 'shrank' in caplog.text
    copies = _member_data(blob)
    assert len(copies) == 2 and copies[1] == ORIGINAL[:10 * KIB]
    assert len(copies[0]) == len(ORIGINAL)  # the abandoned copy, padded
    for extractor in ('safe_extract', 'gnu tar'):
        dest = tmp_path / extractor
        dest.mkdir()
        if extractor == 'gnu tar':
            _run('tar', '-xf', '-', '-C', str(dest), input=blob)
            dest = dest / 'data'
        else:
            safe_extract([blob], dest)
        assert (dest / TARGET).read_bytes() == ORIGINAL[:10 * KIB]


def test_a_file_that_keeps_shrinking_fails_the_backup(couchdb3):
    def halve():
        path = couchdb3 / TARGET
        os.truncate(path, path.stat().st_size // 2)

    with pytest.raises(archive.FileShrankError) as caught:
        _on_open(couchdb3, halve, retries=3)
    assert TARGET in str(caught.value) and '3 attempts' in str(caught.value)


# --- hostile archives --------------------------------------------------------

def _file(name, data=b'evil', mode=0o644):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def _dir(name, mode=0o755):
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


def _special(name, kind, linkname='', major=0, minor=0):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.devmajor, info.devminor = major, minor
    return info, None


def _members_only(*members, fmt=tarfile.GNU_FORMAT):
    """Headers and data of ``members`` as given, no end-of-archive."""
    out = b''
    for info, data in members:
        out += info.tobuf(fmt, 'utf-8', 'surrogateescape')
        if data:
            out += data + b'\0' * (-len(data) % 512)
    return out


def _crafted(*members, fmt=tarfile.GNU_FORMAT):
    return _members_only(*members, fmt=fmt) + b'\0' * 1024


def _pax_with_huge_header():
    info, data = _file('data/a')
    info.pax_headers = {'comment': 'x' * (2 * 1024 * 1024)}
    return _crafted((info, data), fmt=tarfile.PAX_FORMAT)


def _gnu_tar_sparse(fmt):
    """A sparse file archived by GNU tar (--sparse) in ``fmt``."""
    with tempfile.TemporaryDirectory() as scratch:
        data = os.path.join(scratch, 'data')
        os.mkdir(data)
        with open(os.path.join(data, 'holes.couch'), 'wb') as f:
            f.write(b'head')
            f.seek(1024 * 1024)
            f.write(b'tail')
        return _run('tar', '-C', scratch, '--sparse', '--format=' + fmt,
                    '-cf', '-', 'data').stdout


HOSTILE = {
    'sparse-gnu': lambda out: _gnu_tar_sparse('gnu'),
    'sparse-pax': lambda out: _gnu_tar_sparse('pax'),
    'dotdot': lambda out: _crafted(_file('../evil')),
    'dotdot-in-data': lambda out: _crafted(_file('data/../../evil')),
    'dotdot-to-sentinel': lambda out: _crafted(
        _file('data/../../outside/evil')),
    'absolute-etc': lambda out: _crafted(_file('/etc/evil-trove-test')),
    'absolute-sentinel': lambda out: _crafted(_file(str(out / 'evil'))),
    'symlink-then-write-through': lambda out: _crafted(
        _special('data/link', tarfile.SYMTYPE, str(out)),
        _file('data/link/evil')),
    'symlink-to-etc': lambda out: _crafted(
        _special('data/etc', tarfile.SYMTYPE, '/etc'),
        _file('data/etc/evil-trove-test')),
    'hardlink-passwd': lambda out: _crafted(
        _special('data/passwd', tarfile.LNKTYPE, '/etc/passwd')),
    'fifo': lambda out: _crafted(_special('data/fifo', tarfile.FIFOTYPE)),
    'char-device': lambda out: _crafted(
        _special('data/null', tarfile.CHRTYPE, major=1, minor=3)),
    'block-device': lambda out: _crafted(
        _special('data/sda', tarfile.BLKTYPE, major=8, minor=0)),
    'long-component': lambda out: _crafted(_file('data/' + 'a' * 300)),
    'long-path': lambda out: _crafted(_file('data/' + '/'.join(
        ['d' * 200] * 25))),
    'huge-pax-header': lambda out: _pax_with_huge_header(),
    'huge-extra': lambda out: _crafted(_file('config/big',
                                             b'x' * (1024 * 1024))),
    'legacy-outside-root': lambda out: _crafted(_file('/etc/passwd')),
    'legacy-sibling-of-root': lambda out: _crafted(
        _file('/var/lib/couchdbX/evil')),
}


@pytest.fixture
def sentinel(tmp_path):
    """box/dest, box/outside, and a check that nothing changed in box."""
    box = tmp_path / 'box'
    outside = box / 'outside'
    _write(outside / 'keep', b'keep')
    dest = box / 'dest'
    _write(dest / 'a.couch', b'old', mtime_ns=1_500_000_000_000_000_000)
    _write(dest / 'sub/b.couch', b'old b')
    os.utime(dest, ns=(1, 1_500_000_000_000_000_007))
    before = _snapshot(box)

    def unchanged(dest_too):
        after = _snapshot(box)
        if not dest_too:
            after = {k: v for k, v in after.items()
                     if k != 'dest' and not k.startswith('dest/')}
        assert after == {k: v for k, v in before.items() if k in after}
        assert set(after) == {k for k in before if dest_too or (
            k != 'dest' and not k.startswith('dest/'))}
        assert not os.path.lexists('/etc/evil-trove-test')
    return outside, dest, unchanged


def _legacy(case):
    return '/var/lib/couchdb' if case.startswith('legacy') else None


@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_hostile_archive_is_refused(sentinel, case):
    outside, dest, unchanged = sentinel
    blob = HOSTILE[case](outside)
    with pytest.raises(UnsafeArchiveError):
        safe_extract(_pieces(blob, 777), dest, legacy_root=_legacy(case))
    unchanged(dest_too=False)


@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_hostile_archive_leaves_a_staged_restore_unchanged(sentinel, case):
    outside, dest, unchanged = sentinel
    blob = _members_only(_file('data/a.couch', b'new'),
                         _file('data/c.couch', b'new c'))
    blob += HOSTILE[case](outside)
    with pytest.raises(UnsafeArchiveError):
        with staged_restore(dest) as stage:
            safe_extract([blob], stage.path, legacy_root=_legacy(case))
            stage.commit()
    unchanged(dest_too=True)


def test_absolute_names_are_refused_without_legacy_root(sentinel):
    outside, dest, unchanged = sentinel
    with pytest.raises(UnsafeArchiveError, match='/var/lib/couchdb/x.couch'):
        safe_extract([_crafted(_file('/var/lib/couchdb/x.couch'))], dest)
    unchanged(dest_too=False)


def test_a_symlink_already_in_dest_is_not_written_through(sentinel):
    outside, dest, unchanged = sentinel
    os.symlink(outside, dest / 'link')
    os.symlink(outside / 'keep', dest / 'keep.couch')
    for member in ('data/link/evil', 'data/link/sub/evil', 'data/keep.couch'):
        with pytest.raises(UnsafeArchiveError, match=member):
            safe_extract([_crafted(_file(member))], dest)
    with pytest.raises(UnsafeArchiveError):
        safe_extract([_crafted(_dir('data/link'))], dest)
    unchanged(dest_too=False)
    assert (outside / 'keep').read_bytes() == b'keep'


@pytest.mark.parametrize('cut', ['end-blocks', 'mid-data', 'mid-header',
                                 'garbage-header', 'empty'])
def test_damaged_or_truncated_streams_fail(tmp_path, cut):
    whole = _crafted(_file('data/a', b'a' * 5000), _file('data/b', b'b'))
    blob = {
        'end-blocks': whole[:512 * 13],     # members complete, no end
        'mid-data': whole[:512 * 5],
        'mid-header': whole[:512 * 11 + 100],
        'garbage-header': whole[:512 * 11] + b'\x01' * 512 + whole[512 * 12:],
        'empty': b'',
    }[cut]
    dest = tmp_path / 'dest'
    dest.mkdir()
    with pytest.raises(CorruptArchiveError):
        safe_extract([blob], dest)


# --- staged restore ----------------------------------------------------------

def test_staged_restore_swaps_the_contents_in(couchdb3, tmp_path):
    dest = tmp_path / 'dest'
    _write(dest / 'old.couch', b'old')
    _write(dest / 'shards/x/old.couch', b'old')
    _write(dest / 'lost+found/fsck', b'keep')
    with staged_restore(dest) as stage:
        safe_extract(write_tar(couchdb3), stage.path)
        stage.commit()
        with pytest.raises(archive.ArchiveError, match='already committed'):
            stage.commit()
    assert not [n for n in os.listdir(dest) if n.startswith('.trove-')]
    restored = _snapshot(dest)
    assert restored.pop('lost+found/fsck')[3] == hashlib.sha256(
        b'keep').hexdigest()
    del restored['lost+found']
    source = _snapshot(couchdb3)
    del source['.'], restored['.']
    assert restored == source


@pytest.mark.parametrize('how', ['error', 'no-commit'])
def test_staged_restore_without_commit_changes_nothing(sentinel, couchdb3,
                                                       how):
    outside, dest, unchanged = sentinel
    with pytest.raises(RuntimeError) if how == 'error' else (
            contextlib.nullcontext()):
        with staged_restore(dest) as stage:
            safe_extract(write_tar(couchdb3), stage.path)
            assert os.listdir(stage.path)
            if how == 'error':
                raise RuntimeError('authentication failed')
    unchanged(dest_too=True)


def test_a_failed_swap_is_undone(sentinel, couchdb3, monkeypatch):
    outside, dest, unchanged = sentinel
    real_rename, calls = os.rename, []

    def failing_rename(src, dst, **kwargs):
        calls.append(src)
        if len(calls) == 4:  # two old entries out, one new in, then fail
            raise OSError(28, 'No space left on device')
        return real_rename(src, dst, **kwargs)

    with pytest.raises(archive.ArchiveError, match='swap'):
        with staged_restore(dest) as stage:
            safe_extract(write_tar(couchdb3), stage.path)
            monkeypatch.setattr(os, 'rename', failing_rename)
            stage.commit()
    monkeypatch.undo()
    unchanged(dest_too=True)


def test_extract_module_errors_share_the_archive_root():
    assert issubclass(UnsafeArchiveError, archive.ArchiveError)
    assert issubclass(CorruptArchiveError, archive.ArchiveError)
    assert extract.MAX_EXTRA_SIZE == 1024 * 1024


def test_chunk_reader_reads_across_many_small_chunks_and_only_forward():
    reader = extract.ChunkReader([b'a'] * 5000 + [b'bcd'])
    assert reader.read(4000) == b'a' * 4000 and reader.tell() == 4000
    reader.seek(4999)
    assert reader.read(3) == b'abc'
    with pytest.raises(OSError):
        reader.seek(10)
    assert reader.read() == b'd' and reader.read(5) == b''
    whole = [b'x' * 10, b'y' * 10]
    reader = extract.ChunkReader(whole)
    assert [bytes(c) for c in reader.chunks(15)] == [b'x' * 10, b'y' * 5]
    assert reader.tell() == 15
