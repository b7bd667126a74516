"""Backups in a directory of this machine (``storage_strategy = local``).

For a single machine without Swift: each backup is one file, written to a
temporary name and renamed when complete; its checksum is the MD5 of its
bytes, as a one-segment Swift object's would be.
"""

import os
import urllib.parse

from oslo_config import cfg
from oslo_log import log as logging

from trove.guestagent.backup.storage import base

CONF = cfg.CONF
LOG = logging.getLogger(__name__)
SCHEME = 'file://'


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

    def save(self, name, chunks, metadata=None):
        if '/' in name or name.startswith('.'):
            raise base.StorageError("Invalid backup object name %r" % name)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        path = os.path.join(self.root, name)
        partial = path + '.partial'
        hashing = base.Hashing(chunks)
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o600)
            with os.fdopen(fd, 'wb') as out:
                for chunk in hashing:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise
        location = SCHEME + urllib.parse.quote(path)
        LOG.info("Stored backup %s: %d bytes, checksum %s", location,
                 hashing.size, hashing.hexdigest)
        return base.SavedObject(location, hashing.hexdigest, hashing.size)

    def load(self, location, checksum=None):
        hashing = base.Hashing(_read(self._path(location)))
        yield from hashing
        if checksum and hashing.hexdigest != checksum:
            raise base.ChecksumMismatch(
                "Backup %s: received bytes have checksum %s, the backup "
                "recorded %s" % (location, hashing.hexdigest, checksum))

    def delete(self, location):
        os.unlink(self._path(location))


def _read(path, size=1024 * 1024):
    with open(path, 'rb') as stream:
        while True:
            chunk = stream.read(size)
            if not chunk:
                return
            yield chunk
