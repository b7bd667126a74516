"""Backups in a directory of this machine (``storage_strategy = local``).

For a single machine without Swift: each backup is one file, written to a
temporary name and renamed when complete, with ``<name>.meta`` beside it
(its metadata and its parts' MD5s) and, for backups with a file index,
``<name>.index``.  Its checksum is the MD5 of its bytes, as a one-segment
Swift object's would be, or, with an index, the MD5 of the data's and the
index's MD5s, as a two-segment Swift object's would be.
"""

import hashlib
import json
import os
import urllib.parse

from oslo_config import cfg
from oslo_log import log as logging

from trove.guestagent.backup.storage import base

CONF = cfg.CONF
LOG = logging.getLogger(__name__)
SCHEME = 'file://'
PARTIAL = '.partial'
INDEX = '.index'
META = '.meta'


class LocalStorage(base.Storage):

    def __init__(self, context=None, container=None):
        self.root = os.path.join(CONF.backup_local_dir,
                                 container or CONF.backup_swift_container)

    def _path(self, location):
        if not location.startswith(SCHEME):
            raise base.StorageError("Not a local backup location: %s" %
                                    location)
        path = os.path.realpath(urllib.parse.unquote(location[len(SCHEME):]))
        if os.path.dirname(path) != os.path.realpath(self.root):
            raise base.StorageError(
                "Backup location %s is outside %s" % (location, self.root))
        return path

    def save(self, name, chunks, metadata=None, index=None):
        if '/' in name or name.startswith('.'):
            raise base.StorageError("Invalid backup object name %r" % name)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        path = os.path.join(self.root, name)
        written = []
        try:
            data = _write(path + PARTIAL, chunks)
            written.append(path + PARTIAL)
            parts = {'data': data.hexdigest}
            checksum = data.hexdigest
            if index is not None:
                parts['index'] = _write(path + INDEX + PARTIAL,
                                        [index()]).hexdigest
                written.append(path + INDEX + PARTIAL)
                checksum = base.composite_checksum(
                    [parts['data'], parts['index']])
            meta = {'metadata': {base.metadata_key(k): str(v) for k, v in
                                 (metadata or {}).items()},
                    'parts': parts}
            _write(path + META + PARTIAL, [json.dumps(meta).encode()])
            written.append(path + META + PARTIAL)
            # The data is renamed last: a backup without its data file is
            # no backup, whatever else a crash left.
            for partial in reversed(written):
                os.replace(partial, partial[:-len(PARTIAL)])
        except BaseException:
            # Every partial file, written or half written (an index or
            # metadata file that failed while being written is not in
            # ``written``).
            for partial in (path + PARTIAL, path + INDEX + PARTIAL,
                            path + META + PARTIAL):
                if os.path.exists(partial):
                    os.unlink(partial)
            raise
        location = SCHEME + urllib.parse.quote(path)
        LOG.info("Stored backup %s: %d bytes, checksum %s", location,
                 data.size, checksum)
        return base.SavedObject(location, checksum, data.size)

    def _parts(self, path):
        """The metadata file's content; an empty one for older backups."""
        if not os.path.exists(path):
            raise base.BackupNotFound("No backup at %s" % path)
        try:
            with open(path + META, 'rb') as stream:
                return json.loads(stream.read())
        except FileNotFoundError as exc:
            if os.path.exists(path + INDEX):
                # An index without the file recording it: damage, not an
                # older backup without an index.
                raise base.ChecksumMismatch(
                    "Backup %s has an index but its metadata file is "
                    "missing" % path) from exc
            return {'metadata': {}, 'parts': {}}
        except ValueError as exc:
            raise base.ChecksumMismatch(
                "Backup %s: its metadata file is damaged: %s" % (
                    path, exc)) from exc

    def load(self, location, checksum=None):
        path = self._path(location)
        parts = self._parts(path)['parts']
        hashing = base.Hashing(_read(path))
        yield from hashing
        actual = hashing.hexdigest
        if 'index' in parts:
            actual = base.composite_checksum([actual, parts['index']])
        if checksum and actual != checksum:
            raise base.ChecksumMismatch(
                "Backup %s: received bytes have checksum %s, the backup "
                "recorded %s" % (location, actual, checksum))

    def load_index(self, location, checksum=None):
        path = self._path(location)
        parts = self._parts(path)['parts']
        if 'index' not in parts:
            return None
        recorded = base.composite_checksum([parts.get('data', ''),
                                            parts['index']])
        if checksum and recorded != checksum:
            raise base.ChecksumMismatch(
                "Backup %s: its parts have checksum %s, the backup "
                "recorded %s" % (location, recorded, checksum))
        try:
            with open(path + INDEX, 'rb') as stream:
                blob = stream.read()
        except FileNotFoundError as exc:
            raise base.ChecksumMismatch(
                "Backup %s: its index file is missing" % location) from exc
        actual = hashlib.md5(blob, usedforsecurity=False).hexdigest()
        if actual != parts['index']:
            raise base.ChecksumMismatch(
                "Backup %s: its index has checksum %s, the backup recorded "
                "%s" % (location, actual, parts['index']))
        return blob

    def metadata(self, location):
        return dict(self._parts(self._path(location))['metadata'])

    def delete(self, location):
        path = self._path(location)
        if not os.path.exists(path):
            raise base.BackupNotFound("No backup at %s" % path)
        for extra in (INDEX, META):
            if os.path.exists(path + extra):
                os.unlink(path + extra)
        os.unlink(path)


def _write(path, chunks):
    hashing = base.Hashing(chunks)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'wb') as out:
        for chunk in hashing:
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return hashing


def _read(path, size=1024 * 1024):
    with open(path, 'rb') as stream:
        while True:
            chunk = stream.read(size)
            if not chunk:
                return
            yield chunk
