"""The archive stage of a backup: a streaming tar of the CouchDB data dir.

``write_tar`` yields a POSIX (pax) tar of the data directory, chunk by chunk,
in the order CouchDB's documentation asks for (``backup_order``): secondary
indexes before the databases they index, node-level databases before the
shards.  Memory stays bounded by one read buffer whatever the data size.

The copy is hot: CouchDB keeps writing while the archive is made.  The rules:

* every file is opened once, its size taken with ``fstat`` at open time, and
  exactly that many bytes are copied, so a ``.couch`` file that grows while
  being copied is stored as it was when the backup opened it (append-only
  files: everything the file held when the backup started, a tail CouchDB
  skips on open at most);
* a file replaced by compaction (a rename over its name) while it is copied
  is stored whole and old: the open descriptor keeps the old inode;
* a file or directory that disappears between listing and opening (a
  deleted database) is skipped and logged;
* a file that shrinks while it is copied (truncated in place) cannot be
  taken back, its header is already out: the rest of that member is padded
  with zeros and the file is copied again, from a fresh open, as a second
  member of the same name, which supersedes the first on extraction (tar's
  rule, also ``safe_extract``'s); after ``retries`` such attempts the backup
  fails with ``FileShrankError``.

Paths inside the data dir are opened one component at a time relative to a
directory descriptor with ``O_NOFOLLOW``, so a symlink that appears in the
data dir while the backup runs is never followed.  Symlinks, sockets,
devices and fifos found in the listing are skipped with a warning.

``extra_files`` (configuration, metadata) are written LAST: ``meta/`` then
describes a finished copy, and a stream cut short lacks it.

An incremental backup (``parent_files``: what the parent's index recorded
of each file, its size and digest) stores a file in one of three ways:

* unchanged (its first ``size`` bytes have the parent's digest and it is no
  longer): no member, the index records it;
* grown (its first ``size`` bytes have the parent's digest): a member
  ``delta/<path>`` of the bytes after them, with pax records
  ``TROVE.base_size`` and ``TROVE.base_sha256`` naming the base it extends;
* anything else (new, shorter, rewritten, compacted): whole, as in a full
  backup.

The digest of the prefix is taken from the open descriptor before the
member is written, and the bytes of a delta are hashed as they are read,
so the index records the digest of exactly what was stored.  The retry of
a file that shrank while it was copied stores it whole: only a whole
member supersedes an abandoned delta.  ``index`` collects every directory
and file stored, for the backup's sealed index.
"""

import errno
import os
import stat
import tarfile
import time

from oslo_log import log as logging

from trove.common import exception
from trove.guestagent.backup import digest

LOG = logging.getLogger(__name__)

# Bytes read from a file at once: the memory bound of the stage.
BUFSIZE = 1024 * 1024
# Attempts to copy a file that keeps shrinking before the backup fails.
SHRINK_RETRIES = 3

BLOCKSIZE = tarfile.BLOCKSIZE
RECORDSIZE = tarfile.RECORDSIZE
NUL = b'\0'

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a fifo swapped in for a file must not block the backup.
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# Top-level names of the data dir that are not data: the file system's
# own directory on a mount point, and the leftovers of a staged restore.
NOT_DATA = ('lost+found',)
NOT_DATA_PREFIXES = ('.trove-restore-', '.trove-old-')

# The pax records of a delta member: the size and digest of its base.
BASE_SIZE = 'TROVE.base_size'
BASE_SHA256 = 'TROVE.base_sha256'

LAYOUT_COUCHDB3 = 'couchdb3'
LAYOUT_COUCHDB1 = 'couchdb1'
LAYOUT_OTHER = 'other'


class ArchiveError(exception.TroveError):
    message = "Archive error: %(reason)s"


class FileShrankError(ArchiveError):
    message = ("File '%(path)s' shrank while it was copied (%(attempts)s "
               "attempts, last from %(expected)s to %(actual)s bytes); "
               "the backup is abandoned.")


def open_dir_beneath(root_fd, parts, create=False, mode=0o755, owner=None):
    """Open directory ``parts`` under ``root_fd``, never following a link.

    Each component is opened relative to its parent's descriptor with
    ``O_NOFOLLOW``; a symlink or a non-directory on the way raises
    ``OSError`` (ELOOP / ENOTDIR).  With ``create``, missing components
    are made with ``mode`` and given ``owner`` (uid, gid).  Returns a new
    descriptor the caller closes.
    """
    fd = os.dup(root_fd)
    try:
        for part in parts:
            parent = fd
            try:
                fd = _open_dir_at(parent, part, create, mode, owner)
            finally:
                os.close(parent)
    except BaseException:
        _close_quietly(fd)
        raise
    return fd


def _open_dir_at(parent_fd, name, create, mode, owner):
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, mode, dir_fd=parent_fd)
    except FileExistsError:
        pass  # made meanwhile: opened (and checked) below
    fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    if owner is not None:
        os.fchown(fd, *owner)
    return fd


def _close_quietly(fd):
    try:
        os.close(fd)
    except OSError:
        pass


# --- order ---------------------------------------------------------------

def backup_order(data_dir):
    """Relative paths of ``data_dir`` in the order a backup copies them.

    CouchDB 3.x (``shards/``, ``.shards/`` or ``_dbs.couch`` at the top):
    ``.shards/`` (indexes), the node-level ``_*.couch`` files, ``shards/``,
    then the rest.  CouchDB 1.x (``<db>.couch`` files): the ``.<db>_design/``
    index directories, the ``.couch`` files, then the rest.  Anything else
    (pouchdb-server's LevelDB directories...): a sorted walk.  Directories
    come before their contents; symlinks, sockets, devices and fifos are
    skipped with a warning, never followed.
    """
    entries = _walk(data_dir)
    layout = _layout(entries)
    LOG.debug("Data dir %s: %s layout, %s entries",
              data_dir, layout, len(entries))
    rank_of = _RANKS[layout]
    ranks = {rel: rank_of(rel.split('/'), is_dir) for rel, is_dir in entries}
    # A directory goes no later than the earliest of its contents.
    for rel, _ in reversed(entries):
        parent = rel.rpartition('/')[0]
        if parent:
            ranks[parent] = min(ranks[parent], ranks[rel])
    order = sorted(range(len(entries)),
                   key=lambda i: (ranks[entries[i][0]], i))
    return [entries[i][0] for i in order]


def _walk(data_dir):
    """A sorted pre-order walk: [(relative path, is_dir)]."""
    entries = []
    root_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _walk_dir(root_fd, '', entries)
    finally:
        os.close(root_fd)
    return entries


def _walk_dir(dir_fd, prefix, entries):
    with os.scandir(dir_fd) as listing:
        children = sorted(listing, key=lambda entry: entry.name)
    for entry in children:
        rel = prefix + entry.name
        kind = _entry_kind(entry, prefix)
        if kind is None:
            continue
        entries.append((rel, kind == 'dir'))
        if kind == 'dir':
            _walk_subdir(dir_fd, entry.name, rel, entries)


def _walk_subdir(parent_fd, name, rel, entries):
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        LOG.warning("Backup: directory %s vanished or changed while listed "
                    "(%s), its contents are skipped", rel, exc)
        return
    try:
        _walk_dir(fd, rel + '/', entries)
    finally:
        os.close(fd)


def _entry_kind(entry, prefix):
    """'dir', 'file', or None (skipped) for a directory entry."""
    if not prefix and (entry.name in NOT_DATA
                       or entry.name.startswith(NOT_DATA_PREFIXES)):
        LOG.info("Backup: %s is not data, skipped", entry.name)
        return None
    try:
        if entry.is_symlink():
            LOG.warning("Backup: symlink %s%s skipped (not followed)",
                        prefix, entry.name)
            return None
        if entry.is_dir(follow_symlinks=False):
            return 'dir'
        if entry.is_file(follow_symlinks=False):
            return 'file'
    except FileNotFoundError:
        return None
    LOG.warning("Backup: %s%s is not a regular file or directory "
                "(socket, device or fifo), skipped", prefix, entry.name)
    return None


def _layout(entries):
    top = {rel: is_dir for rel, is_dir in entries if '/' not in rel}
    if top.get('shards') or top.get('.shards') or (
            top.get('_dbs.couch') is False):
        return LAYOUT_COUCHDB3
    for rel, is_dir in entries:
        if (not is_dir and rel.endswith('.couch')) or (
                is_dir and rel.startswith('.') and rel.endswith('_design')):
            return LAYOUT_COUCHDB1
    return LAYOUT_OTHER


def _rank_couchdb3(parts, is_dir):
    if parts[0] == '.shards':
        return 0
    if (len(parts) == 1 and not is_dir and parts[0].startswith('_')
            and parts[0].endswith('.couch')):
        return 1
    if parts[0] == 'shards':
        return 2
    return 3


def _rank_couchdb1(parts, is_dir):
    dirs = parts if is_dir else parts[:-1]
    if parts[0].startswith('.') and any(
            part.endswith('_design') for part in dirs):
        return 0
    if not is_dir and parts[-1].endswith('.couch'):
        return 1
    return 2


_RANKS = {
    LAYOUT_COUCHDB3: _rank_couchdb3,
    LAYOUT_COUCHDB1: _rank_couchdb1,
    LAYOUT_OTHER: lambda parts, is_dir: 0,
}


# --- tar -----------------------------------------------------------------

def write_tar(data_dir, extra_files=None, arcname_prefix='data', *,
              bufsize=BUFSIZE, retries=SHRINK_RETRIES, on_event=None,
              index=None, parent_files=None, delta_prefix='delta',
              pool=None):
    """A streaming pax tar of ``data_dir``: an iterator of bytes chunks.

    Members are ``<arcname_prefix>/<relative path>`` in ``backup_order``,
    preceded by ``<arcname_prefix>/`` for the data dir itself (no prefix:
    bare relative names, no root member).  Headers keep the mode, the
    mtime (to the nanosecond, in a pax record) and the numeric uid/gid.
    ``extra_files`` is a list of (arcname, bytes or path) written after the
    data; bytes are stored 0600.  ``on_event(event, rel)`` is called with
    'open' before a data entry is opened and 'opened' once it is open and
    measured (progress, and a hook for tests that change files mid-copy).

    ``index`` (``increments.Index``) is told every directory and every file
    stored, with the size stored and its ``digest.Digest``.  With
    ``parent_files`` ({relative path: {'size', 'sha256'}}, what the parent
    backup holds), a file whose first ``size`` bytes still have the
    parent's digest (hashed on ``pool``) is stored as a delta member,
    ``<delta_prefix>/<relative path>``, holding only the bytes after them,
    its pax records ``TROVE.base_size`` and ``TROVE.base_sha256`` naming
    the base; one that did not change is not stored at all; any other is
    stored whole.
    """
    extras = _checked_extras(extra_files or [], arcname_prefix)
    writer = _TarWriter(bufsize, retries, on_event, index=index,
                        parent_files=parent_files,
                        delta_prefix=delta_prefix, pool=pool)
    yield from writer.data_dir(data_dir, arcname_prefix)
    for arcname, source in extras:
        yield from writer.extra(arcname, source)
    yield writer.end()


def _checked_extras(extra_files, arcname_prefix):
    checked = []
    for arcname, source in extra_files:
        parts = arcname.split('/')
        if (arcname.startswith('/') or '..' in parts or not parts[-1]
                or (arcname_prefix and parts[0] == arcname_prefix)):
            raise ArchiveError(reason="bad name for an extra file: %r"
                               % arcname)
        checked.append((arcname, source))
    return checked


class _TarWriter:
    """Tar headers and data blocks, keeping count of the offset."""

    def __init__(self, bufsize, retries, on_event, index=None,
                 parent_files=None, delta_prefix='delta', pool=None):
        self.bufsize = bufsize
        self.retries = max(1, retries)
        self.on_event = on_event or (lambda event, rel: None)
        self.offset = 0
        self.index = index
        self.parent_files = parent_files
        self.delta_prefix = delta_prefix
        self.pool = pool

    def _out(self, data):
        self.offset += len(data)
        return data

    def data_dir(self, data_dir, prefix):
        root_fd = os.open(data_dir,
                          os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if prefix:
                yield self._out(_header(prefix, os.fstat(root_fd)))
            for rel in backup_order(data_dir):
                arcname = '%s/%s' % (prefix, rel) if prefix else rel
                yield from self._entry(root_fd, rel, arcname)
        finally:
            os.close(root_fd)

    def _entry(self, root_fd, rel, arcname):
        parts = rel.split('/')
        for attempt in range(1, self.retries + 1):
            self.on_event('open', rel)
            fd = _open_entry(root_fd, parts, rel)
            if fd is None:
                return
            try:
                # A retry stores the file whole: the abandoned member may
                # be a delta, which only a whole file supersedes.
                shortfall = yield from self._member(fd, rel, arcname,
                                                    whole=attempt > 1)
            finally:
                os.close(fd)
            if shortfall is None:
                return
            LOG.warning("Backup: %s shrank from %s to %s bytes while it was "
                        "copied (attempt %s of %s); the copy is abandoned",
                        rel, *shortfall, attempt, self.retries)
        raise FileShrankError(path=rel, attempts=self.retries,
                              expected=shortfall[0], actual=shortfall[1])

    def _member(self, fd, rel, arcname, whole=False):
        """Yield one member from ``fd``: None, or (expected, got) if short."""
        st = os.fstat(fd)
        self.on_event('opened', rel)
        if stat.S_ISDIR(st.st_mode):
            yield self._out(_header(arcname, st))
            if self.index is not None:
                self.index.directory(rel, st)
            return None
        if not stat.S_ISREG(st.st_mode):
            LOG.warning("Backup: %s is no longer a regular file, skipped",
                        rel)
            return None
        return (yield from self._data_file(fd, rel, arcname, st, whole))

    def _data_file(self, fd, rel, arcname, st, whole=False):
        """A file of the data dir: whole, as a delta, or not at all."""
        base = None if whole else self._unchanged_prefix(fd, rel, st)
        if base is None:
            stored, start, found = 'whole', 0, digest.Digest()
            pax = None
        else:
            start, found = base
            stored = 'delta' if start < st.st_size else 'unchanged'
            arcname = '%s/%s' % (self.delta_prefix, rel)
            pax = {BASE_SIZE: str(start), BASE_SHA256: found.hexdigest()}
        if stored == 'unchanged':
            shortfall = None
        else:
            shortfall = yield from self._file(fd, arcname, st, start=start,
                                              found=found, pax=pax)
        if shortfall is None and self.index is not None:
            self.index.file(rel, st, found, stored)
        return shortfall

    def _unchanged_prefix(self, fd, rel, st):
        """(size, digest) of the part of the file the parent holds, when
        it is unchanged; None when the file must be stored whole."""
        parent = (self.parent_files or {}).get(rel)
        if parent is None:
            return None
        size = parent['size']
        if st.st_size < size:
            LOG.info("Backup: %s is smaller than in the parent backup "
                     "(%d < %d bytes): replaced, stored whole", rel,
                     st.st_size, size)
            return None
        try:
            found = digest.read_prefix(fd, size, self.pool)
        except EOFError:
            return None
        if found.hexdigest() != parent['sha256']:
            LOG.info("Backup: the first %d bytes of %s are not those the "
                     "parent backup holds (replaced or rewritten): stored "
                     "whole", size, rel)
            return None
        return size, found

    def _file(self, fd, arcname, st, start=0, found=None, pax=None):
        """A member of the bytes ``start`` to ``st.st_size`` of ``fd``,
        fed to ``found`` (a Digest) as they are read."""
        size = st.st_size - start
        yield self._out(_header(arcname, st, size, pax))
        if start:
            os.lseek(fd, start, os.SEEK_SET)
        copied = 0
        while copied < size:
            # Reads end on multiples of bufsize in the stream, so that the
            # next stage (gzip, cutting bufsize blocks) takes most of them
            # as they are instead of copying every byte into new blocks.
            room = self.bufsize - self.offset % self.bufsize
            data = os.read(fd, min(room, size - copied))
            if not data:
                break
            copied += len(data)
            if found is not None:
                found.update(data)
            yield self._out(data)
        if copied == size and os.fstat(fd).st_size >= start + size:
            yield self._out(_padding(size))
            return None
        # The header is out: complete the member with zeros.
        yield self._out(bytes(_block_end(size) - copied))
        return (start + size, os.fstat(fd).st_size)

    def extra(self, arcname, source):
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            yield self._out(_make_header(
                arcname, tarfile.REGTYPE, 0o600, os.getuid(), os.getgid(),
                time.time_ns(), len(data)))
            yield self._out(data + _padding(len(data)))
            return
        yield from self._extra_path(arcname, os.fspath(source))

    def _extra_path(self, arcname, path):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ArchiveError(reason="cannot read %s for %s: %s"
                               % (path, arcname, exc)) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ArchiveError(reason="%s is not a regular file" % path)
            shortfall = yield from self._file(fd, arcname, st)
        finally:
            os.close(fd)
        if shortfall is not None:
            raise FileShrankError(path=path, attempts=1,
                                  expected=shortfall[0],
                                  actual=shortfall[1])

    def end(self):
        """Two zero blocks, then zeros up to a whole record."""
        size = self.offset + 2 * BLOCKSIZE
        return bytes(2 * BLOCKSIZE + (-size % RECORDSIZE))


def _open_entry(root_fd, parts, rel):
    """Open one listed entry (no links followed), or None if it is gone."""
    try:
        parent = open_dir_beneath(root_fd, parts[:-1])
        try:
            return os.open(parts[-1], READ_FLAGS, dir_fd=parent)
        finally:
            os.close(parent)
    except FileNotFoundError:
        LOG.info("Backup: %s disappeared before it was copied (deleted), "
                 "skipped", rel)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            raise
        LOG.warning("Backup: %s became a symlink, socket or non-directory "
                    "while the backup ran (%s), skipped", rel, exc)
    return None


def _header(arcname, st, size=0, pax=None):
    """The header of a directory, or a file of ``size``, from ``st``."""
    kind = tarfile.DIRTYPE if stat.S_ISDIR(st.st_mode) else tarfile.REGTYPE
    return _make_header(arcname, kind, stat.S_IMODE(st.st_mode), st.st_uid,
                        st.st_gid, st.st_mtime_ns, size, pax)


def _make_header(arcname, kind, mode, uid, gid, mtime_ns, size, pax=None):
    """Pax header block(s): numeric owner, mtime to the nanosecond, and
    the records ``pax``."""
    info = tarfile.TarInfo(arcname)
    info.type = kind
    info.size = size
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ''
    info.mtime = mtime_ns // 10**9
    info.pax_headers = dict(pax or {}, mtime=format_mtime_ns(mtime_ns))
    return info.tobuf(tarfile.PAX_FORMAT, 'utf-8', 'surrogateescape')


def format_mtime_ns(mtime_ns):
    """A pax time value ('1700000000.123456789') from nanoseconds."""
    seconds, nanos = divmod(mtime_ns, 10**9)
    return '%d.%09d' % (seconds, nanos)


def parse_mtime_ns(value):
    """Nanoseconds from a pax time value; None if it is not one."""
    seconds, _, fraction = value.partition('.')
    if not fraction:
        fraction = '0'
    sign = -1 if seconds.startswith('-') else 1
    seconds = seconds.lstrip('-')
    if not (seconds.isdigit() and fraction.isdigit()):
        return None
    nanos = int((fraction + '0' * 9)[:9])
    return sign * (int(seconds) * 10**9 + nanos)


def _block_end(size):
    return size + (-size % BLOCKSIZE)


def _padding(size):
    return NUL * (-size % BLOCKSIZE)
