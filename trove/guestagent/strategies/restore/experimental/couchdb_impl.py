"""CouchDB restores: this project's backups and upstream Trove's old ones.

The object is downloaded and its checksum checked over the bytes actually
received; it is authenticated and decrypted (this project's AES-256-GCM
format, or upstream's ``openssl enc -aes-256-cbc`` with either key digest),
decompressed and extracted into a staging directory inside the data
directory, member by member under the archive safety rules.  Only when the
whole stream has been read and verified does the staged data replace the
old.  Then CouchDB starts, the server's admins and uuid come back, and every
database of the backup must open with at least the documents it had.

The uuid is written into CouchDB's runtime ini file before CouchDB starts on
the restored data: CouchDB's replicator hashes the server uuid into every
replication id, and so into the name of its checkpoints, and starts the jobs
of ``_replicator`` as soon as the server is up.  Set later, the jobs would
start from sequence 0 under a new id.

On CouchDB 2.x/3.x the shard map of every database (a document of the
node-local ``_dbs`` database) names the node its shards live on, by Erlang
node name.  When this server's node name (``GET /_node/_local``) is not the
one the backup was made on, the maps are rewritten to name this node, as
CouchDB's "Moving a shard" procedure updates cluster metadata: ``by_node``,
``by_range`` and the ``changelog`` entries, each document PUT back with its
``_rev``, then the old node leaves ``_nodes``.  A backup whose maps place
shards on more than one node (a cluster) is refused.

An incremental backup is restored with the backups it builds on: the chain
is followed down to its full backup through each object's metadata
(``parent_location``, ``parent_checksum``, as Trove's restores do), and
each link is checked against the parent its own sealed index recorded
before anything changes on this instance.  Then the links are extracted in
order, full backup first, into one staging directory: whole files replace,
deltas are appended once the file they extend has their base's size and
digest, the files a link recorded as deleted go; at the end every file must
have the size and digest the last backup recorded, and only then is the
staged data swapped in and CouchDB started.
"""

import collections
import copy
import json
import os
import re

from oslo_config import cfg
from oslo_log import log as logging

from trove.common import exception
from trove.guestagent.backup import compression
from trove.guestagent.backup import encryption
from trove.guestagent.backup import extract
from trove.guestagent.backup import increments
from trove.guestagent.backup import pipeline
from trove.guestagent.backup import storage as storage_mod
from trove.guestagent.backup.storage import base as storage_base
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import ini
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.strategies.backup.experimental import couchdb_impl
from trove.guestagent.strategies.restore import base

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

# Where upstream Trove's `tar cpPf - /var/lib/couchdb` backups keep data.
LEGACY_ROOT = '/var/lib/couchdb/'
GZIP_MAGIC = b'\x1f\x8b'
# The node-local databases of CouchDB 2.x/3.x.
SHARD_MAPS = ('_node', '_local', '_dbs')
NODES = ('_node', '_local', '_nodes')
# Shard maps read per GET of _dbs/_all_docs.
SHARD_MAP_PAGE = 500
# Links of an incremental chain followed at most (a loop stops there too).
MAX_CHAIN = 1000
# What a CouchDB uuid may look like before it goes into an ini file.
_UUID = re.compile(r'^[A-Za-z0-9._-]{1,128}$')


class RestoreVerificationError(exception.TroveError):
    """The restored instance does not hold what the backup held."""


class BackupChainError(exception.TroveError):
    """A link of an incremental backup's chain is missing or foreign."""


# One backup of a chain: where it is, its checksum, its index (or None).
Link = collections.namedtuple('Link', 'location checksum index')


class CouchDBRestore(base.RestoreRunner):
    """Restores backups of type ``CouchDBBackup``, and incremental ones."""

    def restore(self):
        LOG.info("Restoring backup %s from %s", self.backup_info.get('id'),
                 self.backup_info['location'])
        chain = self._chain()
        self.app.stop_db()
        result = self._extract(chain)
        self.app.set_data_ownership(self.restore_location)
        meta = result.extra(couchdb_impl.META_NAME)
        meta = None if meta is None else json.loads(meta)
        if meta and meta.get('uuid'):
            # Before CouchDB starts: its replicator hashes the uuid.
            self._preset_uuid(meta['uuid'])
        with self.app.cluster_setup_skipped():
            self.app.start_db()
            self._adopt_shard_maps(meta or {})
        if meta is None:
            LOG.info("Backup %s has no metadata (an upstream Trove backup): "
                     "checking that its databases open",
                     self.backup_info.get('id'))
            self._verify({})
            return
        self._restore_config(meta)
        self._verify(meta.get('databases') or {})

    # -- the chain ----------------------------------------------------------

    def _chain(self):
        """The links to restore, the full backup first.

        Each link is found through its child's metadata and must be the
        backup the child's index recorded as its parent (same location,
        checksum and backup id, a chain one shorter); its index is read
        and verified against its checksum.  Nothing is downloaded beyond
        the indexes, and nothing changes on this instance.
        """
        location = self.backup_info['location']
        checksum = self.backup_info.get('checksum')
        links = []
        while True:
            link = self._link(location, checksum, links[-1] if links
                              else None)
            links.append(link)
            storage = storage_mod.for_location(self.context, location)
            metadata = storage.metadata(location)
            parent = link.index and link.index['parent']
            named = metadata.get('parent_location')
            if not parent and not named:
                break
            if not parent or (named, metadata.get('parent_checksum')) != (
                    parent['location'], parent['checksum']):
                raise BackupChainError(
                    "Backup %s is not consistent: its metadata names the "
                    "parent %s (checksum %s), its sealed index %s." % (
                        location, named, metadata.get('parent_checksum'),
                        'names %s (checksum %s)' % (
                            parent['location'], parent['checksum'])
                        if parent else 'says it is a full backup'))
            if len(links) >= MAX_CHAIN:
                raise BackupChainError(
                    "Backup %s: its chain is longer than %d backups." % (
                        self.backup_info['location'], MAX_CHAIN))
            location, checksum = parent['location'], parent['checksum']
        links.reverse()
        if len(links) > 1:
            LOG.info("Backup %s is incremental: restoring a chain of %d "
                     "backups, the full backup %s first",
                     self.backup_info.get('id'), len(links),
                     links[0].location)
        return links

    def _link(self, location, checksum, child):
        """One link, read and checked against the ``child`` built on it."""
        storage = storage_mod.for_location(self.context, location)
        try:
            blob = storage.load_index(location, checksum)
        except storage_base.BackupNotFound as exc:
            if child is None:
                raise
            raise BackupChainError(
                "Backup %s builds on backup %s, which is gone (deleted, or "
                "its container removed): it cannot be restored without "
                "it." % (child.location, location)) from exc
        except storage_base.ChecksumMismatch as exc:
            raise BackupChainError(
                "Backup %s%s is damaged: %s" % (
                    location, '' if child is None else
                    ' (which backup %s builds on)' % child.location,
                    exc)) from exc
        index = None if blob is None else increments.open_index(
            blob, location)
        if child is None:
            return Link(location, checksum, index)
        if index is None or child.index['chain'][:-1] != index['chain']:
            raise BackupChainError(
                "Backup %s is not the backup %s was made on (its chain is "
                "%s, the child's %s): a foreign link." % (
                    location, child.location,
                    index and index['chain'], child.index['chain']))
        return Link(location, checksum, index)

    def _stream(self, link):
        location = link.location
        storage = storage_mod.for_location(self.context, location)
        # Downloading with decrypting, decompressing, and writing the
        # files: three threads, each stage overlapping the others.
        chunks = pipeline.threaded(encryption.open_stream(
            storage.load(location, link.checksum),
            CONF.backup_aes_cbc_key,
            allow_plain=not CONF.backup_use_openssl_encryption,
            previous_keys=CONF.backup_aes_cbc_previous_keys),
            name='restore-download')
        first, chunks = _peek(chunks)
        if first.startswith(GZIP_MAGIC):
            chunks = pipeline.threaded(
                compression.gzip_decompress(
                    chunks, threads=couchdb_impl.threads(),
                    engine_name=CONF.backup_compression_engine),
                name='restore-gunzip')
        return chunks

    def _extract(self, chain):
        """Extract every link into one staging dir; swap it in at the end.
        Returns the last link's ``ExtractResult``."""
        progress = pipeline.Progress(
            'Restore %s' % self.backup_info.get('id'),
            CONF.backup_progress_interval)
        # Only a chain follows digests: a full backup is authenticated as
        # a whole by its encryption and checksum.
        digests = {} if len(chain) > 1 else None
        with extract.staged_restore(self.restore_location) as staged:
            for number, link in enumerate(chain, 1):
                if number > 1:
                    # First: a path deleted may be another kind of entry
                    # now (a directory become a file).
                    extract.remove_deleted(staged.path,
                                           link.index['deleted'], digests)
                result = extract.safe_extract(
                    progress.count(self._stream(link)), staged.path,
                    strip_prefix='data/', legacy_root=LEGACY_ROOT,
                    owner=service.couchdb_owner(), digests=digests)
                LOG.info("Restored backup %d of %d (%s): %d files whole, "
                         "%d appended to, %d bytes", number, len(chain),
                         link.location, result.files, result.deltas,
                         result.bytes)
            if digests is not None:
                extract.verify_files(
                    staged.path, increments.parent_files(chain[-1].index),
                    digests)
                LOG.info("The %d restored files have the sizes and digests "
                         "backup %s recorded", len(digests),
                         chain[-1].location)
            staged.commit()
        progress.log()
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
            previous = client.config_set('couchdb', 'uuid', meta['uuid'])
            if previous and previous != meta['uuid']:
                LOG.warning("CouchDB started with uuid %s, not the backup's "
                            "%s: replications that started meanwhile keep "
                            "checkpoints under another id", previous,
                            meta['uuid'])

    def _preset_uuid(self, uuid):
        """Put the backup's uuid in the runtime ini while CouchDB is down.

        CouchDB keeps what its config API sets in the last file of its ini
        chain, ``local.d/99-trove-runtime.ini``, so a uuid there wins over
        any other file when CouchDB starts.
        """
        if not _UUID.match(uuid):
            LOG.warning("The backup's uuid %r is not a CouchDB uuid; it is "
                        "set after CouchDB starts", uuid)
            return
        path = os.path.join(self.app.local_d(), service.RUNTIME_INI_FILE)
        ini.set_value(path, 'couchdb', 'uuid', uuid,
                      owner=service.couchdb_owner())
        LOG.info("CouchDB will start with the backup's uuid %s", uuid)

    # -- node name --------------------------------------------------------

    def _adopt_shard_maps(self, meta):
        """Make the shard maps name this node (CouchDB 2.x/3.x).

        The node the backup was made on is ``meta['node']``; a backup that
        did not record it is read from the maps: the one node they name.
        Nothing is written before every map has been checked.
        """
        client = self.app.client
        if client.api_version != couch.API_V3:
            return
        here = couchdb_impl.node_name(client)
        if here is None:
            LOG.warning("CouchDB does not tell its node name (GET "
                        "/_node/_local); its shard maps stay as restored")
            return
        maps = list(_shard_maps(client))
        placed = set()
        for doc in maps:
            placed |= _placement(doc)
        old = meta.get('node') or _only(placed - {here})
        foreign = placed - {old, here}
        shared = [doc['_id'] for doc in maps
                  if old != here and {old, here} <= _placement(doc)]
        if foreign or shared:
            made_on = (' (the backup was made on %s)' % old
                       if meta.get('node') else '')
            raise exception.GuestStateError(
                reason="The backup's shard maps place databases on %d "
                       "nodes, %s%s: a backup of a CouchDB cluster cannot "
                       "be restored on the single node %s."
                       % (len(placed), ', '.join(sorted(placed)), made_on,
                          here))
        if old is None or old == here:
            LOG.info("The shard maps of the %d databases already name this "
                     "node %s", len(maps), here)
            return
        moved = []
        for doc in maps:
            if old in _placement(doc):
                self._move_shard_map(client, doc, old, here)
                moved.append(doc['_id'])
        self._forget_node(client, old)
        LOG.info("Moved the shard maps of %d databases from node %s (the "
                 "backup's) to node %s", len(moved), old, here)
        self._wait_for_shard_maps(client, moved, here)

    def _move_shard_map(self, client, doc, old, new, attempts=3):
        """PUT the map renamed; on a conflict read it again and retry."""
        segments = list(SHARD_MAPS) + [doc['_id']]
        for attempt in range(attempts):
            renamed = rename_node(doc, old, new)
            try:
                client.request('PUT', segments, json=renamed)
                break
            except exception.CouchDBConflict:
                if attempt + 1 == attempts:
                    raise
                LOG.debug("The shard map of %s changed; reading it again",
                          doc['_id'])
                doc = client.request('GET', segments)
        LOG.info("Shard map of database %s: %d ranges moved from node %s "
                 "to %s", doc['_id'], len(renamed.get('by_range') or {}),
                 old, new)

    def _forget_node(self, client, node):
        """Remove the backup's node from _nodes: it holds no shard now."""
        segments = list(NODES) + [node]
        try:
            doc = client.get_or_none(segments)
            if doc is None:
                return
            client.request('DELETE', segments, params={'rev': doc['_rev']},
                           expected=(200, 202, 404))
        except exception.CouchDBError as exc:
            LOG.warning("Could not remove node %s from _nodes (%s); GET "
                        "/_membership still lists it", node, exc)
            return
        LOG.info("Removed node %s from this server's cluster nodes", node)

    def _wait_for_shard_maps(self, client, dbs, node):
        """Until CouchDB's shard cache shows every moved map on ``node``."""
        pending = set(dbs)
        timeout = CONF.state_change_wait_time
        for _attempt in couch.polling_loop(timeout, self.app.poll_interval):
            for db in sorted(pending):
                try:
                    shards = (client.get_or_none([db, '_shards'])
                              or {}).get('shards') or {}
                except exception.CouchDBError as exc:
                    LOG.debug("Shards of %s: %s", db, exc)
                    continue
                if shards and all(nodes == [node]
                                  for nodes in shards.values()):
                    pending.discard(db)
            if not pending:
                return
        LOG.warning("After %s seconds CouchDB still places shards of %s "
                    "elsewhere than on %s", timeout,
                    ', '.join(sorted(pending)), node)

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


def _shard_maps(client):
    """Every shard map of the node-local _dbs (design documents skipped)."""
    last = None
    while True:
        options = {'include_docs': True, 'limit': SHARD_MAP_PAGE}
        if last is not None:
            options.update(startkey=last, skip=1)
        rows = client.request('GET', list(SHARD_MAPS) + ['_all_docs'],
                              params=couch.query_params(**options))['rows']
        for row in rows:
            if not row['id'].startswith('_design/') and row.get('doc'):
                yield row['doc']
        if len(rows) < SHARD_MAP_PAGE:
            return
        last = rows[-1]['id']


def _placement(doc):
    """The nodes a shard map places shard replicas on."""
    nodes = set(doc.get('by_node') or {})
    for replicas in (doc.get('by_range') or {}).values():
        nodes.update(replicas or [])
    return nodes


def _only(nodes):
    return next(iter(nodes)) if len(nodes) == 1 else None


def rename_node(doc, old, new):
    """A copy of a shard map with node ``old`` called ``new``.

    ``by_node``'s key, the ``by_range`` lists and the node of each
    ``changelog`` entry ([action, range, node]) change; every other field,
    ``_id`` and ``_rev`` included, stays as it was.
    """
    doc = copy.deepcopy(doc)

    def name(node):
        return new if node == old else node

    if isinstance(doc.get('by_node'), dict):
        doc['by_node'] = {name(node): ranges
                          for node, ranges in doc['by_node'].items()}
    if isinstance(doc.get('by_range'), dict):
        doc['by_range'] = {rng: [name(node) for node in nodes or []]
                           for rng, nodes in doc['by_range'].items()}
    if isinstance(doc.get('changelog'), list):
        doc['changelog'] = [
            entry[:2] + [name(entry[2])] + entry[3:]
            if isinstance(entry, list) and len(entry) >= 3 else entry
            for entry in doc['changelog']]
    return doc


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


class CouchDBBackupIncremental(CouchDBRestore):
    """Restores backups of type ``CouchDBBackupIncremental``: the same
    restore, which follows any backup's chain."""
