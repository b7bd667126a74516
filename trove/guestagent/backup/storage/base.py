"""What a backup storage does: save a stream, load it back verified."""

import abc
import dataclasses
import hashlib

from trove.common import exception


class StorageError(exception.TroveError):
    """The storage refused or lost a backup object."""


class ChecksumMismatch(StorageError):
    """The bytes received are not the bytes the backup stored."""


class BackupNotFound(StorageError):
    """No backup object is at the location (deleted, or never made)."""


@dataclasses.dataclass(frozen=True)
class SavedObject:
    location: str
    checksum: str
    size: int


class Storage(abc.ABC):
    """A place for backup objects."""

    @abc.abstractmethod
    def save(self, name, chunks, metadata=None, index=None):
        """Store the stream as object ``name``; return a SavedObject.

        ``metadata`` becomes the object's metadata (keys as
        ``metadata()`` returns them).  ``index``, when given, is called
        once the stream is stored and returns bytes kept with the object
        and covered by its checksum, readable alone with ``load_index``.
        """

    @abc.abstractmethod
    def load(self, location, checksum=None):
        """Iterate the object's bytes, verified against ``checksum``.

        A mismatch raises ChecksumMismatch once the bytes are all read, so
        a restore must not trust what it extracted before the end.  The
        index is not part of these bytes.
        """

    @abc.abstractmethod
    def load_index(self, location, checksum=None):
        """The index saved with the object, verified; None if it has none.

        Only the index is read, yet it is checked against the object's
        ``checksum``.  A missing object raises BackupNotFound.
        """

    @abc.abstractmethod
    def metadata(self, location):
        """The object's metadata: keys in lower case, ``_`` for ``-``."""

    @abc.abstractmethod
    def delete(self, location):
        """Remove the object (and its segments)."""


def metadata_key(key):
    """A metadata key as ``metadata()`` returns it."""
    return key.lower().replace('-', '_')


def composite_checksum(digests):
    """The checksum of an object made of parts: MD5 of their MD5s (hex).

    This is a Static Large Object's ETag in Swift.
    """
    return hashlib.md5(''.join(digests).encode(),
                       usedforsecurity=False).hexdigest()


def split(chunks, size):
    """Yield iterators over consecutive pieces of at most ``size`` bytes.

    Each piece must be consumed before the next one is asked for.  No piece
    is empty: an empty stream yields no piece at all.
    """
    source = iter(chunks)
    carry = b''
    exhausted = False

    def next_chunk():
        for chunk in source:
            if chunk:
                return chunk
        return None

    def piece():
        nonlocal carry, exhausted
        remaining = size
        while remaining > 0:
            chunk, carry = (carry, b'') if carry else (next_chunk(), b'')
            if chunk is None:
                exhausted = True
                return
            if len(chunk) > remaining:
                chunk, carry = chunk[:remaining], chunk[remaining:]
            remaining -= len(chunk)
            yield chunk

    while not exhausted:
        if not carry:
            carry = next_chunk()
            if carry is None:
                return
        yield piece()


class Hashing:
    """Passes chunks through while counting them and hashing them (MD5)."""

    def __init__(self, chunks):
        self._chunks = chunks
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def __iter__(self):
        for chunk in self._chunks:
            self.md5.update(chunk)
            self.size += len(chunk)
            yield chunk

    @property
    def hexdigest(self):
        return self.md5.hexdigest()
