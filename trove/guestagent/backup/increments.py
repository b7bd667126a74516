"""The file index every backup stores, which incremental backups build on.

CouchDB's database shards and view indexes are append-only: between two
backups a file grew at its end, was replaced whole (compaction writes a new
file and renames it over the old), was created or was deleted.  Every
backup, full or incremental, stores with its object (``Storage.save``'s
``index``, a segment of the Swift object, removed with it) an index of the
data directory as the backup copied it: each directory, and each file with
the size stored, the ``digest`` of those bytes and its inode::

    {"format": "trove-couchdb-index/1", "backup_id": ..., "created": ...,
     "parent": null | {"backup_id", "location", "checksum"},
     "chain": [full backup id, ..., this backup id],
     "block": 16777216,
     "dirs": ["shards", ...],
     "files": {"shards/00000000-7fffffff/db.1700000000.couch":
               {"size": ..., "sha256": ..., "ino": ..., "stored": ...}},
     "deleted": [paths of the parent's files and directories now gone]}

``stored`` says what this backup's archive holds of the file: ``whole``,
``delta`` (the bytes after the parent's ``size``) or ``unchanged``
(nothing).  An incremental backup reads its parent's index from the
parent's object, never from this instance, so a chain survives the loss of
the instance that made it.  The index is compressed and sealed like the
backup (AES-256-GCM with the operator's key), so its names and digests are
as private and as authenticated as the data.
"""

import gzip
import io
import json
import time

from oslo_config import cfg

from trove.common import exception
from trove.guestagent.backup import digest
from trove.guestagent.backup import encryption

CONF = cfg.CONF

FORMAT = 'trove-couchdb-index/1'
STORED = ('whole', 'delta', 'unchanged')
# An index larger than this, once inflated, is refused.
MAX_INDEX_SIZE = 256 * 1024 * 1024


class BackupIndexError(exception.TroveError):
    """A backup's index cannot be read or does not describe a backup."""


class Index:
    """The index of one backup, filled in as its archive is written."""

    def __init__(self, backup_id, parent=None, parent_index=None):
        self.backup_id = backup_id
        self.parent = parent
        self.parent_index = parent_index
        self.dirs = []
        self.files = {}
        self.created = time.time()

    def directory(self, rel, st):
        self.dirs.append(rel)

    def file(self, rel, st, found, stored):
        self.files[rel] = {'size': found.length, 'sha256': found.hexdigest(),
                           'ino': st.st_ino, 'stored': stored}

    def counts(self):
        """{stored: number of files stored that way}."""
        counts = dict.fromkeys(STORED, 0)
        for entry in self.files.values():
            counts[entry['stored']] += 1
        return counts

    def to_dict(self):
        chain = [self.backup_id]
        deleted = []
        if self.parent_index is not None:
            chain = list(self.parent_index['chain']) + chain
            present = set(self.files) | set(self.dirs)
            deleted = sorted(
                (set(self.parent_index['files'])
                 | set(self.parent_index['dirs'])) - present)
        return {'format': FORMAT, 'backup_id': self.backup_id,
                'created': self.created, 'parent': self.parent,
                'chain': chain, 'block': digest.BLOCK, 'dirs': self.dirs,
                'files': self.files, 'deleted': deleted}

    def seal(self):
        """The index as stored: JSON, gzip, then encrypted if backups are."""
        data = gzip.compress(json.dumps(self.to_dict(), sort_keys=True,
                                        separators=(',', ':')).encode(),
                             compresslevel=6, mtime=0)
        if CONF.backup_use_openssl_encryption:
            data = b''.join(encryption.encrypt(
                [data], CONF.backup_aes_cbc_key,
                chunk_size=CONF.backup_chunk_size))
        return data


def open_index(blob, what):
    """The index dict of a stored index ``blob`` (of backup ``what``).

    Authenticated with the current or an earlier key, inflated and checked
    to be an index this agent can build on or restore; anything else
    raises ``BackupIndexError``.
    """
    try:
        data = b''.join(encryption.open_stream(
            [blob], CONF.backup_aes_cbc_key,
            allow_plain=not CONF.backup_use_openssl_encryption,
            previous_keys=CONF.backup_aes_cbc_previous_keys))
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as inflating:
            text = inflating.read(MAX_INDEX_SIZE + 1)
        if len(text) > MAX_INDEX_SIZE:
            raise ValueError("larger than %d bytes" % MAX_INDEX_SIZE)
        index = json.loads(text)
    except exception.TroveError as exc:
        raise BackupIndexError("The file index of backup %s cannot be "
                               "read: %s" % (what, exc)) from exc
    except (OSError, EOFError, ValueError) as exc:
        raise BackupIndexError("The file index of backup %s is damaged: "
                               "%s" % (what, exc)) from exc
    _check(index, what)
    return index


def _check(index, what):
    def bad(reason):
        raise BackupIndexError("The file index of backup %s is not one "
                               "this agent reads: %s" % (what, reason))

    if not isinstance(index, dict) or index.get('format') != FORMAT:
        bad("format %r" % (index.get('format')
                           if isinstance(index, dict) else None))
    if index.get('block') != digest.BLOCK:
        bad("digest block size %r" % index.get('block'))
    files, dirs = index.get('files'), index.get('dirs')
    if not isinstance(files, dict) or not isinstance(dirs, list):
        bad("no file list")
    for rel, entry in files.items():
        if not (isinstance(entry, dict)
                and isinstance(entry.get('size'), int)
                and entry['size'] >= 0
                and isinstance(entry.get('sha256'), str)
                and entry.get('stored') in STORED):
            bad("entry %r" % rel)
    chain = index.get('chain')
    if not (isinstance(chain, list) and chain
            and chain[-1] == index.get('backup_id')):
        bad("chain %r" % chain)
    parent = index.get('parent')
    if parent is not None and not (
            isinstance(parent, dict) and len(chain) >= 2
            and parent.get('backup_id') == chain[-2]
            and isinstance(parent.get('checksum'), str)
            and isinstance(parent.get('location'), str)):
        bad("parent %r" % parent)
    if not isinstance(index.get('deleted'), list):
        bad("no list of deleted files")


def parent_files(index):
    """{relative path: {'size', 'sha256'}} of what a backup holds."""
    return {rel: {'size': entry['size'], 'sha256': entry['sha256']}
            for rel, entry in index['files'].items()}

