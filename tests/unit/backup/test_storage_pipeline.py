"""Stage plumbing, the local storage, strategy lookup and backup reporting."""

import hashlib
import json
import os
import threading
import time

import oslo_messaging as messaging
import pytest

from integration import conductor
from trove.common import context as trove_context
from trove.common import exception
from trove.guestagent.backup import pipeline
from trove.guestagent.backup import storage
from trove.guestagent.backup.storage import base
from trove.guestagent.backup.storage import local
from trove.guestagent.backup.storage import swift
from trove.guestagent.datastore import backups
from trove.guestagent import strategies
from trove.guestagent.strategies.backup import base as backup_base
from trove import rpc


@pytest.mark.parametrize('sizes,limit', [
    ([], 3), ([7], 3), ([2, 0, 4, 1], 3), ([3], 3), ([6], 3),
    ([1] * 10, 4), ([5, 5, 5], 5)])
def test_split_cuts_exact_pieces(sizes, limit):
    data = [bytes([65 + i]) * n for i, n in enumerate(sizes)]
    pieces = [b''.join(p) for p in base.split(data, limit)]
    assert b''.join(pieces) == b''.join(data)
    assert all(0 < len(p) <= limit for p in pieces)
    assert all(len(p) == limit for p in pieces[:-1])


def test_threaded_keeps_order_and_bounds_the_lead():
    produced = []

    def source():
        for i in range(100):
            produced.append(i)
            yield bytes([i])

    stream = pipeline.threaded(source(), maxsize=2)
    assert next(stream) == b'\x00'
    time.sleep(0.2)
    assert len(produced) <= 5
    assert b''.join(stream) == bytes(range(1, 100))


def test_threaded_hands_the_producers_error_to_the_consumer():
    def source():
        yield b'a'
        raise exception.TroveError('disk gone')

    with pytest.raises(exception.TroveError, match='disk gone'):
        list(pipeline.threaded(source()))


def test_threaded_stops_the_producer_when_the_consumer_stops():
    closed = threading.Event()

    def source():
        try:
            while True:
                yield b'x'
        finally:
            closed.set()

    stream = pipeline.threaded(source(), maxsize=1)
    next(stream)
    stream.close()
    assert closed.wait(5)


def test_local_storage_round_trip_and_checksum(conf, tmp_path):
    conf.config(backup_local_dir=str(tmp_path / 'store'))
    store = local.LocalStorage()
    saved = store.save('b1.tar.gz.enc', [b'abc', b'def'])
    assert saved.size == 6 and len(saved.checksum) == 32
    assert b''.join(store.load(saved.location, saved.checksum)) == b'abcdef'
    with pytest.raises(base.ChecksumMismatch):
        b''.join(store.load(saved.location, '0' * 32))
    store.delete(saved.location)
    assert os.listdir(tmp_path / 'store' / 'database_backups') == []


def test_local_storage_refuses_locations_elsewhere(conf, tmp_path):
    conf.config(backup_local_dir=str(tmp_path / 'store'))
    store = local.LocalStorage()
    for location in ('file:///etc/passwd', 'http://x/y/z',
                     'file://%s/store/database_backups/../../x' % tmp_path):
        with pytest.raises(base.StorageError):
            list(store.load(location))


def test_failed_save_leaves_no_partial_file(conf, tmp_path):
    conf.config(backup_local_dir=str(tmp_path / 'store'))

    def broken():
        yield b'abc'
        raise exception.TroveError('tar failed')

    with pytest.raises(exception.TroveError):
        local.LocalStorage().save('b2', broken())
    assert os.listdir(tmp_path / 'store' / 'database_backups') == []


def test_strategies_found_by_upstream_names_and_entry_points(conf):
    from trove.common import cfg
    backup = strategies.load('backup', 'CouchDBBackup',
                             cfg.CONF.couchdb.backup_namespace)
    restore = strategies.load('restore', 'CouchDBBackup',
                              cfg.CONF.couchdb.restore_namespace)
    assert backup.backup_type == 'CouchDBBackup'
    assert restore.__name__ == 'CouchDBRestore'
    with pytest.raises(exception.BadRequest, match='NoSuch'):
        strategies.load('restore', 'NoSuchBackup',
                        cfg.CONF.couchdb.restore_namespace)


class MemorySwift:
    """The calls SwiftStorage.save makes of a swiftclient Connection, on
    the objects of one in-memory Swift (one per test)."""

    def __init__(self):
        self.objects = {}
        self.urls = set()

    def connect(self, preauthurl, preauthtoken, **_options):
        self.urls.add(preauthurl)
        return self

    def put_container(self, container, headers=None):
        pass

    def put_object(self, container, name, contents, headers=None,
                   query_string=None):
        data = (contents.encode() if isinstance(contents, str)
                else b''.join(contents))
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if query_string == 'multipart-manifest=put':
            etag = hashlib.md5(''.join(s['etag'] for s in json.loads(
                data)).encode(), usedforsecurity=False).hexdigest()
        self.objects[(container, name)] = (data, etag)
        return etag

    def head_object(self, container, name):
        return {'etag': '"%s"' % self.objects[(container, name)][1]}


def _swift_backup(conf, monkeypatch, strategy):
    memory = MemorySwift()
    monkeypatch.setattr(swift.swift_client, 'Connection', memory.connect)
    conf.config(storage_strategy=strategy,
                swift_url='http://swift.test:8080/v1/AUTH_')
    ctx = trove_context.TroveContext(auth_token='t', project_id='p1')
    saved = storage.get_storage(ctx).save('b-1.gz.enc', [b'abc', b'def'])
    return memory, saved


@pytest.mark.parametrize('strategy', ['swift', 'SwiftStorage'])
def test_troves_old_storage_strategy_stores_in_swift(conf, monkeypatch,
                                                     strategy):
    memory, saved = _swift_backup(conf, monkeypatch, strategy)
    assert storage.strategy() == 'swift'
    assert memory.urls == {'http://swift.test:8080/v1/AUTH_p1'}
    assert saved.location == ('http://swift.test:8080/v1/AUTH_p1/'
                              'database_backups/b-1.gz.enc')
    assert memory.objects[('database_backups', 'b-1.gz.enc_00000000')][0] \
        == b'abcdef'
    assert saved.checksum == hashlib.md5(hashlib.md5(
        b'abcdef').hexdigest().encode()).hexdigest()


def test_swiftstorage_and_swift_make_the_same_backup(conf, monkeypatch):
    with_old, saved_old = _swift_backup(conf, monkeypatch, 'SwiftStorage')
    with_new, saved_new = _swift_backup(conf, monkeypatch, 'swift')
    assert saved_old == saved_new
    assert with_old.objects == with_new.objects


@pytest.fixture
def listener(conf):
    conf.config(instance_rpc_encr_key='k')
    rpc.TRANSPORT = messaging.get_rpc_transport(rpc.CONF, url='fake:///')
    listen = conductor.ConductorListener(rpc.TRANSPORT)
    listen.keys['g-1'] = 'k'
    listen.start()
    yield listen
    listen.stop()
    rpc.cleanup()


class _Runner(backup_base.BackupRunner):
    backup_type = 'TestBackup'
    fail = None

    def data_size(self):
        return 3 * 1024 ** 3

    def run(self):
        if self.fail:
            raise exception.TroveError(self.fail)
        return backup_base.BackupResult('swift://c/o', 'a' * 32, 1024 ** 3,
                                        note='2 databases')


def _updates(listener, count):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = listener.select('update_backup', 'g-1')
        if len(found) >= count:
            return [m.kwargs for m in found]
        time.sleep(0.02)
    raise AssertionError(listener.select('update_backup', 'g-1'))


def test_backup_reports_building_then_completed(listener, conf, tmp_path):
    conf.config(storage_strategy='local', backup_local_dir=str(tmp_path))
    ctx = trove_context.TroveContext()
    backups.create_backup(ctx, {'id': 'b-1'}, None, _Runner)
    building, completed = _updates(listener, 2)
    assert building['state'] == 'BUILDING' and building['size'] == 3.0
    assert completed['state'] == 'COMPLETED' and completed['success']
    assert completed['checksum'] == 'a' * 32
    assert completed['backup_type'] == 'TestBackup'
    assert completed['sent'] > building['sent']


def test_failed_backup_reports_failed_with_the_reason(listener, conf,
                                                     tmp_path):
    conf.config(storage_strategy='local', backup_local_dir=str(tmp_path))

    class Failing(_Runner):
        fail = 'CouchDB went away'

    with pytest.raises(exception.TroveError):
        backups.create_backup(trove_context.TroveContext(), {'id': 'b-2'},
                              None, Failing)
    failed = _updates(listener, 2)[-1]
    assert failed['state'] == 'FAILED' and failed['success'] is False
    assert 'CouchDB went away' in failed['note']
    assert not [n for n in os.listdir(conf_dir()) if 'b-2' in n]


def test_interrupted_backup_is_reported_failed_at_start(listener, conf):
    os.makedirs(conf_dir(), exist_ok=True)
    with open(os.path.join(conf_dir(), 'backup-running-b-3.json'),
              'w') as f:
        f.write('{}')
    backups.report_interrupted(trove_context.TroveContext())
    (failed,) = _updates(listener, 1)
    assert failed['backup_id'] == 'b-3' and failed['state'] == 'FAILED'
    assert 'interrupted' in failed['note']
    assert os.listdir(conf_dir()) == []


def conf_dir():
    from trove.common import cfg
    return cfg.CONF.guest_state_dir
