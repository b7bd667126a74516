"""CouchDB restores: this project's backups and upstream Trove's old ones.

The object is downloaded and its checksum checked over the bytes actually
received; it is authenticated and decrypted (this project's AES-256-GCM
format, or upstream's ``openssl enc -aes-256-cbc`` with either key digest),
decompressed and extracted into a staging directory inside the data
directory, member by member under the archive safety rules.  Only when the
whole stream has been read and verified does the staged data replace the
old.  Then CouchDB starts, the server's admins and uuid come back, and every
database of the backup must open with at least the documents it had.
"""

import json

from oslo_config import cfg
from oslo_log import log as logging

from trove.common import exception
from trove.guestagent.backup import compression
from trove.guestagent.backup import encryption
from trove.guestagent.backup import extract
from trove.guestagent.backup import pipeline
from trove.guestagent.backup import storage as storage_mod
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.strategies.backup.experimental import couchdb_impl
from trove.guestagent.strategies.restore import base

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

# Where upstream Trove's `tar cpPf - /var/lib/couchdb` backups keep data.
LEGACY_ROOT = '/var/lib/couchdb/'
GZIP_MAGIC = b'\x1f\x8b'


class RestoreVerificationError(exception.TroveError):
    """The restored instance does not hold what the backup held."""


class CouchDBRestore(base.RestoreRunner):
    """Restores backups of type ``CouchDBBackup``."""

    def restore(self):
        LOG.info("Restoring backup %s from %s", self.backup_info.get('id'),
                 self.backup_info['location'])
        self.app.stop_db()
        result = self._extract()
        self.app.set_data_ownership(self.restore_location)
        self.app.start_db()
        meta = result.extra(couchdb_impl.META_NAME)
        if meta is None:
            LOG.info("Backup %s has no metadata (an upstream Trove backup): "
                     "checking that its databases open",
                     self.backup_info.get('id'))
            self._verify({})
            return
        meta = json.loads(meta)
        self._restore_config(meta)
        self._verify(meta.get('databases') or {})

    def _stream(self):
        location = self.backup_info['location']
        storage = storage_mod.for_location(self.context, location)
        # Downloading with decrypting, decompressing, and writing the
        # files: three threads, each stage overlapping the others.
        chunks = pipeline.threaded(encryption.open_stream(
            storage.load(location, self.backup_info.get('checksum')),
            CONF.backup_aes_cbc_key,
            allow_plain=not CONF.backup_use_openssl_encryption),
            name='restore-download')
        first, chunks = _peek(chunks)
        if first.startswith(GZIP_MAGIC):
            chunks = pipeline.threaded(compression.gzip_decompress(chunks),
                                       name='restore-gunzip')
        return chunks

    def _extract(self):
        progress = pipeline.Progress(
            'Restore %s' % self.backup_info.get('id'),
            CONF.backup_progress_interval)
        with extract.staged_restore(self.restore_location) as staged:
            result = extract.safe_extract(
                progress.count(self._stream()), staged.path,
                strip_prefix='data/', legacy_root=LEGACY_ROOT,
                owner=service.couchdb_owner())
            staged.commit()
        progress.log()
        LOG.info("Restored %d files (%d bytes) into %s", result.files,
                 result.bytes, self.restore_location)
        return result

    def _restore_config(self, meta):
        """Admins and uuid of the backed-up server; our os_admin stays."""
        client = self.app.client
        wanted = {name: value for name, value in
                  (meta.get('admins') or {}).items()
                  if name != system.ADMIN_USER}
        current = client.config_get('admins') or {}
        for name, hashed in wanted.items():
            client.config_set('admins', name, hashed)
        for name in current:
            if name not in wanted and name != system.ADMIN_USER:
                client.config_delete('admins', name, missing_ok=True)
        self.app.credentials.clear_root_password()
        if meta.get('uuid'):
            client.config_set('couchdb', 'uuid', meta['uuid'])

    def _verify(self, expected):
        """Every database opens with at least the documents it had."""
        client = self.app.client
        present = set(client.all_dbs())
        problems = ['%s is missing' % db for db in expected
                    if db not in present]
        for db in sorted(present):
            info = client.request('GET', [db])
            count = info.get('doc_count', 0)
            if count < expected.get(db, 0):
                problems.append('%s holds %d documents, the backup had %d'
                                % (db, count, expected[db]))
        if problems:
            raise RestoreVerificationError(
                "The restored data is incomplete: %s." % '; '.join(problems))
        LOG.info("Verified %d databases after the restore", len(present))


def _peek(chunks):
    """The first non-empty chunk, and the stream with it put back."""
    chunks = iter(chunks)
    for first in chunks:
        if first:
            break
    else:
        raise compression.BackupIntegrityError("The backup stream is empty.")

    def rejoined():
        yield first
        yield from chunks

    return first, rejoined()
