"""Streaming gzip: parallel compression and strict multi-member decompression.

Both stages take an iterable of bytes chunks and return an iterator of bytes
chunks; memory stays bounded whatever the length of the stream.

``gzip_compress`` cuts its input into blocks and deflates them side by side
in a thread pool (zlib releases the GIL), each block as an independent gzip
member.  Concatenated members are a valid gzip file (RFC 1952, section 2.2):
``gzip -dc``, ``pigz -dc`` and Python's ``gzip`` module read them.  Losing
the shared window at each block boundary costs well under 1% of ratio with
1 MiB blocks.

``gzip_decompress`` reads any gzip stream, multi-member included, checks
every member's CRC-32 and length (zlib does), and refuses a truncated
stream, trailing garbage and an empty stream.
"""

import collections
from concurrent import futures
import zlib

from oslo_log import log as logging

from trove.common import exception

LOG = logging.getLogger(__name__)

MiB = 1024 * 1024
GZIP_MAGIC = b'\x1f\x8b\x08'
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around deflate
# Input handed to zlib at once when decompressing: zlib copies the input it
# has not consumed yet on every bounded call, so a huge chunk goes in slices.
_INFLATE_SLICE = 256 * 1024


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


def _gzip_member(block, level):
    compressor = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)
    return compressor.compress(block) + compressor.flush()


def gzip_compress(chunks, level=1, threads=2, block_size=MiB):
    """Compress a stream into gzip members made by ``threads`` threads.

    Output is in input order.  At most ``threads + 1`` blocks are being
    compressed or waiting to be consumed at any time; the first error (of
    the input or of a worker) propagates.  An empty input gives one empty
    member, so the output is never an empty (invalid) gzip file.
    """
    if not 0 <= level <= 9:
        raise ValueError("gzip level must be 0-9, got %s" % level)
    if threads < 1:
        raise ValueError("threads must be at least 1, got %s" % threads)
    return _gzip_compress(blocks(chunks, block_size), level, threads)


def _gzip_compress(source, level, threads):
    pool = futures.ThreadPoolExecutor(threads, thread_name_prefix='gzip')
    pending = collections.deque()
    count = 0
    try:
        for block in source:
            count += 1
            pending.append(pool.submit(_gzip_member, block, level))
            if len(pending) > threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
        if not count:
            yield _gzip_member(b'', level)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    LOG.debug("gzip: compressed %s blocks at level %s with %s threads",
              count, level, threads)


def gzip_decompress(chunks, out_size=MiB):
    """Decompress a (multi-member) gzip stream; pieces of <= ``out_size``.

    Raises :class:`CompressedStreamError` for a bad header or CRC, data
    after the last member that is not another member, a member cut short,
    or a stream with no member at all.
    """
    state = _MemberReader(out_size)
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), _INFLATE_SLICE):
            yield from state.feed(view[start:start + _INFLATE_SLICE])
    state.finish()


class _MemberReader:
    """Inflates gzip members one after another, output bounded per call."""

    def __init__(self, out_size):
        self.out_size = out_size
        self.members = 0
        self.in_member = False
        self._inflater = zlib.decompressobj(_GZIP_WBITS)

    def feed(self, data):
        while data or self.in_member:
            self.in_member = self.in_member or bool(data)
            try:
                out = self._inflater.decompress(data, self.out_size)
            except zlib.error as exc:
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
        self._inflater = zlib.decompressobj(_GZIP_WBITS)
        return rest

    def finish(self):
        if self.in_member:
            raise CompressedStreamError(
                reason="truncated: the stream ends inside member %s"
                % (self.members + 1))
        if not self.members:
            raise CompressedStreamError(reason="the stream is empty")
