"""RPC payload encryption, byte-compatible with Trove's own.

Trove encrypts every RPC argument and the request context with the
instance's ``instance_rpc_encr_key``: AES-256-CBC whose key is the ASCII hex
digest of ``md5(key)`` (32 bytes), a random 16-byte IV prepended to the
ciphertext, PKCS#7 padding, and base64 text on the wire.
"""

import hashlib
import os

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers import modes
from oslo_serialization import base64
from oslo_utils import encodeutils

IV_BYTE_COUNT = 16


def _cipher(key, iv):
    md5_key = hashlib.md5(encodeutils.to_utf8(key),
                          usedforsecurity=False).hexdigest().encode('ascii')
    return Cipher(algorithms.AES(md5_key), modes.CBC(iv))


def encode_data(data):
    return base64.encode_as_text(data)


def decode_data(data):
    """Base64 text to bytes; ValueError when it is not base64."""
    if not isinstance(data, (str, bytes)):
        raise TypeError("expected base64 text, got %s" % type(data).__name__)
    try:
        return base64.decode_as_bytes(data)
    except (TypeError, ValueError) as exc:
        raise ValueError("not base64: %s" % exc) from exc


def encrypt_data(data, key):
    data = encodeutils.to_utf8(data)
    pad = IV_BYTE_COUNT - len(data) % IV_BYTE_COUNT
    iv = os.urandom(IV_BYTE_COUNT)
    encryptor = _cipher(key, iv).encryptor()
    return iv + encryptor.update(data + bytes([pad]) * pad) + \
        encryptor.finalize()


def decrypt_data(data, key):
    """Decrypt; ValueError when the data cannot be what encrypt_data made."""
    if len(data) < 2 * IV_BYTE_COUNT or len(data) % IV_BYTE_COUNT:
        raise ValueError("ciphertext has an impossible length")
    iv, body = data[:IV_BYTE_COUNT], data[IV_BYTE_COUNT:]
    decryptor = _cipher(key, iv).decryptor()
    plain = decryptor.update(body) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= IV_BYTE_COUNT or plain[-pad:] != bytes([pad]) * pad:
        raise ValueError("bad padding: wrong key or damaged data")
    return plain[:-pad]
