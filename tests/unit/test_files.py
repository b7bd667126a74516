"""Files written whole or not at all, and file system write-back."""

import ctypes
import os
import stat

import pytest

from trove.common import files

MIB = 1024 * 1024


def test_write_atomically_replaces_with_mode(tmp_path):
    path = tmp_path / 'secret'
    path.write_bytes(b'old')
    files.write_atomically(str(path), b'new', 0o600)
    assert path.read_bytes() == b'new'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ['secret']  # no temporary file left


class _CacheStat(ctypes.Structure):
    """struct cachestat, what cachestat(2) says of a file's pages."""
    _fields_ = [(name, ctypes.c_uint64) for name in (
        'nr_cache', 'nr_dirty', 'nr_writeback', 'nr_evicted',
        'nr_recently_evicted')]


_CACHESTAT = 451    # the syscall's number on every architecture


def _unwritten_pages(path):
    """Pages of ``path`` in the page cache not yet on disk (dirty or
    being written): cachestat(2) over the whole file."""
    libc = ctypes.CDLL(None, use_errno=True)
    whole_file = (ctypes.c_uint64 * 2)(0, 0)    # from 0 to the end
    pages = _CacheStat()
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syscall(ctypes.c_long(_CACHESTAT), fd, whole_file,
                        ctypes.byref(pages), 0) != 0:
            err = ctypes.get_errno()
            raise AssertionError('cachestat(2) (Linux 6.5 or later) is '
                                 'needed to see dirty pages: %s'
                                 % os.strerror(err))
    finally:
        os.close(fd)
    return pages.nr_dirty + pages.nr_writeback


def test_sync_filesystem_writes_back_the_file_system_of_a_path(tmp_path):
    data = tmp_path / 'data'
    data.write_bytes(os.urandom(MIB))
    files.sync_filesystem(str(tmp_path))
    assert _unwritten_pages(data) == 0
    # A file's path names its file system too.
    with open(data, 'ab') as f:
        f.write(os.urandom(MIB))
    files.sync_filesystem(str(data))
    assert _unwritten_pages(data) == 0


def test_sync_filesystem_of_a_missing_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.sync_filesystem(str(tmp_path / 'missing'))


def _write_in_steps(path, steps, write_behind, step=MIB):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for index in range(steps):
            os.write(fd, bytes([index]) * step)
            write_behind.written(fd, index * step, step)
    finally:
        os.close(fd)


def test_write_behind_drops_what_it_wrote_beyond_its_window(tmp_path,
                                                            page_cache):
    kept, dropped = tmp_path / 'kept', tmp_path / 'dropped'
    with files.WriteBehind(window=2 * MIB) as write_behind:
        _write_in_steps(dropped, 8, write_behind)
    with files.WriteBehind(window=64 * MIB) as write_behind:
        _write_in_steps(kept, 8, write_behind)
    # Without dropping, written pages stay cached: the check can see both.
    assert page_cache.resident_bytes(kept, 0, 8 * MIB) == 8 * MIB
    assert page_cache.resident_bytes(dropped, 0, 6 * MIB) == 0
    # The data is on the file all the same.
    data = dropped.read_bytes()
    assert [data[i * MIB] for i in range(8)] == list(range(8))
    assert data == b''.join(bytes([i]) * MIB for i in range(8))


def test_write_behind_holds_a_bounded_number_of_descriptors(tmp_path):
    def open_fds():
        return len(os.listdir('/proc/self/fd'))

    before = open_fds()
    most = 0
    with files.WriteBehind(window=64 * MIB, max_ranges=8) as write_behind:
        for index in range(100):     # small files: the count bounds them
            _write_in_steps(tmp_path / str(index), 1, write_behind,
                            step=4096)
            most = max(most, open_fds())
        assert open_fds() == before + 8
    assert most == before + 8
    assert open_fds() == before


def test_write_behind_is_advisory_where_the_kernel_refuses(tmp_path,
                                                           monkeypatch):
    def refuse(*_args):
        raise OSError(22, 'Invalid argument')

    monkeypatch.setattr(os, 'posix_fadvise', refuse)
    path = tmp_path / 'data'
    with files.WriteBehind(window=MIB) as write_behind:
        _write_in_steps(path, 4, write_behind)
    assert path.read_bytes() == b''.join(bytes([i]) * MIB for i in range(4))
