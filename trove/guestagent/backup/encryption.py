"""Authenticated streaming encryption of backups, and upstream's legacy format.

Our format, version 1 (integers big-endian)::

    header  = b'TRVCDB1\\n' | version (1 byte) | salt (16 bytes)
              | chunk size (4 bytes)
    frame i = length (4 bytes) | final flag (1 byte, 0 or 1)
              | AES-256-GCM ciphertext of chunk i with its 16-byte tag

    key     = HKDF-SHA256(operator key, salt, info=b'trove couchdb backup v1')
    nonce i = 4 zero bytes | i (8 bytes)
    AAD i   = header | i (8 bytes) | final flag (1 byte)

Every frame but the last holds ``chunk size`` plaintext bytes, the last
(flag 1) holds 0 to ``chunk size`` bytes, so an empty stream is one empty
final frame.  The key is new for every backup (random salt), so the counter
nonce never repeats under a key.  Each frame is authenticated before its
plaintext is released, and the AAD binds it to the header, its position and
whether it ends the stream: a changed bit anywhere, a wrong key, reordered,
dropped or spliced frames, a missing final frame and bytes after it all
raise :class:`DecryptionError` and release no plaintext of the bad frame.

Legacy: upstream Trove piped ``tar | gzip | openssl enc -aes-256-cbc -salt
-pass pass:KEY``: ``b'Salted__'`` + 8-byte salt, key and IV from
EVP_BytesToKey (one iteration of MD5 before OpenSSL 1.1.0, SHA-256 after),
AES-256-CBC with PKCS#7 padding and no authentication.  It is decrypted here
with the ``cryptography`` package, never the openssl binary (whose argv would
show the key).  The operator key is never put in a message, repr or log.

Key rotation: a restore may be given the current key and earlier ones.  The
first frame picks the key (the first that authenticates it), so a backup
made before a rotation restores without the old key being current; a
legacy object takes the first passphrase whose key derivation yields gzip.
"""

import hashlib
import itertools
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers import modes
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf import hkdf
from cryptography.hazmat.primitives import padding
from oslo_log import log as logging

from trove.common import exception
from trove.guestagent.backup import compression

LOG = logging.getLogger(__name__)

MAGIC = b'TRVCDB1\n'
FORMAT_VERSION = 1
SALT_LEN = 16
TAG_LEN = 16
MAX_CHUNK_SIZE = 64 * compression.MiB
HKDF_INFO = b'trove couchdb backup v1'
_HEADER = struct.Struct('>8sB16sI')       # magic, version, salt, chunk size
_FRAME = struct.Struct('>IB')             # sealed length, final flag
_POSITION = struct.Struct('>QB')          # counter, final flag (in the AAD)

LEGACY_MAGIC = b'Salted__'
LEGACY_PROBE_LEN = 32                     # magic, salt, one AES block
LEGACY_DIGESTS = ('sha256', 'md5')        # tried in this order
_AES_BLOCK = 16


class DecryptionError(compression.BackupIntegrityError):
    """Wrong key, or a damaged, truncated or rearranged encrypted stream."""

    message = "Cannot decrypt the backup: %(reason)s"


class UnknownBackupFormat(compression.BackupIntegrityError):
    """The stream is neither of our formats, legacy, nor gzip."""

    message = "Not a backup this agent can read: %(reason)s"


class UnencryptedBackupRefused(compression.BackupIntegrityError):
    """A plain gzip backup met a caller that requires encryption."""

    message = ("The backup is not encrypted and unencrypted backups are "
               "not allowed here.")


class EncryptionKeyMissing(exception.TroveError):
    """Encryption was requested without a key: fail closed."""

    message = "No %(what)s is configured: refusing to go on without one."


def key_material(key, what='backup encryption key'):
    """The bytes of an operator key; raises when it is empty or None."""
    if key is None or len(key) == 0:
        raise EncryptionKeyMissing(what=what)
    if isinstance(key, str):
        return key.encode('utf-8')
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError("the %s must be str or bytes, not %s"
                    % (what, type(key).__name__))


def _derive_key(material, salt):
    return hkdf.HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                     info=HKDF_INFO).derive(material)


def _nonce(counter):
    return b'\0\0\0\0' + counter.to_bytes(8, 'big')


class _Reader:
    """Reads exact byte counts from an iterator of chunks.

    Bytes within one chunk come out as views of it; only bytes that span
    chunks are copied (once).
    """

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._head = memoryview(b'')   # the unread part of the current chunk

    def _next(self):
        for chunk in self._chunks:
            if chunk:
                self._head = memoryview(chunk)
                return True
        return False

    def read_view(self, n):
        """``n`` bytes as a bytes-like object, fewer only when the stream
        ends first."""
        if len(self._head) >= n:
            out, self._head = self._head[:n], self._head[n:]
            return out
        out = bytearray(n)
        filled = 0
        while filled < n:
            if not self._head and not self._next():
                del out[filled:]
                break
            take = min(n - filled, len(self._head))
            out[filled:filled + take] = self._head[:take]
            self._head = self._head[take:]
            filled += take
        return out

    def read(self, n):
        """``n`` bytes, fewer only when the stream ends first."""
        return bytes(self.read_view(n))

    def peek(self, n):
        data = self.read(n)
        self._head = memoryview(data + bytes(self._head))
        return data

    def at_end(self):
        return not self._head and not self._next()

    def rest(self):
        """Everything not read yet, as chunks."""
        if self._head:
            head, self._head = bytes(self._head), memoryview(b'')
            yield head
        yield from self._chunks


# --- our format -----------------------------------------------------------

def encrypt(chunks, key, chunk_size=compression.MiB):
    """Encrypt a stream in our format (see the module docstring).

    Fails closed: an empty or missing ``key`` raises
    :class:`EncryptionKeyMissing` here, before a single byte is produced.
    """
    material = key_material(key)
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError("chunk size must be 1-%s bytes, got %s"
                         % (MAX_CHUNK_SIZE, chunk_size))
    salt = os.urandom(SALT_LEN)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, salt, chunk_size)
    sealer = aead.AESGCM(_derive_key(material, salt))
    return _encrypt(chunks, sealer, header, chunk_size)


def _seal(sealer, header, counter, plain, final):
    """One frame: its prefix and the sealed ``plain``, in one new buffer."""
    flag = 1 if final else 0
    frame = bytearray(_FRAME.size + len(plain) + TAG_LEN)
    _FRAME.pack_into(frame, 0, len(plain) + TAG_LEN, flag)
    sealer.encrypt_into(_nonce(counter), plain,
                        header + _POSITION.pack(counter, flag),
                        memoryview(frame)[_FRAME.size:])
    return frame


def _encrypt(chunks, sealer, header, chunk_size):
    yield header
    buf = bytearray()
    counter = 0
    for chunk in chunks:
        buf += chunk
        # A whole chunk is final only if nothing follows it: seal it once
        # at least one more byte is here.
        while len(buf) > chunk_size:
            with memoryview(buf) as view:
                frame = _seal(sealer, header, counter, view[:chunk_size],
                              final=False)
            del buf[:chunk_size]
            counter += 1
            yield frame
    yield _seal(sealer, header, counter, buf, final=True)


def decrypt(chunks, key, previous_keys=()):
    """Decrypt a stream made by :func:`encrypt`, or raise DecryptionError.

    Each chunk is authenticated before it is yielded; the stream must end
    with the final frame and nothing after it.  ``previous_keys`` are tried
    after ``key``, in order, on the first chunk.
    """
    return _decrypt(_Reader(chunks), _materials(key, previous_keys))


def _materials(key, previous_keys=()):
    """The key bytes to try, the current key first."""
    return [key_material(key)] + [
        key_material(k, what='previous backup encryption key')
        for k in previous_keys]


def _read_header(reader):
    header = reader.read(_HEADER.size)
    if len(header) < _HEADER.size or not header.startswith(MAGIC):
        raise DecryptionError(reason="no header of this format")
    _magic, version, salt, chunk_size = _HEADER.unpack(header)
    if version != FORMAT_VERSION:
        raise DecryptionError(reason="unsupported format version %s"
                              % version)
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise DecryptionError(reason="impossible chunk size %s" % chunk_size)
    return header, salt, chunk_size


def _read_frame(reader, counter, max_sealed):
    prefix = reader.read(_FRAME.size)
    if not prefix:
        raise DecryptionError(reason="truncated: the stream ends before "
                              "its final chunk (chunk %s)" % counter)
    if len(prefix) < _FRAME.size:
        raise DecryptionError(reason="truncated in chunk %s" % counter)
    length, flag = _FRAME.unpack(prefix)
    if flag not in (0, 1) or not TAG_LEN <= length <= max_sealed:
        raise DecryptionError(reason="chunk %s has an impossible frame "
                              "header" % counter)
    sealed = reader.read_view(length)
    if len(sealed) < length:
        raise DecryptionError(reason="truncated in chunk %s" % counter)
    return sealed, flag


def _decrypt(reader, materials):
    header, salt, chunk_size = _read_header(reader)
    opener = None
    for counter in itertools.count():
        sealed, flag = _read_frame(reader, counter, chunk_size + TAG_LEN)
        aad = header + _POSITION.pack(counter, flag)
        if opener is None:
            opener, plain = _open_first(materials, salt, sealed, aad)
        else:
            try:
                plain = opener.decrypt(_nonce(counter), sealed, aad)
            except InvalidTag:
                raise DecryptionError(
                    reason="chunk %s failed authentication: damaged, "
                    "reordered or spliced data" % counter) from None
        if flag and not reader.at_end():
            raise DecryptionError(reason="data after the final chunk")
        if plain:
            yield plain
        if flag:
            return


def _open_first(materials, salt, sealed, aad):
    """(cipher, plaintext) of the first chunk, with the first key of
    ``materials`` that authenticates it."""
    for index, material in enumerate(materials):
        opener = aead.AESGCM(_derive_key(material, salt))
        try:
            plain = opener.decrypt(_nonce(0), sealed, aad)
        except InvalidTag:
            continue
        if index:
            LOG.info("The backup was made with previous key number %d.",
                     index)
        return opener, plain
    tried = (" (tried the current key and %d previous ones)"
             % (len(materials) - 1) if len(materials) > 1 else "")
    raise DecryptionError(reason="chunk 0 failed authentication: wrong "
                          "key%s, or damaged data" % tried)


# --- upstream's legacy openssl format -------------------------------------

def evp_bytes_to_key(material, salt, digest):
    """OpenSSL's EVP_BytesToKey, one iteration: (32-byte key, 16-byte IV)."""
    derived = block = b''
    while len(derived) < 48:
        block = hashlib.new(digest, block + material + salt,
                            usedforsecurity=False).digest()
        derived += block
    return derived[:32], derived[32:48]


def _legacy_decryptor(material, salt, digest):
    key, iv = evp_bytes_to_key(material, salt, digest)
    return Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()


def _looks_like_gzip(plain):
    # magic, deflate, and the reserved flag bits clear: 27 bits must match
    return plain[:3] == compression.GZIP_MAGIC and not plain[3] & 0xE0


def detect_legacy_digest(first_bytes, passphrase):
    """'md5' or 'sha256': the key derivation digest that gives gzip data.

    ``first_bytes`` is the start of a legacy object (at least 32 bytes:
    magic, salt, one block).  None when neither digest decrypts it to a
    gzip header: a wrong passphrase, or not a legacy backup.
    """
    material = key_material(passphrase, what='legacy backup passphrase')
    head = bytes(first_bytes[:LEGACY_PROBE_LEN])
    if len(head) < LEGACY_PROBE_LEN or not head.startswith(LEGACY_MAGIC):
        return None
    salt, block = head[8:16], head[16:32]
    for digest in LEGACY_DIGESTS:
        if _looks_like_gzip(
                _legacy_decryptor(material, salt, digest).update(block)):
            return digest
    return None


def openssl_decrypt(chunks, passphrase, digest):
    """Decrypt ``openssl enc -aes-256-cbc -salt -md DIGEST`` output.

    Raises DecryptionError for a stream without the ``Salted__`` header, one
    cut short of a whole block, or bad padding at the end (CBC has no
    authentication: a wrong key usually, not always, shows only there, so
    the gzip CRC after this stage is the real check).
    """
    if digest not in LEGACY_DIGESTS:
        raise ValueError("digest must be one of %s, got %r"
                         % (LEGACY_DIGESTS, digest))
    material = key_material(passphrase, what='legacy backup passphrase')
    return _openssl_decrypt(_Reader(chunks), material, digest)


def _openssl_decrypt(reader, material, digest):
    head = reader.read(len(LEGACY_MAGIC) + 8)
    if len(head) < 16 or not head.startswith(LEGACY_MAGIC):
        raise DecryptionError(reason="no openssl 'Salted__' header")
    decryptor = _legacy_decryptor(material, head[8:], digest)
    unpadder = padding.PKCS7(_AES_BLOCK * 8).unpadder()
    for chunk in reader.rest():
        out = unpadder.update(decryptor.update(chunk))
        if out:
            yield out
    try:
        last = unpadder.update(decryptor.finalize())
    except ValueError:
        raise DecryptionError(reason="truncated: the legacy ciphertext is "
                              "not a whole number of blocks") from None
    try:
        last += unpadder.finalize()
    except ValueError:
        raise DecryptionError(reason="bad padding at the end of the legacy "
                              "backup: wrong passphrase or damaged data"
                              ) from None
    if last:
        yield last


# --- restore entry point ----------------------------------------------------

def open_stream(chunks, key, legacy_passphrase=None, allow_plain=False,
                previous_keys=()):
    """The compressed stream inside a backup object, whatever its format.

    Reads the first bytes now (format errors raise at call time): our
    magic -> :func:`decrypt` with ``key``, then ``previous_keys``;
    ``Salted__`` -> upstream's legacy format with ``legacy_passphrase``
    (when None: ``key``, then ``previous_keys``) and the detected digest;
    a raw gzip header -> passed through only when ``allow_plain``;
    anything else -> :class:`UnknownBackupFormat`.
    """
    reader = _Reader(chunks)
    head = reader.peek(LEGACY_PROBE_LEN)
    if head.startswith(MAGIC):
        return _decrypt(reader, _materials(key, previous_keys))
    if head.startswith(LEGACY_MAGIC):
        passphrases = ([legacy_passphrase] if legacy_passphrase is not None
                       else [key] + list(previous_keys))
        return _open_legacy(reader, head, passphrases)
    if head.startswith(compression.GZIP_MAGIC):
        if not allow_plain:
            raise UnencryptedBackupRefused()
        LOG.warning("Restoring an unencrypted (plain gzip) backup.")
        return reader.rest()
    raise UnknownBackupFormat(
        reason="empty stream" if not head else
        "unrecognised header %s" % head[:8].hex())


def _open_legacy(reader, head, passphrases):
    for index, passphrase in enumerate(passphrases):
        material = key_material(passphrase, what='legacy backup passphrase')
        digest = detect_legacy_digest(head, material)
        if digest is not None:
            LOG.info("Legacy openssl backup: key derived with %s%s.", digest,
                     " from previous key number %d" % index if index else "")
            return _openssl_decrypt(reader, material, digest)
    raise DecryptionError(
        reason="the legacy passphrase does not decrypt this backup "
        "(neither the md5 nor the sha256 key derivation gives gzip "
        "data): wrong passphrase%s" % (
            " (tried %d)" % len(passphrases) if len(passphrases) > 1
            else ""))
