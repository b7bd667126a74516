"""RPC payload encryption is byte-compatible with Trove's."""

import hashlib
import subprocess

import pytest

from trove.common import crypto_utils as cu


def _openssl_decrypt(blob, key):
    """Decrypt with openssl, an implementation independent of ours."""
    aes_key = hashlib.md5(key.encode()).hexdigest().encode().hex()
    iv, body = blob[:16], blob[16:]
    return subprocess.run(
        ['openssl', 'enc', '-d', '-aes-256-cbc', '-K', aes_key,
         '-iv', iv.hex()], input=body, capture_output=True,
        check=True).stdout


@pytest.mark.parametrize('plain', ['', 'x', '{"a": 1}', 'é' * 15, 'y' * 16,
                                   'z' * 1000])
def test_round_trip_and_openssl_agrees(plain):
    key = 'an instance key'
    blob = cu.encrypt_data(plain, key)
    assert len(blob) % 16 == 0 and len(blob) >= 32
    assert cu.decrypt_data(blob, key) == plain.encode()
    assert _openssl_decrypt(blob, key) == plain.encode()


def test_a_fresh_iv_every_time():
    assert cu.encrypt_data('same', 'k') != cu.encrypt_data('same', 'k')


def test_wrong_key_is_detected_almost_always():
    blobs = [cu.encrypt_data('{"method": "x"}', 'right') for _ in range(50)]
    failures = 0
    for blob in blobs:
        try:
            cu.decrypt_data(blob, 'wrong')
        except ValueError:
            failures += 1
    assert failures >= 45


def test_base64_text_round_trip():
    blob = cu.encrypt_data('hello', 'k')
    text = cu.encode_data(blob)
    assert isinstance(text, str)
    assert cu.decode_data(text) == blob
    with pytest.raises(ValueError):
        cu.decode_data('not base64 !!')
