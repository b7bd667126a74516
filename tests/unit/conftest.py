"""Unit-test fixtures: a clean global configuration for every test, and
a look at the page cache."""

import ctypes
import mmap
import os

from oslo_config import cfg
import pytest

import trove.common.cfg  # noqa: F401  (registers the options)


class Conf:
    """Overrides options of ``cfg.CONF`` for one test."""

    def config(self, group=None, **kwargs):
        for name, value in kwargs.items():
            cfg.CONF.set_override(name, value, group=group)


@pytest.fixture(autouse=True)
def conf(tmp_path):
    """``cfg.CONF`` with a private state dir; every override undone after."""
    overrides = Conf()
    overrides.config(guest_state_dir=str(tmp_path / 'state'), guest_id='g-1')
    yield overrides
    cfg.CONF.reset()


class PageCache:
    """Which pages of a file are in the page cache: mincore(2) over a
    read-only mapping (mapping a file does not read it in)."""

    PAGE = mmap.PAGESIZE

    def __init__(self):
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.mmap.restype = ctypes.c_void_p
        self._libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                                    ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                    ctypes.c_long]
        self._libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self._libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                                       ctypes.c_void_p]

    def resident(self, path):
        """One bool per page of ``path``."""
        size = os.path.getsize(path)
        if not size:
            return []
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = self._libc.mmap(None, size, mmap.PROT_READ,
                                   mmap.MAP_SHARED, fd, 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), 'mmap %s' % path)
        finally:
            os.close(fd)
        try:
            pages = (size + self.PAGE - 1) // self.PAGE
            vec = (ctypes.c_ubyte * pages)()
            if self._libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), 'mincore %s' % path)
            return [bool(v & 1) for v in vec]
        finally:
            self._libc.munmap(addr, size)

    def resident_bytes(self, path, start, end):
        """Bytes of [start, end) of ``path`` in the page cache."""
        pages = self.resident(path)[start // self.PAGE:end // self.PAGE]
        return sum(pages) * self.PAGE


@pytest.fixture
def page_cache():
    return PageCache()
