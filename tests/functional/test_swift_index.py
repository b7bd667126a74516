"""A backup's file index in a real Swift: the SLO's last segment, verified.

The backups here are plain bytes (no CouchDB, no tar): what is checked is
the layout in Swift (segments, manifest, headers), that the index is read
alone and checked against the backup's checksum, that the data read back
is the data alone, and that failures and deletes leave nothing behind.
"""

import hashlib
import json
import os

from oslo_config import cfg
import pytest

import trove.common.cfg  # noqa: F401  (registers the options)
from trove.common import context as trove_context
from trove.common import exception
from trove.guestagent.backup.storage import base
from trove.guestagent.backup.storage import swift as swift_storage

CONTAINER = 'index_tests'
SEGMENT = 64 * 1024
INDEX = b'{"files": {"shards/a.couch": "digest"}, "chain": ["b-1"]}'


@pytest.fixture
def storage(swift):
    token, storage_url = swift.token_and_storage_url()
    cfg.CONF.set_override('swift_url', storage_url[:-len('test')])
    cfg.CONF.set_override('backup_swift_container', CONTAINER)
    cfg.CONF.set_override('backup_segment_max_size', SEGMENT)
    yield swift_storage.SwiftStorage(trove_context.TroveContext(
        auth_token=token, project_id='test'))
    cfg.CONF.reset()


@pytest.fixture
def data():
    return os.urandom(3 * SEGMENT + 1000)


def _chunks(data, size=10_000):
    return [data[i:i + size] for i in range(0, len(data), size)]


def _md5(data):
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _names(storage, prefix):
    """Every object of the container whose name starts with ``prefix``."""
    _, listing = storage._connection().get_container(storage.container)
    return sorted(o['name'] for o in listing
                  if o['name'].startswith(prefix))


def _manifest(storage, name):
    _, body = storage._connection().get_object(
        storage.container, name, query_string='multipart-manifest=get')
    return json.loads(body)


def test_index_is_the_last_segment_and_covered_by_the_etag(storage, data):
    saved = storage.save('layout', _chunks(data), index=lambda: INDEX)
    manifest = _manifest(storage, 'layout')
    names = [s['name'] for s in manifest]
    assert names == ['/%s/layout_%08d' % (CONTAINER, n)
                     for n in range(4)] + ['/%s/layout_index' % CONTAINER]
    assert manifest[-1]['hash'] == _md5(INDEX)
    assert manifest[-1]['bytes'] == len(INDEX)
    headers = storage._connection().head_object(storage.container, 'layout')
    assert headers['etag'].strip('"') == saved.checksum
    assert saved.checksum == base.composite_checksum(
        [_md5(data[i:i + SEGMENT]) for i in range(0, len(data), SEGMENT)]
        + [_md5(INDEX)])
    assert saved.size == len(data) + len(INDEX)
    assert _names(storage, 'layout') == ['layout'] + [
        'layout_%08d' % n for n in range(4)] + ['layout_index']


def test_load_yields_the_data_alone_verified(storage, data):
    saved = storage.save('data-alone', _chunks(data), index=lambda: INDEX)
    assert b''.join(storage.load(saved.location, saved.checksum)) == data
    with pytest.raises(base.ChecksumMismatch):
        b''.join(storage.load(saved.location, '0' * 32))


def test_load_refuses_a_replaced_data_segment(storage, data):
    saved = storage.save('data-damaged', _chunks(data), index=lambda: INDEX)
    damaged = bytearray(data[SEGMENT:2 * SEGMENT])
    damaged[100] ^= 0x01
    storage._connection().put_object(storage.container,
                                     'data-damaged_00000001', bytes(damaged))
    with pytest.raises(base.ChecksumMismatch):
        b''.join(storage.load(saved.location, saved.checksum))


def test_load_index_reads_the_index_alone(storage, data):
    saved = storage.save('index-alone', _chunks(data), index=lambda: INDEX)
    assert storage.load_index(saved.location, saved.checksum) == INDEX
    # The data segments are not read: with one of them gone, the index
    # is still there, verified, while the data cannot be loaded.
    storage._connection().delete_object(storage.container,
                                        'index-alone_00000002')
    assert storage.load_index(saved.location, saved.checksum) == INDEX
    with pytest.raises(base.ChecksumMismatch):
        b''.join(storage.load(saved.location, saved.checksum))


def test_load_index_refuses_a_replaced_index_segment(storage, data):
    saved = storage.save('index-damaged', _chunks(data), index=lambda: INDEX)
    storage._connection().put_object(storage.container,
                                     'index-damaged_index',
                                     b'{"files": {}, "chain": ["b-1"]}')
    with pytest.raises(base.ChecksumMismatch):
        storage.load_index(saved.location, saved.checksum)


def test_load_index_refuses_a_deleted_index_segment(storage, data):
    saved = storage.save('index-gone', _chunks(data), index=lambda: INDEX)
    storage._connection().delete_object(storage.container,
                                        'index-gone_index')
    with pytest.raises(base.ChecksumMismatch):
        storage.load_index(saved.location, saved.checksum)


def test_load_index_refuses_the_checksum_of_another_backup(storage, data):
    saved = storage.save('index-one', _chunks(data), index=lambda: INDEX)
    other = storage.save('index-other', [b'other'], index=lambda: INDEX)
    with pytest.raises(base.ChecksumMismatch):
        storage.load_index(saved.location, other.checksum)
    with pytest.raises(base.ChecksumMismatch):
        storage.load_index(saved.location, '0' * 32)


def test_metadata_round_trip(storage, data):
    saved = storage.save('meta', _chunks(data), index=lambda: INDEX,
                         metadata={'parent_location': 'http://s/c/parent',
                                   'parent_checksum': 'abc',
                                   'datastore': 'couchdb'})
    headers = storage._connection().head_object(storage.container, 'meta')
    assert headers['x-object-meta-parent-location'] == 'http://s/c/parent'
    assert storage.metadata(saved.location) == {
        'parent_location': 'http://s/c/parent', 'parent_checksum': 'abc',
        'datastore': 'couchdb'}


def _broken_stream(data):
    yield data[:2 * SEGMENT + 10]
    raise exception.TroveError('tar failed')


def _broken_index():
    raise exception.TroveError('index failed')


@pytest.mark.parametrize('name,stream,index', [
    ('failed-stream', _broken_stream, lambda: INDEX),
    ('failed-index', _chunks, _broken_index),
])
def test_failed_save_leaves_nothing(storage, data, name, stream, index):
    storage.save(name + '-kept', _chunks(data), index=lambda: INDEX)
    with pytest.raises(exception.TroveError):
        storage.save(name, stream(data), index=index)
    assert _names(storage, name) == [name + '-kept'] + [
        '%s-kept_%08d' % (name, n) for n in range(4)] + [
        name + '-kept_index']
    with pytest.raises(base.BackupNotFound):
        storage.metadata(storage.location(name))


def test_delete_removes_the_index_segment_too(storage, data):
    saved = storage.save('deleted', _chunks(data), index=lambda: INDEX)
    assert 'deleted_index' in _names(storage, 'deleted')
    storage.delete(saved.location)
    assert _names(storage, 'deleted') == []


def test_missing_object_is_backup_not_found(storage):
    location = storage.location('never-made')
    with pytest.raises(base.BackupNotFound):
        b''.join(storage.load(location, '0' * 32))
    with pytest.raises(base.BackupNotFound):
        storage.load_index(location, '0' * 32)
    with pytest.raises(base.BackupNotFound):
        storage.metadata(location)
    with pytest.raises(base.BackupNotFound):
        storage.delete(location)


def test_plain_object_has_no_index(storage):
    # Upstream Trove copied a lone segment to the final name: a plain
    # object, its checksum its MD5.
    data = b'an upstream backup'
    conn = storage._connection()
    conn.put_container(storage.container)
    conn.put_object(storage.container, 'plain', data,
                    headers={'X-Object-Meta-Datastore': 'couchdb'})
    location = storage.location('plain')
    assert storage.load_index(location, _md5(data)) is None
    assert b''.join(storage.load(location, _md5(data))) == data
    assert storage.metadata(location) == {'datastore': 'couchdb'}
    storage.delete(location)
    assert _names(storage, 'plain') == []


def test_slo_without_index_segment_has_no_index(storage, data):
    # Backups of older agents: an SLO of data segments only.
    saved = storage.save('no-index', _chunks(data))
    assert [s['name'] for s in _manifest(storage, 'no-index')] == [
        '/%s/no-index_%08d' % (CONTAINER, n) for n in range(4)]
    assert storage.load_index(saved.location, saved.checksum) is None
    assert b''.join(storage.load(saved.location, saved.checksum)) == data
