"""Files the agent writes: whole or not at all."""

import contextlib
import ctypes
import os
import tempfile

_libc = ctypes.CDLL(None, use_errno=True)


def write_atomically(path, data, mode, owner=None):
    """Replace ``path`` with ``data`` (bytes): temp file, fsync, rename.

    The temporary file is created 0600 in the same directory, given
    ``mode`` (and ``owner``, a (uid, gid) pair) before it takes the name.
    """
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(dir=directory, suffix='.tmp',
                               prefix='.%s.' % os.path.basename(path))
    try:
        with os.fdopen(fd, 'wb') as stream:
            os.fchmod(stream.fileno(), mode)
            if owner is not None:
                os.fchown(stream.fileno(), *owner)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sync_filesystem(path):
    """Write back the file system holding ``path``, and only that one.

    syncfs(2): a restore waits for its own data, not for every dirty page
    of the machine as sync(2) would.  Where the C library has no syncfs,
    sync(2) it is.
    """
    syncfs = getattr(_libc, 'syncfs', None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, 'syncfs %s: %s' % (path, os.strerror(err)))
    finally:
        os.close(fd)


# sync_file_range(2) flag: start writing back, do not wait.
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd, offset, nbytes):
    """Start writing ``nbytes`` at ``offset`` of ``fd`` to disk, without
    waiting: a later sync then finds little left to do.  Advisory: where
    sync_file_range(2) is missing or refused, nothing happens."""
    sync_file_range = getattr(_libc, 'sync_file_range', None)
    if sync_file_range is None:
        return
    sync_file_range(fd, ctypes.c_longlong(offset), ctypes.c_longlong(nbytes),
                    ctypes.c_uint(_SYNC_FILE_RANGE_WRITE))
