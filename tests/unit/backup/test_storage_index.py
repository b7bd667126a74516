"""The local storage keeps a backup's file index beside it, verified.

Real files in tmp_path: a backup is saved with and without an index, read
back, damaged in the ways a disk or a hand can damage it, and deleted.
What is checked is what a caller gets: the bytes, the index, the
metadata, or the error that says the backup is gone or damaged.
"""

import hashlib
import json
import os

import pytest

from trove.common import exception
from trove.guestagent.backup.storage import base
from trove.guestagent.backup.storage import local

DATA = [b'first chunk ', b'second chunk ', b'third']
INDEX = b'{"files": {"shards/a.couch": "digest"}}'


def _md5(data):
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def store(conf, tmp_path):
    conf.config(backup_local_dir=str(tmp_path / 'store'))
    return local.LocalStorage()


def _dir(store):
    return store.root


def _files(store):
    return sorted(os.listdir(_dir(store))) if os.path.isdir(
        _dir(store)) else []


def _path(store, name):
    return os.path.join(_dir(store), name)


def _flip(path, offset=0):
    with open(path, 'r+b') as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def test_round_trip_without_index(store):
    saved = store.save('full', DATA, metadata={'datastore': 'couchdb'})
    data = b''.join(DATA)
    assert saved.size == len(data)
    assert saved.checksum == _md5(data)
    assert b''.join(store.load(saved.location, saved.checksum)) == data
    assert store.load_index(saved.location, saved.checksum) is None
    assert store.metadata(saved.location) == {'datastore': 'couchdb'}
    assert _files(store) == ['full', 'full.meta']


def test_round_trip_with_index(store):
    calls = []

    def index():
        calls.append(1)
        return INDEX

    saved = store.save('incr', DATA, index=index)
    data = b''.join(DATA)
    assert calls == [1]
    assert saved.size == len(data)
    assert saved.checksum == _md5((_md5(data) + _md5(INDEX)).encode())
    # The data alone: the index is not part of what load yields.
    assert b''.join(store.load(saved.location, saved.checksum)) == data
    assert store.load_index(saved.location, saved.checksum) == INDEX
    assert _files(store) == ['incr', 'incr.index', 'incr.meta']


def test_checksum_is_that_of_a_two_segment_swift_object(store):
    saved = store.save('incr', DATA, index=lambda: INDEX)
    data = b''.join(DATA)
    assert saved.checksum == base.composite_checksum(
        [_md5(data), _md5(INDEX)])
    with open(_path(store, 'incr.meta')) as f:
        assert json.load(f)['parts'] == {'data': _md5(data),
                                         'index': _md5(INDEX)}


@pytest.mark.parametrize('with_index', [False, True])
def test_load_refuses_a_flipped_byte_in_the_data(store, with_index):
    saved = store.save('b', DATA,
                       index=(lambda: INDEX) if with_index else None)
    _flip(_path(store, 'b'), 5)
    with pytest.raises(base.ChecksumMismatch):
        b''.join(store.load(saved.location, saved.checksum))


@pytest.mark.parametrize('with_index', [False, True])
def test_load_refuses_the_checksum_of_another_backup(store, with_index):
    index = (lambda: INDEX) if with_index else None
    one = store.save('one', DATA, index=index)
    other = store.save('other', [b'other data'], index=index)
    with pytest.raises(base.ChecksumMismatch):
        b''.join(store.load(one.location, other.checksum))
    if with_index:
        with pytest.raises(base.ChecksumMismatch):
            store.load_index(one.location, other.checksum)


def test_load_index_does_not_read_the_data(store):
    saved = store.save('incr', DATA, index=lambda: INDEX)
    _flip(_path(store, 'incr'), 3)
    assert store.load_index(saved.location, saved.checksum) == INDEX
    # The data file is not even opened: a directory in its place (which
    # open() refuses) changes nothing for the index.
    os.unlink(_path(store, 'incr'))
    os.mkdir(_path(store, 'incr'))
    assert store.load_index(saved.location, saved.checksum) == INDEX
    with pytest.raises(OSError):
        b''.join(store.load(saved.location, saved.checksum))


def test_load_index_refuses_a_damaged_index(store):
    saved = store.save('incr', DATA, index=lambda: INDEX)
    _flip(_path(store, 'incr.index'), 10)
    with pytest.raises(base.ChecksumMismatch):
        store.load_index(saved.location, saved.checksum)


def test_load_index_refuses_a_missing_index_file(store):
    saved = store.save('incr', DATA, index=lambda: INDEX)
    os.unlink(_path(store, 'incr.index'))
    with pytest.raises(base.ChecksumMismatch):
        store.load_index(saved.location, saved.checksum)


def test_load_index_refuses_a_meta_file_recording_another_index(store):
    # Index and .meta rewritten together, consistent with each other: the
    # backup's checksum, kept elsewhere (Trove's database), still tells.
    saved = store.save('incr', DATA, index=lambda: INDEX)
    forged = b'{"files": {}}'
    with open(_path(store, 'incr.index'), 'wb') as f:
        f.write(forged)
    meta_path = _path(store, 'incr.meta')
    with open(meta_path) as f:
        meta = json.load(f)
    meta['parts']['index'] = _md5(forged)
    with open(meta_path, 'w') as f:
        json.dump(meta, f)
    with pytest.raises(base.ChecksumMismatch):
        store.load_index(saved.location, saved.checksum)
    with pytest.raises(base.ChecksumMismatch):
        b''.join(store.load(saved.location, saved.checksum))


def test_a_damaged_meta_file_is_a_checksum_mismatch(store):
    saved = store.save('incr', DATA, index=lambda: INDEX)
    with open(_path(store, 'incr.meta'), 'wb') as f:
        f.write(b'{"parts": ')
    with pytest.raises(base.ChecksumMismatch):
        store.load_index(saved.location, saved.checksum)
    with pytest.raises(base.ChecksumMismatch):
        store.metadata(saved.location)


def test_an_index_without_its_meta_file_is_not_taken_for_none(store):
    # A backup that has an index but lost the .meta recording it must not
    # look like an older backup without one.
    saved = store.save('incr', DATA, index=lambda: INDEX)
    os.unlink(_path(store, 'incr.meta'))
    with pytest.raises(base.ChecksumMismatch):
        store.load_index(saved.location, saved.checksum)
    with pytest.raises(base.ChecksumMismatch):
        b''.join(store.load(saved.location, saved.checksum))


def test_missing_backup_is_backup_not_found(store):
    saved = store.save('gone', DATA, index=lambda: INDEX)
    store.delete(saved.location)
    with pytest.raises(base.BackupNotFound):
        b''.join(store.load(saved.location, saved.checksum))
    with pytest.raises(base.BackupNotFound):
        store.load_index(saved.location, saved.checksum)
    with pytest.raises(base.BackupNotFound):
        store.metadata(saved.location)
    with pytest.raises(base.BackupNotFound):
        store.delete(saved.location)


def test_metadata_keys_are_lower_case_with_underscores(store):
    saved = store.save('incr', DATA, index=lambda: INDEX, metadata={
        'parent_location': 'file:///x/parent', 'Parent-Checksum': 'abc',
        'datastore': 'couchdb', 'size': 12})
    assert store.metadata(saved.location) == {
        'parent_location': 'file:///x/parent', 'parent_checksum': 'abc',
        'datastore': 'couchdb', 'size': '12'}


@pytest.mark.parametrize('with_index', [False, True])
def test_delete_removes_every_file(store, with_index):
    saved = store.save('b', DATA,
                       index=(lambda: INDEX) if with_index else None)
    kept = store.save('kept', DATA, index=lambda: INDEX)
    store.delete(saved.location)
    assert _files(store) == ['kept', 'kept.index', 'kept.meta']
    assert b''.join(store.load(kept.location, kept.checksum)) == b''.join(
        DATA)


def _broken_stream():
    yield b'some bytes'
    raise exception.TroveError('tar failed')


def _broken_index():
    raise exception.TroveError('index failed')


@pytest.mark.parametrize('chunks,index,error', [
    (_broken_stream, lambda: INDEX, exception.TroveError),
    (lambda: DATA, _broken_index, exception.TroveError),
    # Not bytes: fails once the index file is open.
    (lambda: DATA, lambda: 'not bytes', TypeError),
], ids=['stream', 'index', 'index-not-bytes'])
def test_failed_save_leaves_no_file(store, chunks, index, error):
    store.save('kept', DATA, index=lambda: INDEX)
    with pytest.raises(error):
        store.save('failed', chunks(), index=index)
    assert _files(store) == ['kept', 'kept.index', 'kept.meta']
    with pytest.raises(base.BackupNotFound):
        store.metadata(local.SCHEME + _path(store, 'failed'))


def test_older_backup_without_meta_file(store):
    # Backups of older agents: the data file alone, checksum its MD5.
    data = b'an older backup'
    os.makedirs(_dir(store))
    with open(_path(store, 'old'), 'wb') as f:
        f.write(data)
    location = local.SCHEME + _path(store, 'old')
    assert store.metadata(location) == {}
    assert store.load_index(location, _md5(data)) is None
    assert b''.join(store.load(location, _md5(data))) == data
    with pytest.raises(base.ChecksumMismatch):
        b''.join(store.load(location, '0' * 32))
    store.delete(location)
    assert _files(store) == []
