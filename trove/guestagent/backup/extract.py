"""The archive stage of a restore: safe streaming extraction, staged swap.

The archive comes from object storage a tenant can write to: every member
is suspect.  ``safe_extract`` writes only regular files and directories,
only under ``dest_dir``: absolute names (except upstream's legacy
``/var/lib/couchdb/...`` when ``legacy_root`` says so), ``..``, links,
devices, fifos, and names too long for the file system are refused with
``UnsafeArchiveError`` before anything is written for that member.  Every
path is created one component at a time relative to a directory descriptor
with ``O_NOFOLLOW`` (and files with ``O_EXCL``), so a symlink already inside
``dest_dir`` cannot redirect a write; the parent's real path is checked as
well.  Set-uid, set-gid and sticky bits and group/other write are dropped;
owners come from ``owner``, never from the archive.

``staged_restore`` extracts into a hidden staging directory INSIDE
``dest_dir`` (``dest_dir`` is usually the volume's mount point: the staging
dir is on the same file system, so the final moves are renames, and the
parent need not be writable).  Only ``commit()`` swaps the staged entries in;
any error or a missing commit removes the staging dir and leaves the
contents of ``dest_dir`` as they were.
"""

import contextlib
import dataclasses
import os
import errno
import shutil
import stat
import tarfile
import tempfile

from oslo_log import log as logging

from trove.common import files
from trove.guestagent.backup.archive import (
    ArchiveError, BASE_SHA256, BASE_SIZE, DIR_FLAGS, NOT_DATA,
    open_dir_beneath, parse_mtime_ns)
from trove.guestagent.backup import digest

LOG = logging.getLogger(__name__)

# Non-data members (config/, meta/) are returned in memory: each below
# this size, all together at most MAX_EXTRAS_TOTAL.
MAX_EXTRA_SIZE = 1024 * 1024
MAX_EXTRAS_TOTAL = 16 * 1024 * 1024
# A pax or GNU long-name header larger than this is refused unread.
MAX_HEADER_SIZE = 1024 * 1024
NAME_MAX = 255
PATH_MAX = 4096

FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
CREATE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                | os.O_CLOEXEC)
# Bytes of a restored file written between two starts of write-back, and
# the restored bytes held in the page cache at most (files.WriteBehind).
WRITEBACK_STEP = 16 * 1024 * 1024
PAGE_CACHE_WINDOW = 4 * WRITEBACK_STEP
STAGING_PREFIX = '.trove-restore-'
OLD_PREFIX = '.trove-old-'


class UnsafeArchiveError(ArchiveError):
    message = "Archive member '%(member)s' refused: %(reason)s."


class CorruptArchiveError(ArchiveError):
    message = "The archive is not a valid tar stream: %(reason)s."


class DeltaBaseError(ArchiveError):
    message = ("The delta of '%(member)s' does not apply to the file the "
               "earlier backups restored: %(reason)s.")


class RestoredFilesError(ArchiveError):
    message = ("The restored files are not those the backup recorded: "
               "%(reason)s.")


@dataclasses.dataclass
class ExtractResult:
    """What ``safe_extract`` wrote, and the non-data members it kept."""

    files: int = 0
    deltas: int = 0
    directories: int = 0
    bytes: int = 0
    # [(member name, bytes)] of the small non-data members, in order.
    extras: list = dataclasses.field(default_factory=list)

    def extra(self, name):
        """The bytes of the last non-data member ``name``, or None."""
        found = [data for member, data in self.extras if member == name]
        return found[-1] if found else None


class _SafeTarInfo(tarfile.TarInfo):
    """Refuses oversized extended headers and sparse files before reading."""

    def _proc_member(self, tarfile_):
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise UnsafeArchiveError(member=self.name,
                                     reason="sparse files are not supported")
        if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE,
                         tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                         tarfile.GNUTYPE_LONGLINK) and (
                self.size > MAX_HEADER_SIZE):
            raise UnsafeArchiveError(
                member=self.name,
                reason="extended header of %s bytes" % self.size)
        return super()._proc_member(tarfile_)

    @classmethod
    def fromtarfile(cls, tarfile_):
        """Only a zero block ends the archive: a damaged header or a
        stream cut short is an error, where tarfile would just stop."""
        try:
            return super().fromtarfile(tarfile_)
        except (tarfile.InvalidHeaderError, tarfile.TruncatedHeaderError,
                tarfile.EmptyHeaderError) as exc:
            raise CorruptArchiveError(
                reason="no valid header at offset %s (%s): damaged or "
                "truncated" % (tarfile_.offset, exc or 'end of stream')
            ) from None


class ChunkReader:
    """A forward-only file over an iterator of bytes chunks.

    tarfile reads headers through ``read``/``seek``/``tell`` (a forward
    ``seek`` skips bytes; a backward one is an error); file data goes
    straight from the chunks to the files through ``chunks``, without the
    copies tarfile's own reading would make.
    """

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._chunk = b''
        self._pos = 0
        self._offset = 0  # stream offset of self._chunk[0]

    def tell(self):
        return self._offset + self._pos

    def _next_chunk(self):
        self._offset += len(self._chunk)
        chunk = next(self._chunks, None)
        if chunk is None:
            self._chunk, self._pos = b'', 0
            return False
        self._chunk, self._pos = chunk, 0
        return True

    def read(self, size=-1):
        if size < 0:
            while self._pos >= len(self._chunk):
                if not self._next_chunk():
                    return b''
            size = len(self._chunk) - self._pos
        return b''.join(bytes(piece) for piece in self.chunks(size))

    def chunks(self, size):
        """The next ``size`` bytes (fewer at the end of the stream), as
        the chunks they are in: whole chunks are not copied."""
        while size > 0:
            while self._pos >= len(self._chunk):
                if not self._next_chunk():
                    return
            end = min(len(self._chunk), self._pos + size)
            if self._pos == 0 and end == len(self._chunk):
                piece = self._chunk
            else:
                piece = memoryview(self._chunk)[self._pos:end]
            size -= end - self._pos
            self._pos = end
            yield piece

    def seek(self, offset, whence=os.SEEK_SET):
        if whence == os.SEEK_CUR:
            offset += self.tell()
        elif whence != os.SEEK_SET:
            raise OSError(errno.ESPIPE, "a backup stream only seeks ahead")
        if offset < self.tell():
            raise OSError(errno.ESPIPE, "a backup stream cannot seek back "
                          "(from %s to %s)" % (self.tell(), offset))
        for _ in self.chunks(offset - self.tell()):
            pass
        return self.tell()

    def drain(self):
        """Read the stream to its end, past the end-of-archive blocks and
        record padding: the stages before this one (decryption with its
        authentication tag, checksums) complete only at the end."""
        self._chunk, self._pos = b'', 0
        for _ in self._chunks:
            pass


def safe_extract(chunks, dest_dir, *, strip_prefix='data/', legacy_root=None,
                 owner=None, delta_prefix='delta/', digests=None):
    """Extract a tar stream (an iterator of bytes chunks) into ``dest_dir``.

    Members under ``strip_prefix`` are written below ``dest_dir`` with that
    prefix removed (an empty prefix: every member is data).  With
    ``legacy_root`` (e.g. '/var/lib/couchdb'), absolute names under it map
    into ``dest_dir`` too; any other absolute name is refused.  Other
    members (``config/``, ``meta/``...) are not written but returned in
    ``ExtractResult.extras`` if small.  ``owner`` (uid, gid) is given to
    everything created.  Raises ``UnsafeArchiveError`` naming the first bad
    member, ``CorruptArchiveError`` for a damaged or truncated stream; what
    was written before stays (``staged_restore`` removes it).

    ``digests`` ({relative path: digest.Digest}), when given, follows the
    bytes of every file written, across the links of an incremental chain
    extracted one after the other into the same ``dest_dir``.  Members
    under ``delta_prefix`` (an incremental backup's) are appended to the
    file an earlier link wrote, once its size and digest are those the
    member names as its base (``DeltaBaseError`` otherwise); without
    ``digests`` a delta member is refused.
    """
    reader = ChunkReader(chunks)
    mapper = _NameMapper(strip_prefix, legacy_root, delta_prefix)
    root_fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with files.WriteBehind(PAGE_CACHE_WINDOW) as write_behind:
            extractor = _Extractor(root_fd, mapper, owner, write_behind,
                                   digests)
            _extract_stream(reader, extractor)
            extractor.finish_directories()
    finally:
        os.close(root_fd)
    reader.drain()
    return extractor.result


def _extract_stream(reader, extractor):
    try:
        archive = tarfile.open(fileobj=reader, mode='r:',
                               tarinfo=_SafeTarInfo, encoding='utf-8',
                               errors='surrogateescape')
        with archive:
            while True:
                member = archive.next()
                if member is None:
                    break
                archive.members.clear()  # keep memory flat
                if member.sparse is not None:
                    raise UnsafeArchiveError(
                        member=member.name,
                        reason="sparse files are not supported")
                extractor.member(reader, member)
    except (tarfile.TarError, EOFError) as exc:
        raise CorruptArchiveError(
            reason=str(exc) or type(exc).__name__) from exc


class _NameMapper:
    """Member name -> ('data' or 'delta', [components]) or ('extra', name).
    """

    def __init__(self, strip_prefix, legacy_root, delta_prefix=None):
        self.prefix = _split(strip_prefix or '')
        self.delta = _split(delta_prefix or '') or None
        self.legacy = None
        if legacy_root is not None:
            self.legacy = _split(legacy_root)
            if not self.legacy:
                raise ArchiveError(reason="legacy_root %r maps every "
                                   "absolute name" % legacy_root)

    def map(self, name):
        if '\0' in name:
            raise UnsafeArchiveError(member=name, reason="NUL in its name")
        parts = name.split('/')
        if '..' in parts:
            raise UnsafeArchiveError(member=name, reason="'..' in its name")
        clean = _split(name)
        _check_lengths(name, clean)
        if self.legacy is not None and clean[:len(self.legacy)] == (
                self.legacy):
            return 'data', clean[len(self.legacy):]
        if name.startswith('/'):
            raise UnsafeArchiveError(member=name, reason="absolute name")
        if self.delta and clean[:len(self.delta)] == self.delta:
            return 'delta', clean[len(self.delta):]
        if clean[:len(self.prefix)] == self.prefix:
            return 'data', clean[len(self.prefix):]
        return 'extra', '/'.join(clean)


def _split(name):
    return [part for part in name.split('/') if part not in ('', '.')]


def _check_lengths(name, parts):
    if len(os.fsencode(name)) > PATH_MAX:
        raise UnsafeArchiveError(member=name[:200] + '...',
                                 reason="name longer than %s bytes"
                                 % PATH_MAX)
    for part in parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UnsafeArchiveError(member=name[:200] + '...',
                                     reason="a name component longer than "
                                     "%s bytes" % NAME_MAX)


def _kind(member):
    if member.isdir():
        return 'dir'
    if member.type in FILE_TYPES:
        return 'file'
    if member.issym() or member.islnk():
        what = 'a %s to %r' % ('symlink' if member.issym() else 'hardlink',
                               member.linkname)
    elif member.ischr() or member.isblk():
        what = 'a device'
    elif member.isfifo():
        what = 'a fifo'
    else:
        what = 'of unknown type %r' % member.type
    raise UnsafeArchiveError(member=member.name,
                             reason="it is %s; only regular files and "
                             "directories are restored" % what)


def _mtime_ns(member):
    value = member.pax_headers.get('mtime')
    mtime_ns = parse_mtime_ns(value) if value else None
    return int(member.mtime * 10**9) if mtime_ns is None else mtime_ns


def _delta_base(member):
    """(size, sha256) of the base a delta member names."""
    size = member.pax_headers.get(BASE_SIZE, '')
    sha256 = member.pax_headers.get(BASE_SHA256, '')
    if not (size.isdigit() and len(sha256) == 64
            and all(c in '0123456789abcdef' for c in sha256)):
        raise UnsafeArchiveError(member=member.name,
                                 reason="a delta without a valid base")
    return int(size), sha256


def _safe_mode(mode):
    """Owner bits kept, group/other write and s-uid/s-gid/sticky dropped."""
    return mode & 0o755


class _Extractor:
    """Writes members under the root descriptor, never through a link."""

    def __init__(self, root_fd, mapper, owner, write_behind, digests=None):
        self.digests = digests
        self.root_fd = root_fd
        self.mapper = mapper
        self.owner = owner
        self.write_behind = write_behind
        self.root_real = _fd_path(root_fd)
        self.result = ExtractResult()
        self.extras_total = 0
        self.directories = []  # (parts, mode, mtime_ns): applied last

    def member(self, reader, member):
        kind = _kind(member)
        where, name = self.mapper.map(member.name)
        if where == 'extra':
            if kind == 'file':
                self._keep_extra(reader, member, name)
            return
        if where == 'delta':
            if kind != 'file' or not name:
                raise UnsafeArchiveError(member=member.name,
                                         reason="a delta is of a file")
            self._delta(reader, member, name)
            return
        if not name:
            return  # the data dir itself: dest_dir is left as it is
        if kind == 'dir':
            self._directory(member, name)
        else:
            self._file(reader, member, name)

    def _directory(self, member, parts):
        fd = self._open_dir(member, parts)
        os.close(fd)
        self.directories.append((parts, _safe_mode(member.mode),
                                 _mtime_ns(member)))
        self.result.directories += 1

    def _open_dir(self, member, parts):
        try:
            fd = open_dir_beneath(self.root_fd, parts, create=True,
                                  mode=0o755, owner=self.owner)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise UnsafeArchiveError(
                member=member.name,
                reason="its path goes through a symlink or a file already "
                "in the destination (%s)" % exc.strerror) from exc
        self._check_inside(member, fd)
        return fd

    def _check_inside(self, member, fd):
        real = _fd_path(fd)
        if real is None or self.root_real is None:
            return
        if real != self.root_real and not real.startswith(
                self.root_real.rstrip('/') + '/'):
            os.close(fd)
            raise UnsafeArchiveError(member=member.name,
                                     reason="it resolves to %s, outside the "
                                     "destination" % real)

    def _file(self, reader, member, parts):
        parent = self._open_dir(member, parts[:-1])
        try:
            fd = self._create(parent, parts[-1], member)
            try:
                found = None if self.digests is None else digest.Digest()
                self._copy(reader, fd, member, found)
                self._finish_file(fd, member)
            finally:
                os.close(fd)
        finally:
            os.close(parent)
        if found is not None:
            self.digests['/'.join(parts)] = found
        self.result.files += 1

    def _finish_file(self, fd, member):
        os.fchmod(fd, _safe_mode(member.mode))
        if self.owner is not None:
            os.fchown(fd, *self.owner)
        mtime_ns = _mtime_ns(member)
        os.utime(fd, ns=(mtime_ns, mtime_ns))

    def _delta(self, reader, member, parts):
        """Append a delta member to the file an earlier link restored."""
        rel = '/'.join(parts)
        if self.digests is None:
            raise UnsafeArchiveError(
                member=member.name, reason="a delta of an incremental "
                "backup, restored without the backups it builds on")
        base_size, base_sha256 = _delta_base(member)
        found = self.digests.get(rel)
        if found is None:
            raise DeltaBaseError(member=member.name, reason="no earlier "
                                 "backup of the chain holds the file")
        if found.length != base_size or found.hexdigest() != base_sha256:
            raise DeltaBaseError(
                member=member.name, reason="it builds on %d bytes of digest "
                "%s, the file restored holds %d bytes of digest %s" % (
                    base_size, base_sha256, found.length,
                    found.hexdigest()))
        parent = self._open_dir(member, parts[:-1])
        try:
            fd = os.open(parts[-1], os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=parent)
        except OSError as exc:
            os.close(parent)
            raise DeltaBaseError(member=member.name, reason="the file "
                                 "restored cannot be opened (%s)"
                                 % exc.strerror) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != base_size:
                raise DeltaBaseError(
                    member=member.name, reason="the file restored holds %d "
                    "bytes, not %d" % (st.st_size, base_size))
            os.lseek(fd, base_size, os.SEEK_SET)
            self._copy(reader, fd, member, found, start=base_size)
            self._finish_file(fd, member)
        finally:
            os.close(fd)
            os.close(parent)
        self.result.deltas += 1

    def _create(self, parent, name, member):
        """A new file; a regular file of the same name (an earlier member
        superseded by this one) is replaced, anything else refused."""
        try:
            return os.open(name, CREATE_FLAGS, 0o600, dir_fd=parent)
        except FileExistsError:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeArchiveError(
                    member=member.name,
                    reason="a non-regular file (symlink or directory) of "
                    "that name is in the destination") from None
            os.unlink(name, dir_fd=parent)
            return os.open(name, CREATE_FLAGS, 0o600, dir_fd=parent)

    def _copy(self, reader, fd, member, found=None, start=0):
        reader.seek(member.offset_data)
        copied = 0
        flushed = start
        for data in reader.chunks(member.size):
            view = memoryview(data)
            if found is not None:
                found.update(view)
            while view:
                view = view[os.write(fd, view):]
            copied += len(data)
            if start + copied - flushed >= WRITEBACK_STEP:
                # The commit syncs everything; writing back as we go
                # overlaps the disk with the rest of the restore, and
                # lets the pages written be reused.
                self.write_behind.written(fd, flushed,
                                          start + copied - flushed)
                flushed = start + copied
        self.write_behind.written(fd, flushed, start + copied - flushed)
        if copied != member.size:
            raise CorruptArchiveError(reason="member %s holds %s of %s bytes"
                                      % (member.name, copied, member.size))
        self.result.bytes += copied

    def _keep_extra(self, reader, member, name):
        if member.size >= MAX_EXTRA_SIZE or (
                self.extras_total + member.size > MAX_EXTRAS_TOTAL):
            raise UnsafeArchiveError(member=member.name,
                                     reason="a non-data member of %s bytes "
                                     "is too large to keep" % member.size)
        reader.seek(member.offset_data)
        data = b''.join(reader.chunks(member.size))
        if len(data) != member.size:
            raise CorruptArchiveError(reason="member %s is truncated"
                                      % member.name)
        self.extras_total += len(data)
        self.result.extras.append((name, data))

    def finish_directories(self):
        """Directory modes and mtimes, once nothing more is written in them."""
        for parts, mode, mtime_ns in reversed(self.directories):
            fd = open_dir_beneath(self.root_fd, parts)
            try:
                os.fchmod(fd, mode | 0o700)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)


def _fd_path(fd):
    """The real path of an open directory, None without /proc."""
    with contextlib.suppress(OSError):
        return os.readlink('/proc/self/fd/%d' % fd)
    return None


# --- staged restore -------------------------------------------------------

class StagedRestore:
    """A staging directory inside ``dest_dir`` and the swap that ends it."""

    def __init__(self, dest_dir):
        self.dest_dir = os.path.abspath(dest_dir)
        self.committed = False
        st = os.stat(self.dest_dir)
        self._dest_times = (st.st_atime_ns, st.st_mtime_ns)
        self.path = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.dest_dir)
        self.name = os.path.basename(self.path)

    def commit(self):
        """Replace the contents of ``dest_dir`` with the staged entries.

        The staged data is synced first; the old entries are moved into a
        hidden directory, the staged ones renamed in, then the old removed.
        If a move fails, the moves done are undone and ``ArchiveError`` is
        raised.  ``lost+found`` stays as it is.  Leftovers of a failed
        cleanup (hidden ``.trove-*`` dirs) are logged, skipped by backups and
        removed by the next restore.
        """
        if self.committed:
            raise ArchiveError(reason="restore into %s already committed"
                               % self.dest_dir)
        files.sync_filesystem(self.path)
        moved_out, moved_in = [], []
        try:
            old = tempfile.mkdtemp(prefix=OLD_PREFIX, dir=self.dest_dir)
            for name in self._entries(self.dest_dir, (self.name,
                                                      os.path.basename(old))):
                _move(name, self.dest_dir, old)
                moved_out.append(name)
            for name in self._entries(self.path, ()):
                _move(name, self.path, self.dest_dir)
                moved_in.append(name)
        except OSError as exc:
            if moved_out or moved_in:
                self._undo(old, moved_out, moved_in)
            raise ArchiveError(reason="restore swap into %s failed: %s"
                               % (self.dest_dir, exc)) from exc
        self.committed = True
        _fsync_dir(self.dest_dir)
        for leftover in (old, self.path):
            try:
                shutil.rmtree(leftover)
            except OSError as exc:
                LOG.warning("Restore: %s could not be removed: %s",
                            leftover, exc)
        LOG.info("Restore: %s entries of %s replaced by %s restored ones",
                 len(moved_out), self.dest_dir, len(moved_in))

    @staticmethod
    def _entries(directory, skip):
        return sorted(name for name in os.listdir(directory)
                      if name not in skip and name not in NOT_DATA)

    def _undo(self, old, moved_out, moved_in):
        for name in reversed(moved_in):
            _move(name, self.dest_dir, self.path)
        for name in reversed(moved_out):
            _move(name, old, self.dest_dir)
        with contextlib.suppress(OSError):
            os.rmdir(old)

    def discard(self):
        """Remove the staging dir; ``dest_dir`` keeps its old contents."""
        shutil.rmtree(self.path)
        os.utime(self.dest_dir, ns=self._dest_times)


@contextlib.contextmanager
def staged_restore(dest_dir):
    """``with staged_restore(d) as stage:`` extract into ``stage.path``,
    verify, then ``stage.commit()``.  Leaving the block with an error or
    without a commit discards the staged data; ``dest_dir`` is unchanged.
    """
    stage = StagedRestore(dest_dir)
    try:
        yield stage
    except BaseException:
        if not stage.committed:
            try:
                stage.discard()
            except OSError:
                LOG.exception("Restore: staging directory %s could not be "
                              "removed", stage.path)
        raise
    if not stage.committed:
        LOG.warning("Restore into %s was not committed; staged data "
                    "discarded", dest_dir)
        stage.discard()


def _move(name, source_dir, target_dir):
    os.rename(os.path.join(source_dir, name), os.path.join(target_dir, name))


def _fsync_dir(path):
    fd = os.open(path, DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- incremental chains ---------------------------------------------------

def remove_deleted(dest_dir, paths, digests):
    """Remove what an incremental backup recorded as deleted since its
    parent: files, then the directories emptied (deepest first).  Names
    are checked as member names are; nothing outside ``dest_dir`` and no
    link is touched."""
    mapper = _NameMapper('', None)
    targets = []
    for rel in paths:
        _where, parts = mapper.map(rel)
        if parts:
            targets.append(parts)
    targets.sort(key=lambda parts: (-len(parts), parts))
    root_fd = os.open(dest_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for parts in targets:
            _remove_beneath(root_fd, parts)
            digests.pop('/'.join(parts), None)
    finally:
        os.close(root_fd)


def _remove_beneath(root_fd, parts):
    try:
        parent = open_dir_beneath(root_fd, parts[:-1])
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise RestoredFilesError(
            reason="%s, deleted before the backup, is under a symlink or a "
            "file (%s)" % ('/'.join(parts), exc.strerror)) from exc
    try:
        try:
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(parts[-1], dir_fd=parent)
            except OSError as exc:
                raise RestoredFilesError(
                    reason="directory %s, deleted before the backup, still "
                    "holds files (%s)" % ('/'.join(parts), exc.strerror)
                ) from exc
        else:
            os.unlink(parts[-1], dir_fd=parent)
    finally:
        os.close(parent)


def verify_files(dest_dir, expected, digests, limit=5):
    """Check the files under ``dest_dir`` against a backup's index.

    ``expected`` is {relative path: {'size', 'sha256'}}: every file must be
    there with that size and the digest ``digests`` followed while it was
    written, and no other file may be.  Raises ``RestoredFilesError``
    naming the first ``limit`` differences.
    """
    found = {}
    root = os.path.abspath(dest_dir)
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, root)] = os.lstat(path)
    problems = ['%s is missing' % rel for rel in sorted(
        set(expected) - set(found))]
    problems += ['%s was not in the backup' % rel for rel in sorted(
        set(found) - set(expected))]
    for rel in sorted(set(found) & set(expected)):
        entry, st = expected[rel], found[rel]
        followed = digests.get(rel)
        if not stat.S_ISREG(st.st_mode) or st.st_size != entry['size']:
            problems.append('%s holds %d bytes, the backup recorded %d'
                            % (rel, st.st_size, entry['size']))
        elif followed is None or followed.length != entry['size'] or (
                followed.hexdigest() != entry['sha256']):
            problems.append('%s does not have the digest the backup '
                            'recorded' % rel)
    if problems:
        more = len(problems) - limit
        raise RestoredFilesError(reason='; '.join(problems[:limit]) + (
            ' and %d more' % more if more > 0 else ''))
