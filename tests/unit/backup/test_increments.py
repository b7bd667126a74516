"""Incremental archives: digests, delta members, chains applied in order.

Real files in tmp_path: a data dir is archived whole with its index, then
changed the ways CouchDB changes files (appends, a compaction's rename, a
new database, a deleted one), archived again on the first index, and the
two archives are extracted in order into a fresh directory, which must then
hold exactly the changed data dir.
"""

import hashlib
import io
import os
import tarfile

import pytest

from trove.guestagent.backup import archive, digest, extract, increments
from trove.guestagent.backup.extract import (
    DeltaBaseError, RestoredFilesError, UnsafeArchiveError, safe_extract)

KIB = 1024
MIB = 1024 * KIB


def _data(size, seed=1):
    block = hashlib.sha256(b'%d' % seed).digest()
    return (block * (size // len(block) + 1))[:size]


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _append(path, data):
    with open(path, 'ab') as f:
        f.write(data)


def _files(root):
    found = {}
    for top, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(top, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, root)] = f.read()
    return found


def _archive(data_dir, backup_id, parent_index=None, on_event=None,
             block=None):
    index = increments.Index(backup_id, parent_index and {
        'backup_id': parent_index['backup_id'], 'location': 'here',
        'checksum': 'x'}, parent_index)
    with digest.pool(2) as pool:
        blob = b''.join(archive.write_tar(
            data_dir, index=index, on_event=on_event, pool=pool,
            parent_files=None if parent_index is None
            else increments.parent_files(parent_index)))
    return blob, index.to_dict()


def _members(blob):
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {m.name: m for m in tar if m.isreg()}


def _members_all(blob):
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return [m for m in tar if m.isreg()]


def _restore_chain(links, dest):
    digests = {}
    for number, (blob, index) in enumerate(links):
        if number:
            extract.remove_deleted(dest, index['deleted'], digests)
        safe_extract([blob], dest, digests=digests)
    extract.verify_files(dest, increments.parent_files(links[-1][1]),
                         digests)


@pytest.fixture
def couchdb3(tmp_path):
    root = tmp_path / 'data'
    _write(root / '_dbs.couch', _data(40 * KIB, 1))
    _write(root / 'shards/00000000-7fffffff/a.1.couch', _data(300 * KIB, 2))
    _write(root / 'shards/00000000-7fffffff/b.1.couch', _data(100 * KIB, 3))
    _write(root / 'shards/00000000-7fffffff/gone.1.couch', _data(9 * KIB, 4))
    _write(root / '.shards/00000000-7fffffff/a.1_design/mrview/s.view',
           _data(50 * KIB, 5))
    _write(root / 'shards/80000000-ffffffff/c.1.couch', _data(64 * KIB, 6))
    return root


# --- digests ---------------------------------------------------------------

def _sha256(data):
    return hashlib.sha256(data).digest()


def test_digest_is_the_sha256_of_the_sha256s_of_16_mib_blocks(tmp_path):
    # The documented format (README, "Incremental backups"), which every
    # index of a chain holds: its parts hashed with hashlib alone.
    block = _data(16 * MIB)
    last = b'!'
    expected = {
        'grown.couch': hashlib.sha256(
            _sha256(block) + _sha256(last)).hexdigest(),
        'block.couch': hashlib.sha256(_sha256(block)).hexdigest(),
        'empty.couch': hashlib.sha256(b'').hexdigest(),     # no block
    }
    root = tmp_path / 'data'
    _write(root / 'grown.couch', block + last)
    _write(root / 'block.couch', block)
    _write(root / 'empty.couch', b'')

    _blob, index = _archive(root, 'full')

    assert index['block'] == 16 * MIB
    assert {rel: entry['sha256'] for rel, entry in index['files'].items()
            } == expected
    for rel, hexdigest in expected.items():
        fd = os.open(root / rel, os.O_RDONLY)
        try:
            read = digest.read_prefix(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        assert read.hexdigest() == hexdigest, rel


@pytest.mark.parametrize('size', [0, 1, 999, 1000, 1001, 5000, 12345])
def test_digest_fed_in_pieces_is_the_digest_read_in_parallel(tmp_path,
                                                              size):
    data = _data(size)
    whole = digest.Digest(block=1000)
    for start in range(0, size, 333):
        whole.update(data[start:start + 333])
    path = _write(tmp_path / 'f', data + b'tail')
    fd = os.open(path, os.O_RDONLY)
    try:
        with digest.pool(3) as pool:
            read = digest.read_prefix(fd, size, pool, block=1000)
    finally:
        os.close(fd)
    assert read.length == whole.length == size
    assert read.hexdigest() == whole.hexdigest()
    # Extending the prefix's digest gives the digest of the longer file.
    read.update(b'tail')
    longer = digest.Digest(block=1000)
    longer.update(data + b'tail')
    assert read.hexdigest() == longer.hexdigest()


def test_digest_changes_with_any_byte_and_with_length():
    data = bytearray(_data(3000))
    first = digest.Digest(block=1000)
    first.update(bytes(data))
    data[2500] ^= 1
    second = digest.Digest(block=1000)
    second.update(bytes(data))
    shorter = digest.Digest(block=1000)
    shorter.update(bytes(data[:2000]))
    assert len({first.hexdigest(), second.hexdigest(),
                shorter.hexdigest()}) == 3


def test_read_prefix_of_a_file_shorter_than_asked_raises(tmp_path):
    fd = os.open(_write(tmp_path / 'f', b'abc'), os.O_RDONLY)
    try:
        with pytest.raises(EOFError):
            digest.read_prefix(fd, 4)
    finally:
        os.close(fd)


# --- incremental archives --------------------------------------------------

def test_incremental_stores_appends_replacements_news_and_deletions(
        couchdb3, tmp_path):
    full, full_index = _archive(couchdb3, 'full')
    assert set(full_index['files']) == set(_files(couchdb3))
    assert all(e['stored'] == 'whole' for e in full_index['files'].values())
    shard = couchdb3 / 'shards/00000000-7fffffff'
    _append(shard / 'a.1.couch', b'appended' * 100)
    _append(couchdb3 / '_dbs.couch', b'map')
    _append(couchdb3 / '.shards/00000000-7fffffff/a.1_design/mrview/s.view',
            b'view')
    # Compaction: a new file, larger than the old, renamed over it.
    _write(shard / 'b.compact', _data(150 * KIB, 33))
    os.rename(shard / 'b.compact', shard / 'b.1.couch')
    (shard / 'gone.1.couch').unlink()
    _write(couchdb3 / 'shards/80000000-ffffffff/new.2.couch', _data(7000, 8))

    inc, inc_index = _archive(couchdb3, 'inc', full_index)

    members = _members(inc)
    stored = {rel: e['stored'] for rel, e in inc_index['files'].items()}
    assert stored == {
        '_dbs.couch': 'delta',
        'shards/00000000-7fffffff/a.1.couch': 'delta',
        'shards/00000000-7fffffff/b.1.couch': 'whole',
        'shards/80000000-ffffffff/c.1.couch': 'unchanged',
        'shards/80000000-ffffffff/new.2.couch': 'whole',
        '.shards/00000000-7fffffff/a.1_design/mrview/s.view': 'delta'}
    delta = members['delta/shards/00000000-7fffffff/a.1.couch']
    assert delta.size == 800
    assert delta.pax_headers[archive.BASE_SIZE] == str(300 * KIB)
    assert 'data/shards/80000000-ffffffff/c.1.couch' not in members
    assert inc_index['deleted'] == ['shards/00000000-7fffffff/gone.1.couch']
    assert inc_index['chain'] == ['full', 'inc']
    assert len(inc) < 250 * KIB  # the appends and the two whole files
    # CouchDB's order holds: view indexes, node databases, then shards.
    order = [name.split('/', 1)[1] for name in _members(inc)]
    assert order == [rel for rel in archive.backup_order(str(couchdb3))
                     if rel in order]
    assert order[0].startswith('.shards/') and order[1] == '_dbs.couch'
    assert order[-1].startswith('shards/')

    dest = tmp_path / 'restored'
    dest.mkdir()
    _restore_chain([(full, full_index), (inc, inc_index)], dest)
    assert _files(dest) == _files(couchdb3)


def test_a_chain_of_incrementals_restores_the_last_state(couchdb3, tmp_path):
    links = [_archive(couchdb3, 'b0')]
    for number in range(1, 5):
        _append(couchdb3 / 'shards/00000000-7fffffff/a.1.couch',
                _data(10 * KIB * number, number))
        if number == 2:
            (couchdb3 / '.shards').rename(tmp_path / 'moved')  # views gone
        if number == 3:
            _write(couchdb3 / '.shards/00000000-7fffffff/x', b'back')
        links.append(_archive(couchdb3, 'b%d' % number, links[-1][1]))
    assert links[-1][1]['chain'] == ['b0', 'b1', 'b2', 'b3', 'b4']
    dest = tmp_path / 'restored'
    dest.mkdir()
    _restore_chain(links, dest)
    assert _files(dest) == _files(couchdb3)


def test_a_file_rewritten_in_place_with_the_same_size_is_stored_whole(
        couchdb3):
    _full, full_index = _archive(couchdb3, 'full')
    path = couchdb3 / 'shards/00000000-7fffffff/a.1.couch'
    data = bytearray(path.read_bytes())
    data[150 * KIB] ^= 0xff   # one byte in the middle, in place
    path.write_bytes(bytes(data) + b'more')
    _inc, inc_index = _archive(couchdb3, 'inc', full_index)
    assert inc_index['files'][
        'shards/00000000-7fffffff/a.1.couch']['stored'] == 'whole'


def test_a_file_growing_during_the_incremental_keeps_what_it_had(couchdb3,
                                                                 tmp_path):
    full, full_index = _archive(couchdb3, 'full')
    rel = 'shards/00000000-7fffffff/a.1.couch'
    _append(couchdb3 / rel, b'before')
    at_start = (couchdb3 / rel).read_bytes()

    def grow(event, name):
        if event == 'opened' and name == rel:
            _append(couchdb3 / rel, b'written during the backup')

    inc, inc_index = _archive(couchdb3, 'inc', full_index, on_event=grow)
    assert inc_index['files'][rel]['size'] == len(at_start)
    dest = tmp_path / 'restored'
    dest.mkdir()
    _restore_chain([(full, full_index), (inc, inc_index)], dest)
    assert (dest / rel).read_bytes() == at_start


def test_a_file_shrinking_during_its_delta_is_stored_again_whole(couchdb3,
                                                                 tmp_path):
    full, full_index = _archive(couchdb3, 'full')
    rel = 'shards/00000000-7fffffff/a.1.couch'
    _append(couchdb3 / rel, _data(200 * KIB, 9))
    done = []

    def shrink(event, name):
        # Truncated once it is open, before its delta is read.
        if event == 'opened' and name == rel and not done:
            done.append(1)
            os.truncate(couchdb3 / rel, 400 * KIB)

    inc, inc_index = _archive(couchdb3, 'inc', full_index, on_event=shrink)
    members = [m for m in _members_all(inc) if m.name.endswith(rel)]
    assert [m.name.split('/', 1)[0] for m in members] == ['delta', 'data']
    assert inc_index['files'][rel]['stored'] == 'whole'
    dest = tmp_path / 'restored'
    dest.mkdir()
    _restore_chain([(full, full_index), (inc, inc_index)], dest)
    assert _files(dest) == _files(couchdb3)


# --- applying deltas -------------------------------------------------------

def test_a_delta_on_another_base_is_refused(couchdb3, tmp_path):
    full, full_index = _archive(couchdb3, 'full')
    _append(couchdb3 / '_dbs.couch', b'more')
    inc, inc_index = _archive(couchdb3, 'inc', full_index)
    dest = tmp_path / 'restored'
    dest.mkdir()
    digests = {}
    safe_extract([full], dest, digests=digests)
    # The file the delta extends is not the one its parent held.
    other = digest.Digest()
    other.update(b'x' * (40 * KIB))
    digests['_dbs.couch'] = other
    with pytest.raises(DeltaBaseError, match='builds on 40960 bytes'):
        safe_extract([inc], dest, digests=digests)


def test_a_delta_without_its_base_is_refused(couchdb3, tmp_path):
    _full, full_index = _archive(couchdb3, 'full')
    _append(couchdb3 / '_dbs.couch', b'more')
    inc, _inc_index = _archive(couchdb3, 'inc', full_index)
    dest = tmp_path / 'restored'
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match='without the backups'):
        safe_extract([inc], dest)
    with pytest.raises(DeltaBaseError, match='no earlier backup'):
        safe_extract([inc], dest, digests={})


def test_restored_files_are_checked_against_the_last_index(couchdb3,
                                                           tmp_path):
    full, full_index = _archive(couchdb3, 'full')
    dest = tmp_path / 'restored'
    dest.mkdir()
    digests = {}
    safe_extract([full], dest, digests=digests)
    expected = increments.parent_files(full_index)
    extract.verify_files(dest, expected, digests)
    _write(dest / 'stray', b'?')
    (dest / '_dbs.couch').unlink()
    with pytest.raises(RestoredFilesError) as caught:
        extract.verify_files(dest, expected, digests)
    assert '_dbs.couch is missing' in str(caught.value)
    assert 'stray was not in the backup' in str(caught.value)


def test_deletions_never_leave_the_destination(tmp_path):
    dest = tmp_path / 'restored'
    dest.mkdir()
    outside = _write(tmp_path / 'outside', b'keep')
    os.symlink(tmp_path, dest / 'link')
    with pytest.raises(UnsafeArchiveError):
        extract.remove_deleted(dest, ['../outside'], {})
    with pytest.raises(RestoredFilesError, match='symlink'):
        extract.remove_deleted(dest, ['link/outside'], {})  # not followed
    assert outside.read_bytes() == b'keep'
