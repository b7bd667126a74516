"""File digests that a later backup can extend and check in parallel.

The digest of the first ``n`` bytes of a file is the SHA-256 of the
SHA-256s of its consecutive ``BLOCK`` byte blocks (the last one may be
shorter; a file of 0 bytes has no block)::

    digest(F[0:n]) = sha256(sha256(block 0) || sha256(block 1) || ...)

so a file's blocks hash on several threads at once, and a digest of a
longer prefix reuses every whole block of a shorter one.  An incremental
backup proves that the part of a file its parent holds is unchanged by
recomputing this digest over that part and comparing it with the one the
parent recorded: every byte of the prefix is read, because no sample can
tell CouchDB's own rewrites apart from an append (a view index reset or a
database recreated under the same name starts again with the same header
bytes, and pouchdb-server rewrites its LevelDB files).  SHA-256 runs at
about 1.4 GB/s a core on CPUs with SHA extensions.
"""

import concurrent.futures
import hashlib
import os

# 16 MiB: 64 block digests per GiB of a file, and the blocks of a shard
# file of a few hundred MB spread over every core.
BLOCK = 16 * 1024 * 1024
READ_SIZE = 1024 * 1024


class Digest:
    """The running digest of a file's bytes, fed in order."""

    def __init__(self, block=BLOCK):
        self.block = block
        self.length = 0
        self._blocks = []          # digests of the whole blocks so far
        self._current = hashlib.sha256()

    def update(self, data):
        view = memoryview(data)
        while view:
            room = self.block - self.length % self.block
            piece, view = view[:room], view[room:]
            self._current.update(piece)
            self.length += len(piece)
            if self.length % self.block == 0:
                self._blocks.append(self._current.digest())
                self._current = hashlib.sha256()

    def hexdigest(self):
        """The digest of everything fed so far (the object stays usable)."""
        blocks = self._blocks
        if self.length % self.block:
            blocks = blocks + [self._current.copy().digest()]
        return hashlib.sha256(b''.join(blocks)).hexdigest()

    @classmethod
    def _resumed(cls, whole_blocks, partial, block):
        """A digest at the end of ``whole_blocks`` (their digests) and of
        ``partial`` (a ``_Partial`` of the bytes after them)."""
        digest = cls(block)
        digest._blocks = list(whole_blocks)
        digest._current = partial.hasher
        digest.length = len(whole_blocks) * block + partial.length
        return digest


class _Partial:
    """A sha256 that counts the bytes it was given."""

    def __init__(self):
        self.hasher = hashlib.sha256()
        self.length = 0

    def update(self, data):
        self.hasher.update(data)
        self.length += len(data)


def read_prefix(fd, size, pool=None, block=BLOCK):
    """A ``Digest`` of the first ``size`` bytes of the open file ``fd``.

    Whole blocks hash on ``pool`` (an executor) side by side, each read
    with ``os.pread`` so that the file's offset is not moved.  Raises
    ``EOFError`` when the file holds fewer than ``size`` bytes.  The
    result can be fed the bytes that follow, to extend it.
    """
    whole = size // block
    starts = [index * block for index in range(whole)]

    def whole_block(start):
        return _hash_range(fd, start, block).hasher.digest()

    if pool is not None and whole > 1:
        blocks = list(pool.map(whole_block, starts))
    else:
        blocks = [whole_block(start) for start in starts]
    partial = _hash_range(fd, whole * block, size - whole * block)
    return Digest._resumed(blocks, partial, block)


def _hash_range(fd, start, length):
    partial = _Partial()
    end = start + length
    offset = start
    while offset < end:
        data = os.pread(fd, min(READ_SIZE, end - offset), offset)
        if not data:
            raise EOFError("file ends at %d, before %d" % (offset, end))
        partial.update(data)
        offset += len(data)
    return partial


def pool(threads):
    """An executor for ``read_prefix``: ``threads`` 'digest_N' threads."""
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, threads), thread_name_prefix='digest')
