"""Files the agent writes: whole or not at all."""

import contextlib
import os
import tempfile


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
