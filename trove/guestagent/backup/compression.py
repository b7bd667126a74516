"""Streaming gzip: parallel compression and parallel, strict decompression.

Both stages take an iterable of bytes chunks and return an iterator of bytes
chunks; memory stays bounded whatever the length of the stream.

``gzip_compress`` cuts its input into blocks and deflates them side by side
in a thread pool (the engines release the GIL), each block as an
independent gzip member.  Concatenated members are a valid gzip file (RFC
1952, section 2.2): ``gzip -dc``, ``pigz -dc`` and Python's ``gzip`` module
read them.  Each member's header carries, in an extra field (FEXTRA,
subfield ``TR``, as BGZF carries ``BC``), the member's own size in bytes:
a reader finds where the next member starts without inflating, so
``gzip_decompress`` inflates several members at once and writes them in
order.  Readers that do not know the subfield skip it, as RFC 1952 asks.

``gzip_decompress`` reads any gzip stream, multi-member included: members
that carry their size inflate in parallel; from the first member that does
not (older backups of this project, upstream Trove's ``gzip`` output) the
rest of the stream inflates on one thread.  Every member's CRC-32 and
length are checked, and a truncated stream, trailing garbage and an empty
stream are refused.

The engine is ISA-L (``isal``) by default: on CouchDB 3.5 data, at its
level 2, it deflates 4-5x faster than the standard library's zlib at
level 1, to slightly smaller objects, and inflates twice as fast
(``tools/bench_engines.py``, ``tools/bench_backup.py``).
The standard library's zlib stays available (``backup_compression_engine
= zlib``); both read what either wrote.
"""

import collections
from concurrent import futures
import struct
import zlib

from isal import isal_zlib
from oslo_log import log as logging

from trove.common import exception

LOG = logging.getLogger(__name__)

MiB = 1024 * 1024
GZIP_MAGIC = b'\x1f\x8b\x08'
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around deflate
_RAW_WBITS = -zlib.MAX_WBITS       # bare deflate
# Input handed to an inflater at once when decompressing on one thread:
# zlib copies the input it has not consumed yet on every bounded call, so a
# huge chunk goes in slices.
_INFLATE_SLICE = 256 * 1024

# A member's header: magic, deflate, FLG = FEXTRA, MTIME 0, XFL 0, OS 3
# (Unix), XLEN 8, then the subfield 'TR' of 4 bytes: the member's size.
_FEXTRA = 0x04
_SIZED_HEADER = struct.Struct('<3sBIBBH2sHI')
_SIZED_PREFIX = GZIP_MAGIC + bytes([_FEXTRA])
_SUBFIELD = b'TR'
_TRAILER = struct.Struct('<II')          # CRC-32, ISIZE
# A sized member larger than this (or inflating to more) is inflated on
# one thread, streaming: parallel inflate holds whole members in memory.
MAX_PARALLEL_MEMBER = 64 * MiB


class Engine:
    """A deflate implementation with the zlib module's interface."""

    def __init__(self, name, module, levels, default_level):
        self.name = name
        self.module = module
        self.levels = levels
        self.default_level = default_level
        self.error = module.error

    def check_level(self, level):
        if level not in self.levels:
            raise ValueError("%s compression levels are %s-%s, got %s" % (
                self.name, self.levels[0], self.levels[-1], level))
        return level

    def compressobj(self, level, wbits):
        return self.module.compressobj(level, zlib.DEFLATED, wbits)

    def decompressobj(self, wbits=_GZIP_WBITS):
        return self.module.decompressobj(wbits)

    def crc32(self, data):
        return self.module.crc32(data)

    def __repr__(self):
        return '<Engine %s>' % self.name


# ISA-L knows levels 0-3.  Its level 2, the default, writes objects a
# little smaller than zlib's level 1 at 4-5x its speed; its level 1 is
# hardly faster and 4% larger, its level 3 half as fast (measured on
# CouchDB 3.5 data by tools/bench_engines.py: the README).
ENGINES = {
    'isal': Engine('isal', isal_zlib, range(0, 4), 2),
    'zlib': Engine('zlib', zlib, range(0, 10), 1),
}
DEFAULT_ENGINE = 'isal'


def engine(name=None):
    """The engine called ``name`` (the default one for None)."""
    try:
        return ENGINES[name or DEFAULT_ENGINE]
    except KeyError:
        raise ValueError("unknown gzip engine %r (known: %s)" % (
            name, ', '.join(sorted(ENGINES)))) from None


class BackupIntegrityError(exception.TroveError):
    """A backup stream is damaged, truncated or not what it claims to be."""

    message = "The backup stream is damaged: %(reason)s"


class CompressedStreamError(BackupIntegrityError):
    """The gzip layer of a backup is damaged or truncated."""

    message = "The gzip stream is damaged: %(reason)s"


def blocks(chunks, size):
    """Re-cut ``chunks`` into blocks of exactly ``size`` bytes.

    Only the last block may be shorter; no block is empty.  A chunk that is
    already a whole block while nothing is buffered passes without a copy.
    """
    if size < 1:
        raise ValueError("block size must be positive, got %s" % size)
    buf = bytearray()
    for chunk in chunks:
        if not buf and len(chunk) == size:
            yield bytes(chunk)
            continue
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


def _sized_member(eng, block, level):
    deflater = eng.compressobj(level, _RAW_WBITS)
    body = deflater.compress(block) + deflater.flush()
    size = _SIZED_HEADER.size + len(body) + _TRAILER.size
    header = _SIZED_HEADER.pack(GZIP_MAGIC, _FEXTRA, 0, 0, 3, 8, _SUBFIELD,
                                4, size)
    trailer = _TRAILER.pack(eng.crc32(block), len(block) & 0xFFFFFFFF)
    return b''.join((header, body, trailer))


def gzip_compress(chunks, level=None, threads=2, block_size=MiB,
                  engine_name=None):
    """Compress a stream into gzip members made by ``threads`` threads.

    ``level`` is the engine's (None: its default).  Output is in input
    order.  At most ``threads + 1`` blocks are being compressed or
    waiting to be consumed at any time; the first error (of the input or
    of a worker) propagates.  An empty input gives one empty member, so
    the output is never an empty (invalid) gzip file.
    """
    eng = engine(engine_name)
    level = eng.default_level if level is None else eng.check_level(level)
    if threads < 1:
        raise ValueError("threads must be at least 1, got %s" % threads)
    return _gzip_compress(eng, blocks(chunks, block_size), level, threads)


def _gzip_compress(eng, source, level, threads):
    pool = futures.ThreadPoolExecutor(threads, thread_name_prefix='gzip')
    pending = collections.deque()
    count = 0
    try:
        for block in source:
            count += 1
            pending.append(pool.submit(_sized_member, eng, block, level))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        if not count:
            yield _sized_member(eng, b'', level)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    LOG.debug("gzip: compressed %s blocks with %s at level %s on %s "
              "threads", count, eng.name, level, threads)


def gzip_decompress(chunks, out_size=MiB, threads=2, engine_name=None):
    """Decompress a (multi-member) gzip stream; pieces of <= ``out_size``.

    Members that carry their size inflate on ``threads`` threads, at most
    ``threads + 1`` of them held at a time.  Raises
    :class:`CompressedStreamError` for a bad header or CRC, data after the
    last member that is not another member, a member cut short, or a
    stream with no member at all.
    """
    eng = engine(engine_name)
    if threads < 1:
        raise ValueError("threads must be at least 1, got %s" % threads)
    return _gzip_decompress(eng, iter(chunks), out_size, threads)


def _gzip_decompress(eng, chunks, out_size, threads):
    splitter = _Splitter(chunks)
    pool = futures.ThreadPoolExecutor(threads, thread_name_prefix='gunzip')
    pending = collections.deque()
    members = 0
    try:
        for member, isize in splitter:
            members += 1
            pending.append(pool.submit(_inflate_member, eng, member, isize,
                                       members))
            if len(pending) > threads:
                yield from _pieces(pending.popleft().result(), out_size)
        while pending:
            yield from _pieces(pending.popleft().result(), out_size)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if splitter.rest is None:
        if not members:
            raise CompressedStreamError(reason="the stream is empty")
        LOG.debug("gunzip: %s members inflated on %s threads", members,
                  threads)
        return
    # From a member that does not carry its size: one thread, streaming.
    state = _MemberReader(eng, out_size, members)
    for chunk in splitter.rest:
        view = memoryview(chunk)
        for start in range(0, len(view), _INFLATE_SLICE):
            yield from state.feed(view[start:start + _INFLATE_SLICE])
    state.finish()
    LOG.debug("gunzip: %s members inflated on %s threads, then %s on one",
              members, threads, state.members - members)


def _pieces(data, size):
    if len(data) <= size:
        if data:
            yield data
        return
    with memoryview(data) as view:
        for start in range(0, len(view), size):
            yield bytes(view[start:start + size])


def _inflate_member(eng, member, isize, number):
    """The content of one whole member, its CRC and length checked."""
    inflater = eng.decompressobj(_GZIP_WBITS)
    try:
        out = inflater.decompress(member, isize + 1)
    except eng.error as exc:
        raise CompressedStreamError(
            reason="member %s: %s" % (number, exc)) from exc
    if not inflater.eof or inflater.unused_data or len(out) != isize:
        raise CompressedStreamError(
            reason="member %s is not the %s bytes its header says" % (
                number, len(member)))
    return out


class _Splitter:
    """Cuts whole members that carry their size off the stream.

    Iterating gives (member bytes, inflated size from its trailer).  It
    stops at the end of the stream (``rest`` is None) or at the first
    member that does not carry a usable size: ``rest`` is then an
    iterable of the stream from that member on.
    """

    def __init__(self, chunks):
        self._chunks = chunks
        self._buf = bytearray()
        self._ended = False
        self.rest = None

    def _fill(self, size):
        while len(self._buf) < size and not self._ended:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._ended = True
            else:
                self._buf += chunk
        return len(self._buf) >= size

    def __iter__(self):
        header = _SIZED_HEADER.size
        while self._fill(header):
            size = self._sized(self._buf)
            if size is None or not self._fill(size):
                break
            with memoryview(self._buf) as view:
                _crc, isize = _TRAILER.unpack(view[size - _TRAILER.size:size])
                if isize > MAX_PARALLEL_MEMBER:
                    break
                member = bytes(view[:size])
            del self._buf[:size]
            yield member, isize
        if self._buf or not self._ended:
            self.rest = self._remaining()

    @staticmethod
    def _sized(buf):
        """The size a member's header gives, or None."""
        if not buf.startswith(_SIZED_PREFIX):
            return None
        (_magic, _flags, _mtime, _xfl, _os, xlen, subfield, length,
         size) = _SIZED_HEADER.unpack_from(buf)
        if xlen != 8 or subfield != _SUBFIELD or length != 4:
            return None
        if not _SIZED_HEADER.size + _TRAILER.size < size <= (
                MAX_PARALLEL_MEMBER + MiB):
            return None
        return size

    def _remaining(self):
        if self._buf:
            yield bytes(self._buf)
            self._buf = bytearray()
        yield from self._chunks


class _MemberReader:
    """Inflates gzip members one after another, output bounded per call."""

    def __init__(self, eng, out_size, members=0):
        self.engine = eng
        self.out_size = out_size
        self.members = members
        self.in_member = False
        self._inflater = eng.decompressobj(_GZIP_WBITS)

    def feed(self, data):
        while data or self.in_member:
            self.in_member = self.in_member or bool(data)
            try:
                out = self._inflater.decompress(data, self.out_size)
            except self.engine.error as exc:
                raise CompressedStreamError(
                    reason="member %s: %s" % (self.members + 1, exc)) from exc
            if out:
                yield out
            if self._inflater.eof:
                data = self._next_member()
            else:
                data = self._inflater.unconsumed_tail
                if not data and len(out) < self.out_size:
                    return  # everything consumed: needs more input

    def _next_member(self):
        self.members += 1
        self.in_member = False
        rest = self._inflater.unused_data
        self._inflater = self.engine.decompressobj(_GZIP_WBITS)
        return rest

    def finish(self):
        if self.in_member:
            raise CompressedStreamError(
                reason="truncated: the stream ends inside member %s"
                % (self.members + 1))
        if not self.members:
            raise CompressedStreamError(reason="the stream is empty")
