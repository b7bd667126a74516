"""CouchDB backups: an ordered hot tar of the data directory, gzip, encrypt.

The stream is ``tar | gzip (parallel) | AES-256-GCM`` straight into the
storage, each stage in its own thread with bounded hand-offs.  The archive
holds the data directory in the order CouchDB's documentation asks (indexes
before databases) and, last, ``meta/backup.json``: the server's admins (as
CouchDB's own password hashes), its uuid, on CouchDB 2.x/3.x its node name
(``GET /_node/_local``, which the databases' shard maps name) and every
database's document count when the backup started, which the restore uses
to bring the instance back and to verify it.

Every backup also stores its file index (``increments``) with its object.
An incremental backup (``CouchDBBackupIncremental``, what Trove asks for
with ``backup_info['parent']``) reads its parent's index from the parent's
object and stores, of each file, only what was appended since the parent
once the part the parent holds is proven unchanged; the object's metadata
names the parent (``parent_location``, ``parent_checksum``) as Trove's
restores expect.
"""

import json
import os
import time

from oslo_config import cfg
from oslo_log import log as logging

from trove.common import exception
from trove.guestagent.backup import archive
from trove.guestagent.backup import compression
from trove.guestagent.backup import digest
from trove.guestagent.backup import encryption
from trove.guestagent.backup import increments
from trove.guestagent.backup import pipeline
from trove.guestagent.backup import storage as storage_mod
from trove.guestagent.backup.storage import base as storage_base
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.strategies.backup import base

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

META_NAME = 'meta/backup.json'
FORMAT = 'trove-couchdb-backup/1'


class CouchDBBackup(base.BackupRunner):
    """Trove's backup type name for CouchDB, upstream's and ours."""

    backup_type = 'CouchDBBackup'

    @property
    def data_dir(self):
        return CONF.couchdb.mount_point

    def data_size(self):
        return base.directory_size(self.data_dir)

    def object_name(self):
        name = '%s.tar' % self.backup_id
        if CONF.backup_use_gzip_compression:
            name += '.gz'
        if CONF.backup_use_openssl_encryption:
            name += '.enc'
        return name

    def parent(self):
        """(what the index says of the parent, the parent's index), or
        (None, None) for a full backup."""
        return None, None

    def run(self):
        parent, parent_index = self.parent()
        meta = self.snapshot()
        progress = pipeline.Progress('Backup %s' % self.backup_id,
                                     CONF.backup_progress_interval,
                                     total=self.data_size())
        index = increments.Index(self.backup_id, parent, parent_index)
        with digest.pool(threads()) as hashers:
            saved = self.storage.save(
                self.object_name(),
                self.stream(meta, progress, index, parent_index, hashers),
                metadata=self.object_metadata(), index=index.seal)
        progress.log()
        return base.BackupResult(
            saved.location, saved.checksum, saved.size,
            note=self.note(meta, index))

    def note(self, meta, index):
        return '%d databases, %d documents' % (
            len(meta['databases']), sum(meta['databases'].values()))

    def snapshot(self):
        """Flush CouchDB and record what the restore must find again."""
        client = self.app.client
        databases = {}
        for db in client.all_dbs():
            if client.api_version == couch.API_V1:
                client.request('POST', [db, '_ensure_full_commit'],
                               json={})
            databases[db] = client.request('GET', [db]).get('doc_count', 0)
        return {
            'format': FORMAT, 'backup_id': self.backup_id,
            'created': time.time(), 'api_version': client.api_version,
            'version': client.server_info().get('version'),
            'admins': client.config_get('admins') or {},
            'uuid': _config_value(client, 'couchdb', 'uuid'),
            'node': (node_name(client) if client.api_version == couch.API_V3
                     else None),
            'databases': databases}

    def stream(self, meta, progress, index=None, parent_index=None,
               hashers=None):
        """The backup's bytes: tar, then gzip and encryption if enabled.

        ``index`` is filled in as the archive is written; with
        ``parent_index`` the archive holds only what changed since it.
        """
        extra = [(META_NAME, json.dumps(meta, sort_keys=True).encode())]
        stream = pipeline.threaded(progress.count(
            archive.write_tar(
                self.data_dir, extra_files=extra,
                bufsize=CONF.backup_chunk_size, index=index,
                parent_files=(None if parent_index is None
                              else increments.parent_files(parent_index)),
                pool=hashers)),
            name='backup-tar')
        if CONF.backup_use_gzip_compression:
            stream = compression.gzip_compress(
                stream, level=CONF.backup_compression_level,
                threads=threads(), block_size=CONF.backup_chunk_size,
                engine_name=CONF.backup_compression_engine)
        if CONF.backup_use_openssl_encryption:
            stream = encryption.encrypt(stream, CONF.backup_aes_cbc_key,
                                        chunk_size=CONF.backup_chunk_size)
        # Compressed, encrypted blocks wait here for the upload: a few
        # MiB, so that a slow moment of the storage does not stall the
        # compressors.
        stream = pipeline.threaded(stream, maxsize=8, name='backup-seal')
        return stream

    def object_metadata(self):
        return {'datastore': self.backup_info.get('datastore') or 'couchdb',
                'datastore-version':
                    self.backup_info.get('datastore_version') or '',
                'backup-format': FORMAT,
                'compression': 'gzip' if CONF.backup_use_gzip_compression
                else 'none',
                'encryption': 'aes-256-gcm'
                if CONF.backup_use_openssl_encryption else 'none'}


class ParentBackupError(exception.TroveError):
    """An incremental backup's parent cannot be built on."""


class CouchDBBackupIncremental(CouchDBBackup):
    """A backup of what changed since ``backup_info['parent']``."""

    backup_type = 'CouchDBBackupIncremental'

    def parent(self):
        given = self.backup_info.get('parent') or {}
        location, checksum = given.get('location'), given.get('checksum')
        if not location or not checksum:
            # Without the checksum Trove recorded, the parent (and later
            # the chain) could not be verified.
            raise ParentBackupError(
                "An incremental backup needs its parent's location and "
                "checksum; backup_info['parent'] is %r." % (given,))
        storage = storage_mod.for_location(self.context, location)
        try:
            blob = storage.load_index(location, checksum)
        except storage_base.BackupNotFound as exc:
            raise ParentBackupError(
                "The parent backup %s is gone (deleted, or its container "
                "removed): an incremental backup cannot build on it; make "
                "a full backup first." % location) from exc
        except storage_base.ChecksumMismatch as exc:
            raise ParentBackupError(
                "The parent backup %s is damaged or is not the backup "
                "Trove recorded (checksum %s): an incremental backup "
                "cannot build on it: %s" % (location, checksum, exc)
            ) from exc
        if blob is None:
            raise ParentBackupError(
                "The parent backup %s has no file index (made by upstream "
                "Trove or an older agent): an incremental backup cannot "
                "build on it; make a full backup first." % location)
        index = increments.open_index(blob, location)
        LOG.info("Backup %s builds on backup %s (%s, chain of %d): %d "
                 "files", self.backup_id, index['backup_id'], location,
                 len(index['chain']), len(index['files']))
        return ({'backup_id': index['backup_id'], 'location': location,
                 'checksum': checksum}, index)

    def object_metadata(self):
        metadata = super().object_metadata()
        parent = self.backup_info['parent']
        metadata.update(parent_location=parent['location'],
                        parent_checksum=parent['checksum'])
        return metadata

    def note(self, meta, index):
        counts = index.counts()
        return '%s; incremental on %s: %d files whole, %d appended to, ' \
            '%d unchanged, %d deleted' % (
                super().note(meta, index), index.parent['backup_id'],
                counts['whole'], counts['delta'], counts['unchanged'],
                len(index.to_dict()['deleted']))


def threads():
    """Threads that compress a backup and inflate a restore."""
    return CONF.backup_compression_threads or os.cpu_count() or 1


def node_name(client):
    """The Erlang node name of a CouchDB 2.x/3.x server: ``couchdb@host``.

    ``GET /_node/_local`` answers ``{"name": "couchdb@host"}``; the shard
    maps of the node-local ``_dbs`` database place shards by this name.
    None when the server answers 404 (no such endpoint).
    """
    answer = client.get_or_none(['_node', '_local'])
    name = answer.get('name') if isinstance(answer, dict) else None
    return name or None


def _config_value(client, section, key):
    try:
        return client.config_get(section, key)
    except exception.CouchDBError as exc:
        if exc.status == 404:
            return None
        raise
