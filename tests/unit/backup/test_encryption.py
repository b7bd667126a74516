"""Authenticated backup encryption and upstream's legacy format: outcomes."""

import io
import os
import re
import struct
import subprocess
import tarfile

import pytest

from trove.guestagent.backup import compression
from trove.guestagent.backup import encryption

KEY = 'operator backup key 0123456789'
CHUNK = 1000
HEADER = 29                     # magic 8, version 1, salt 16, chunk size 4
FRAME = 5 + CHUNK + 16          # length 4, flag 1, ciphertext, tag
DATA = os.urandom(5 * CHUNK + 500)          # 6 frames, the last one short


def _chunks(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


def _encrypt(data, key=KEY, chunk_size=CHUNK, piece=777):
    return b''.join(encryption.encrypt(_chunks(data, piece), key,
                                       chunk_size=chunk_size))


def _decrypt(blob, key=KEY, piece=613):
    """(plaintext yielded, DecryptionError or None)."""
    got = bytearray()
    try:
        for out in encryption.decrypt(_chunks(blob, piece), key):
            got += out
    except encryption.DecryptionError as exc:
        return bytes(got), exc
    return bytes(got), None


def _frames(blob):
    """Split our format into (header, [frame bytes...])."""
    frames, pos = [], HEADER
    while pos < len(blob):
        length = struct.unpack('>I', blob[pos:pos + 4])[0]
        frames.append(blob[pos:pos + 5 + length])
        pos += 5 + length
    return blob[:HEADER], frames


BLOB = _encrypt(DATA)


# --- round trips -------------------------------------------------------------

@pytest.mark.parametrize('size', [0, 1, CHUNK - 1, CHUNK, CHUNK + 1,
                                  7 * CHUNK])
# Pieces smaller than a chunk, as large, and holding several (whole or not).
@pytest.mark.parametrize('piece', [1, 777, CHUNK, 2500, 10 ** 6])
def test_round_trip(size, piece):
    data = os.urandom(size)
    blob = _encrypt(data, piece=piece)
    frames = max(1, -(-size // CHUNK))
    assert len(blob) == HEADER + frames * 21 + size
    assert [f[4] for f in _frames(blob)[1]] == [0] * (frames - 1) + [1]
    assert _decrypt(blob, piece=piece) == (data, None)


@pytest.mark.parametrize('data', [os.urandom(5 * 10 ** 6),
                                  b'{"_id": "doc"}\n' * 350000],
                         ids=['random', 'compressible'])
def test_round_trip_5mb_default_chunks(data):
    blob = b''.join(encryption.encrypt(_chunks(data, 65536), KEY))
    assert b''.join(encryption.decrypt(_chunks(blob, 65536), KEY)) == data


@pytest.mark.parametrize('key', [KEY, KEY.encode(), 'ключ', b'\0\xff'])
def test_str_and_bytes_keys(key):
    blob = _encrypt(DATA, key=key)
    assert _decrypt(blob, key=key) == (DATA, None)


def test_header_layout():
    assert BLOB.startswith(b'TRVCDB1\n\x01')
    assert struct.unpack('>I', BLOB[25:29]) == (CHUNK,)
    header, frames = _frames(BLOB)
    assert [f[4] for f in frames] == [0, 0, 0, 0, 0, 1]   # final flags


def test_two_encryptions_differ():
    other = _encrypt(DATA)
    assert other[9:25] != BLOB[9:25]                       # salt
    assert _frames(other)[1][0] != _frames(BLOB)[1][0]
    assert _decrypt(other) == (DATA, None)


def test_compress_encrypt_chain_round_trip():
    data = b'{"_id": "a", "n": 12345}\n' * 200000
    stream = encryption.encrypt(compression.gzip_compress([data]), KEY)
    opened = encryption.open_stream(stream, KEY)
    assert b''.join(compression.gzip_decompress(opened)) == data


# --- tampering ---------------------------------------------------------------

def _frame_of(offset):
    return max(0, (offset - HEADER) // FRAME) if offset >= HEADER else 0


@pytest.mark.parametrize('bit', [0x01, 0x80])
def test_every_flipped_byte_is_detected_before_its_plaintext(bit):
    for offset in range(len(BLOB)):
        blob = bytearray(BLOB)
        blob[offset] ^= bit
        got, exc = _decrypt(bytes(blob))
        assert exc is not None, offset
        assert DATA.startswith(got), offset
        assert len(got) <= _frame_of(offset) * CHUNK, offset


@pytest.mark.parametrize('offset', [0, 8, 9, 24, 25, 28,       # header
                                    HEADER, HEADER + 4,          # prefix
                                    HEADER + FRAME + 500,        # middle
                                    HEADER + 3 * FRAME - 1,      # a tag
                                    HEADER + 5 * FRAME,          # last
                                    HEADER + 5 * FRAME + 4,
                                    len(BLOB) - 1])
def test_named_places_flipped(offset):
    blob = bytearray(BLOB)
    blob[offset] ^= 0x10
    got, exc = _decrypt(bytes(blob))
    assert isinstance(exc, encryption.DecryptionError)
    assert got == DATA[:len(got)] and len(got) <= _frame_of(offset) * CHUNK


def test_truncation_anywhere_is_an_error():
    for cut in range(len(BLOB)):
        got, exc = _decrypt(BLOB[:cut])
        assert exc is not None, cut
        assert DATA.startswith(got), cut


def test_truncation_at_each_frame_boundary_says_so():
    for index in range(6):
        got, exc = _decrypt(BLOB[:HEADER + index * FRAME])
        assert 'truncated' in str(exc)
        assert got == DATA[:index * CHUNK]


@pytest.mark.parametrize('index', [0, 2, 4])
def test_truncation_disguised_as_final(index):
    header, frames = _frames(BLOB)
    last = bytearray(frames[index])
    last[4] = 1                                 # claim to be the final frame
    got, exc = _decrypt(header + b''.join(frames[:index]) + bytes(last))
    assert 'failed authentication' in str(exc)
    assert got == DATA[:index * CHUNK]


def test_dropped_middle_frame():
    header, frames = _frames(BLOB)
    got, exc = _decrypt(header + b''.join(frames[:2] + frames[3:]))
    assert exc is not None and got == DATA[:2 * CHUNK]


def test_swapped_frames():
    header, frames = _frames(BLOB)
    frames[1], frames[2] = frames[2], frames[1]
    got, exc = _decrypt(header + b''.join(frames))
    assert exc is not None and got == DATA[:CHUNK]


def test_duplicated_frame():
    header, frames = _frames(BLOB)
    got, exc = _decrypt(header + b''.join(frames[:2] + frames[1:]))
    assert exc is not None and got == DATA[:2 * CHUNK]


def test_frame_spliced_from_another_backup_with_the_same_key():
    header, frames = _frames(BLOB)
    _other_header, other = _frames(_encrypt(DATA))
    got, exc = _decrypt(header + b''.join(frames[:3] + other[3:]))
    assert exc is not None and got == DATA[:3 * CHUNK]


def test_header_of_another_backup():
    _header, frames = _frames(BLOB)
    got, exc = _decrypt(_encrypt(DATA)[:HEADER] + b''.join(frames))
    assert exc is not None and got == b''


@pytest.mark.parametrize('tail', ['byte', 'frame', 'final'])
def test_appended_data(tail):
    header, frames = _frames(BLOB)
    extra = {'byte': b'\0', 'frame': frames[2], 'final': frames[-1]}[tail]
    got, exc = _decrypt(BLOB + extra)
    assert 'after the final chunk' in str(exc)
    assert got == DATA[:5 * CHUNK]       # the final chunk was held back


def test_wrong_key():
    got, exc = _decrypt(BLOB, key=KEY + 'x')
    assert 'failed authentication' in str(exc) and got == b''
    assert KEY not in str(exc) and KEY not in repr(exc)


def _open(blob, key, previous_keys=(), piece=613):
    return b''.join(encryption.open_stream(_chunks(blob, piece), key,
                                           previous_keys=previous_keys))


def test_a_backup_made_before_a_key_rotation_restores():
    old = _encrypt(DATA, key='the key of last year')
    # Not with the new key alone, whatever the previous keys' order.
    with pytest.raises(encryption.DecryptionError,
                       match='tried the current key and 1 previous'):
        _open(old, 'the key of this year', ['another old key'])
    for previous in (['the key of last year'],
                     ['another old key', 'the key of last year']):
        assert _open(old, 'the key of this year', previous) == DATA
    # The current key still comes first.
    assert _open(BLOB, KEY, ['the key of last year']) == DATA
    assert _decrypt(old, key='the key of last year') == (DATA, None)


def test_with_previous_keys_damage_is_still_refused():
    blob = bytearray(_encrypt(DATA, key='old key'))
    blob[HEADER + FRAME + 10] ^= 1              # inside the second chunk
    got = bytearray()
    with pytest.raises(encryption.DecryptionError,
                       match='chunk 1 failed authentication: damaged'):
        for out in encryption.open_stream(_chunks(bytes(blob), 500), KEY,
                                          previous_keys=['old key']):
            got += out
    assert bytes(got) == DATA[:CHUNK]


def test_not_our_format():
    got, exc = _decrypt(b'Salted__' + bytes(40))
    assert 'no header' in str(exc) and got == b''


# --- failing closed ----------------------------------------------------------

@pytest.mark.parametrize('key', [None, '', b''])
def test_encrypt_without_a_key_fails_closed(key):
    consumed = []

    def source():
        consumed.append(True)
        yield b'plaintext'

    with pytest.raises(encryption.EncryptionKeyMissing):
        encryption.encrypt(source(), key)
    assert consumed == []


@pytest.mark.parametrize('key', [None, ''])
def test_decrypt_without_a_key(key):
    with pytest.raises(encryption.EncryptionKeyMissing):
        encryption.decrypt([BLOB], key)


def test_key_type_error_does_not_show_the_key():
    with pytest.raises(TypeError) as info:
        encryption.encrypt([b'x'], ['secret-in-a-list'])
    assert 'secret-in-a-list' not in str(info.value)


# --- legacy: real objects made by the openssl binary -------------------------

PASSPHRASE = 'default_aes_cbc_key'


@pytest.fixture(scope='module')
def tarball(tmp_path_factory):
    """(tar bytes, tar | gzip bytes) of a small directory tree."""
    src = tmp_path_factory.mktemp('couchdb')
    (src / 'shards').mkdir()
    (src / 'shards' / 'db.couch').write_bytes(os.urandom(300000))
    (src / '_users.couch').write_bytes(b'{"name": "u"}\n' * 20000)
    tar = subprocess.run(['tar', 'c', '-C', str(src), '.'],
                         capture_output=True, check=True).stdout
    gz = subprocess.run(['gzip', '-c'], input=tar, capture_output=True,
                        check=True).stdout
    return tar, gz


def _openssl(args, data, passphrase):
    """Run openssl enc with the passphrase on a pipe, never in argv."""
    read_end, write_end = os.pipe()
    os.write(write_end, passphrase.encode() + b'\n')
    os.close(write_end)
    try:
        return subprocess.run(
            ['openssl', 'enc', *args, '-pass', 'fd:%d' % read_end],
            input=data, capture_output=True, check=True,
            pass_fds=(read_end,)).stdout
    finally:
        os.close(read_end)


def _legacy(plain, digest, passphrase=PASSPHRASE):
    md = ['-md', digest] if digest else []
    return _openssl(['-aes-256-cbc', '-salt', *md], plain, passphrase)


def _restore(blob, piece=65536, **kwargs):
    opened = encryption.open_stream(_chunks(blob, piece), **kwargs)
    return b''.join(compression.gzip_decompress(opened))


@pytest.mark.parametrize('digest,expected', [('md5', 'md5'),
                                             ('sha256', 'sha256'),
                                             (None, 'sha256')])
def test_legacy_object_restores(tarball, digest, expected):
    tar, gz = tarball
    blob = _legacy(gz, digest)
    assert blob.startswith(b'Salted__')
    assert encryption.detect_legacy_digest(blob[:32], PASSPHRASE) == expected
    assert _restore(blob, key='the new key',
                    legacy_passphrase=PASSPHRASE) == tar
    with tarfile.open(fileobj=io.BytesIO(_restore(
            blob, piece=1000, key=PASSPHRASE))) as archive:
        names = archive.getnames()
    assert './shards/db.couch' in names and './_users.couch' in names


@pytest.mark.parametrize('digest', ['md5', 'sha256'])
def test_openssl_decrypt_with_the_digest(tarball, digest):
    _tar, gz = tarball
    blob = _legacy(gz, digest)
    out = encryption.openssl_decrypt(_chunks(blob, 4096), PASSPHRASE, digest)
    assert b''.join(out) == gz


@pytest.mark.parametrize('size', [0, 1, 15, 16, 17, 4096])
def test_openssl_decrypt_any_padding(size):
    plain = os.urandom(size)
    blob = _legacy(plain, 'md5')
    out = encryption.openssl_decrypt([blob], PASSPHRASE.encode(), 'md5')
    assert b''.join(out) == plain


@pytest.mark.parametrize('digest', ['md5', 'sha256'])
def test_evp_bytes_to_key_matches_openssl(digest):
    salt = bytes.fromhex('0102030405060708')
    printed = _openssl(['-aes-256-cbc', '-md', digest, '-S', salt.hex(),
                        '-P'], b'', PASSPHRASE).decode()
    fields = dict(re.findall(r'^(\w+)\s*=\s*([0-9A-F]+)$', printed, re.M))
    key, iv = encryption.evp_bytes_to_key(PASSPHRASE.encode(), salt, digest)
    assert (key.hex().upper(), iv.hex().upper()) == (fields['key'],
                                                     fields['iv'])


def test_legacy_wrong_passphrase(tarball):
    blob = _legacy(tarball[1], None)
    assert encryption.detect_legacy_digest(blob, 'wrong') is None
    with pytest.raises(encryption.DecryptionError,
                       match='wrong passphrase') as info:
        encryption.open_stream([blob], key=KEY, legacy_passphrase='wrong')
    assert 'wrong' not in str(info.value).replace('wrong passphrase', '')


def test_legacy_backup_restores_with_a_previous_key(tarball):
    tar, gz = tarball
    blob = _legacy(gz, 'md5')
    assert _restore(blob, key='the new key',
                    previous_keys=['other', PASSPHRASE]) == tar
    with pytest.raises(encryption.DecryptionError, match=r'\(tried 2\)'):
        _restore(blob, key='the new key', previous_keys=['other'])


def test_legacy_wrong_digest_fails_the_restore(tarball):
    blob = _legacy(tarball[1], 'md5')
    with pytest.raises(compression.BackupIntegrityError):
        out = encryption.openssl_decrypt([blob], PASSPHRASE, 'sha256')
        b''.join(compression.gzip_decompress(out))


def test_legacy_bad_padding(tarball):
    blob = bytearray(_legacy(tarball[1], 'md5'))
    blob[-17] ^= 0x80            # flips the last plaintext (padding) byte
    out = encryption.openssl_decrypt([bytes(blob)], PASSPHRASE, 'md5')
    with pytest.raises(encryption.DecryptionError, match='bad padding'):
        b''.join(out)


@pytest.mark.parametrize('cut', [-1, -15, -16, -32, -1000])
def test_legacy_truncated(tarball, cut):
    blob = _legacy(tarball[1], 'sha256')
    with pytest.raises(compression.BackupIntegrityError):
        _restore(blob[:cut], key=PASSPHRASE)


def test_legacy_detect_needs_a_whole_block():
    assert encryption.detect_legacy_digest(b'Salted__12345678', KEY) is None
    assert encryption.detect_legacy_digest(b'x' * 64, KEY) is None


# --- open_stream -------------------------------------------------------------

def test_plain_gzip_refused_unless_allowed():
    gz = b''.join(compression.gzip_compress([b'plain backup']))
    with pytest.raises(encryption.UnencryptedBackupRefused):
        encryption.open_stream([gz], KEY)
    assert _restore(gz, piece=3, key=None, allow_plain=True) == (
        b'plain backup')


@pytest.mark.parametrize('blob', [b'', b'PK\x03\x04 a zip', b'TRVCDB'])
def test_unknown_format(blob):
    with pytest.raises(encryption.UnknownBackupFormat):
        encryption.open_stream([blob], KEY)


def test_our_format_needs_the_key():
    with pytest.raises(encryption.EncryptionKeyMissing):
        encryption.open_stream([BLOB], None, legacy_passphrase=PASSPHRASE)
