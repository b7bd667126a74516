"""The backup stream through a real Swift and back, byte for byte.

No CouchDB here: the data directory is a tree of files; what is checked is
that the object stored in Swift (a Static Large Object of many small
segments, or of one) restores every file identically, and that
Swift's failures and damaged objects end with clear errors.
"""

import hashlib
import json
import os
import threading

from oslo_config import cfg
import pytest

from trove.common import context as trove_context
from trove.guestagent.backup import compression
from trove.guestagent.backup import encryption
from trove.guestagent.backup import extract
from trove.guestagent.backup import pipeline
from trove.guestagent.backup.storage import base as storage_base
from trove.guestagent.backup.storage import swift as swift_storage
from trove.guestagent.strategies.backup.experimental import couchdb_impl

KEY = 'a-test-backup-key-of-some-length'


@pytest.fixture
def conf(swift, tmp_path):
    token, storage_url = swift.token_and_storage_url()
    cfg.CONF.set_override('swift_url', storage_url[:-len('test')])
    cfg.CONF.set_override('backup_aes_cbc_key', KEY)
    cfg.CONF.set_override('backup_swift_container', 'pipeline_tests')
    yield token
    cfg.CONF.reset()


def _context(token):
    return trove_context.TroveContext(auth_token=token, project_id='test')


def _tree(root, files=40, size=200_000):
    root.mkdir()
    for i in range(files):
        sub = root / ('db%02d' % (i % 5))
        sub.mkdir(exist_ok=True)
        body = (b'{"_id": "%d", "value": "%s"}\n' % (i, b'x' * (i % 97)))
        (sub / ('f%03d.couch' % i)).write_bytes(
            (body * (size // len(body)))[:size] + os.urandom(i * 100))
    return root


def _digests(root):
    out = {}
    for base, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(
                    f.read()).hexdigest()
    return out


class _Backup(couchdb_impl.CouchDBBackup):
    """The CouchDB strategy's stream over a plain directory."""

    def __init__(self, data_dir):
        super().__init__(None, {'id': 'b-1'}, None, None)
        self._data_dir = str(data_dir)

    @property
    def data_dir(self):
        return self._data_dir


def _restore(storage, saved, dest):
    chunks = storage.load(saved.location, saved.checksum)
    chunks = compression.gzip_decompress(encryption.open_stream(chunks, KEY))
    with extract.staged_restore(str(dest)) as staged:
        result = extract.safe_extract(chunks, staged.path)
        staged.commit()
    return result


@pytest.mark.parametrize('segment', [64 * 1024, 2 ** 31])
def test_stream_restores_byte_identically(conf, tmp_path, segment):
    cfg.CONF.set_override('backup_segment_max_size', segment)
    source = _tree(tmp_path / 'source')
    storage = swift_storage.SwiftStorage(_context(conf))
    backup = _Backup(source)
    stream = backup.stream({'databases': {}}, pipeline.Progress('test'))
    saved = storage.save('identical-%d' % segment, stream,
                         metadata={'datastore': 'couchdb'})
    dest = tmp_path / 'dest'
    dest.mkdir()
    result = _restore(storage, saved, dest)
    assert _digests(dest) == _digests(source)
    assert result.extra(couchdb_impl.META_NAME) is not None
    headers = storage._connection().head_object(storage.container,
                                                'identical-%d' % segment)
    assert headers['x-object-meta-datastore'] == 'couchdb'
    # One segment or many, the backup is a Static Large Object: no copy.
    assert headers.get('x-static-large-object', '').lower() == 'true'
    _, manifest = storage._connection().get_object(
        storage.container, 'identical-%d' % segment,
        query_string='multipart-manifest=get')
    assert (len(json.loads(manifest)) == 1) == (segment == 2 ** 31)
    storage.delete(saved.location)
    _, listing = storage._connection().get_container(storage.container)
    assert not [o for o in listing if o['name'].startswith(
        'identical-%d' % segment)]


def test_flipped_byte_in_swift_is_refused(conf, tmp_path, swift):
    source = _tree(tmp_path / 'source', files=5)
    storage = swift_storage.SwiftStorage(_context(conf))
    stream = _Backup(source).stream({}, pipeline.Progress('test'))
    saved = storage.save('flipped', stream)
    conn = storage._connection()
    _, body = conn.get_object(storage.container, 'flipped')
    damaged = bytearray(body)
    damaged[len(damaged) // 2] ^= 0x01
    conn.put_object(storage.container, 'flipped', bytes(damaged))
    dest = tmp_path / 'dest'
    dest.mkdir()
    (dest / 'old').write_text('kept')
    with pytest.raises((storage_base.ChecksumMismatch,
                        compression.BackupIntegrityError)):
        _restore(storage, saved, dest)
    assert sorted(os.listdir(dest)) == ['old']


def test_swift_going_away_mid_upload_leaves_nothing(conf, tmp_path, swift):
    # The proxy dies in the middle of a segment and comes back two seconds
    # later: the save fails, and what it had uploaded is removed.
    cfg.CONF.set_override('backup_segment_max_size', 64 * 1024)
    source = _tree(tmp_path / 'source')
    storage = swift_storage.SwiftStorage(_context(conf))
    stream = _Backup(source).stream({}, pipeline.Progress('test'))
    restarted = []

    def outage(chunks, after=100_000):
        sent = 0
        for chunk in chunks:
            sent += len(chunk)
            if sent > after and not restarted:
                swift.proxy.kill()
                timer = threading.Timer(2.0, swift.start_proxy)
                timer.start()
                restarted.append(timer)
            yield chunk

    try:
        with pytest.raises(storage_base.StorageError,
                           match=r'^Uploading segment interrupted_\d{8} '
                                 r'to Swift failed: ') as err:
            storage.save('interrupted', outage(stream))
    finally:
        for timer in restarted:
            timer.join()
    # A lost upload, not a damaged one (ChecksumMismatch is a StorageError).
    assert type(err.value) is storage_base.StorageError
    _, listing = storage._connection().get_container(storage.container)
    assert not [o for o in listing if o['name'].startswith('interrupted')]
