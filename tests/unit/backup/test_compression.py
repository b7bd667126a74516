"""Parallel gzip compression and strict decompression: outcomes only."""

import gzip
import itertools
import json
import os
import random
import shutil
import subprocess
import threading

import pytest

from trove.guestagent.backup import compression

BLOCK = 64 * 1024


def _json_like(size, seed=7):
    """Many small JSON documents: compresses about 3-4x, like CouchDB data."""
    rnd = random.Random(seed)
    words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf',
             'hotel', 'india', 'juliet', 'kilo', 'lima', 'mike', 'november']
    out = bytearray()
    while len(out) < size:
        out += json.dumps({
            '_id': rnd.randbytes(16).hex(), '_rev': '1-%s' % rnd.randbytes(
                16).hex(), 'name': ' '.join(rnd.choices(words, k=3)),
            'n': rnd.randint(0, 10 ** 6), 'ok': rnd.random() < 0.5,
        }).encode() + b'\n'
    return bytes(out[:size])


def _chunks(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


def _compress(data, piece=10007, **kwargs):
    return b''.join(compression.gzip_compress(_chunks(data, piece), **kwargs))


def _decompress(blob, piece=4099, **kwargs):
    return b''.join(compression.gzip_decompress(_chunks(blob, piece),
                                                **kwargs))


def _gzip_binary(*args, data):
    return subprocess.run(['gzip', *args], input=data, capture_output=True,
                          check=True).stdout


SIZES = [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17]


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('threads', [1, 2, 4])
@pytest.mark.parametrize('level', [1, 6])
def test_round_trip_small_blocks(size, threads, level):
    data = _json_like(size)
    blob = _compress(data, level=level, threads=threads, block_size=BLOCK)
    assert _decompress(blob) == data
    assert gzip.decompress(blob) == data


@pytest.mark.parametrize('data', [os.urandom(5 * 10 ** 6),
                                  _json_like(5 * 10 ** 6)],
                         ids=['random', 'json'])
def test_round_trip_5mb_default_blocks(data):
    blob = _compress(data, piece=65536)
    assert _decompress(blob, piece=65536) == data
    assert gzip.decompress(blob) == data


def test_json_like_data_compresses():
    data = _json_like(2 * 10 ** 6)
    assert len(_compress(data, level=6)) < len(data) / 2.5


@pytest.mark.parametrize('pieces', [
    lambda d: [d],                                       # one huge chunk
    lambda d: [d[i:i + 1] for i in range(len(d))],       # one byte each
    lambda d: [b''] + _chunks(d, 999) + [b'', b''],      # empty chunks
    lambda d: _chunks(d, BLOCK),                         # exact blocks
], ids=['whole', 'bytes', 'empties', 'blocks'])
def test_any_input_chunking(pieces):
    data = _json_like(2 * BLOCK + 5)
    out = compression.gzip_compress(pieces(data), block_size=BLOCK)
    assert gzip.decompress(b''.join(out)) == data


@pytest.mark.parametrize('size', SIZES + [5 * 10 ** 6])
def test_real_gzip_reads_our_output(size):
    data = _json_like(size)
    blob = _compress(data, block_size=BLOCK)
    assert _gzip_binary('-t', data=blob) == b''
    assert _gzip_binary('-dc', data=blob) == data


def test_more_threads_give_the_same_bytes():
    data = _json_like(10 * BLOCK)
    assert (_compress(data, threads=1, block_size=BLOCK)
            == _compress(data, threads=3, block_size=BLOCK))


@pytest.mark.parametrize('level', ['-1', '-9'])
@pytest.mark.parametrize('piece', [1, 4099, 10 ** 9])
def test_reads_gzip_binary_output(level, piece):
    data = _json_like(300 * 1024) if piece > 1 else _json_like(5000)
    blob = _gzip_binary(level, '-c', data=data)
    assert _decompress(blob, piece=piece) == data


def test_reads_multi_member_from_gzip_binary():
    parts = [_json_like(1000, seed=1), b'', os.urandom(70000),
             _json_like(200000, seed=2)]
    blob = b''.join(_gzip_binary('-c', data=p) for p in parts)
    assert _decompress(blob) == b''.join(parts)


def test_reads_pigz_output():
    # tools/bootstrap installs pigz: a missing one fails, never skips.
    assert shutil.which('pigz'), 'pigz not found: run tools/bootstrap'
    data = _json_like(3 * 10 ** 6)
    blob = subprocess.run(['pigz', '-1', '-c', '-p', '2'], input=data,
                          capture_output=True, check=True).stdout
    assert _decompress(blob) == data


def test_empty_input_gives_a_valid_gzip_file():
    blob = _compress(b'')
    assert _gzip_binary('-dc', data=blob) == b''
    assert _decompress(blob) == b''


@pytest.mark.parametrize('cut', [1, 2, 9, 10, 11, 100, -9, -8, -4, -1])
def test_truncated_stream_is_an_error(cut):
    blob = _gzip_binary('-c', data=_json_like(50000))
    with pytest.raises(compression.CompressedStreamError,
                       match='truncated'):
        _decompress(blob[:cut])


def test_truncated_inside_a_later_member_is_an_error():
    data = _json_like(5 * BLOCK)
    blob = _compress(data, block_size=BLOCK)
    got = bytearray()
    with pytest.raises(compression.CompressedStreamError, match='member 4'):
        for out in compression.gzip_decompress([blob[:len(blob) * 7 // 10]]):
            got += out
    assert data.startswith(got)


def test_empty_stream_is_an_error():
    with pytest.raises(compression.CompressedStreamError, match='empty'):
        _decompress(b'')


@pytest.mark.parametrize('where', ['crc', 'length', 'body'])
def test_damaged_member_is_an_error(where):
    blob = bytearray(_gzip_binary('-c', data=_json_like(50000)))
    offset = {'crc': -8, 'length': -1, 'body': len(blob) // 2}[where]
    blob[offset] ^= 0x01
    with pytest.raises(compression.CompressedStreamError):
        _decompress(bytes(blob))


@pytest.mark.parametrize('tail', [b'\0' * 8, b'garbage!', b'\x1f'])
def test_trailing_bytes_are_an_error(tail):
    blob = _gzip_binary('-c', data=b'data')
    with pytest.raises(compression.CompressedStreamError):
        _decompress(blob + tail)


def test_decompressed_pieces_are_bounded():
    blob = _gzip_binary('-9', '-c', data=bytes(64 * 2 ** 20))
    assert len(blob) < 2 ** 20
    total = 0
    for out in compression.gzip_decompress([blob], out_size=2 ** 20):
        assert 0 < len(out) <= 2 ** 20
        total += len(out)
    assert total == 64 * 2 ** 20


def _endless(counter, block=BLOCK):
    data = _json_like(block)
    while True:
        counter[0] += 1
        yield data


def test_compression_streams_with_bounded_read_ahead():
    before = threading.active_count()
    consumed = [0]
    stream = compression.gzip_compress(_endless(consumed), threads=2,
                                       block_size=BLOCK)
    first = list(itertools.islice(stream, 3))
    assert gzip.decompress(b''.join(first)) == _json_like(BLOCK) * 3
    # 3 given out + at most threads + 1 in flight + the one being read
    assert consumed[0] <= 3 + 3 + 1
    stream.close()
    assert threading.active_count() == before


def test_input_error_propagates_and_stops_the_workers():
    before = threading.active_count()

    def failing():
        yield from itertools.islice(_endless([0]), 5)
        raise OSError('disk read failed')

    with pytest.raises(OSError, match='disk read failed'):
        for _ in compression.gzip_compress(failing(), block_size=BLOCK):
            pass
    assert threading.active_count() == before


@pytest.mark.parametrize('kwargs', [{'level': 10}, {'level': -1},
                                    {'threads': 0}, {'block_size': 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        list(compression.gzip_compress([b'x'], **kwargs))


@pytest.mark.parametrize('sizes', [[], [0], [5], [3, 4, 9, 1], [16, 16],
                                   [40], [1] * 20])
def test_blocks_recuts_exactly(sizes):
    data = os.urandom(sum(sizes))
    pieces, start = [], 0
    for n in sizes:
        pieces.append(data[start:start + n])
        start += n
    out = list(compression.blocks(pieces, 8))
    assert b''.join(out) == data
    assert all(len(b) == 8 for b in out[:-1])
    assert all(0 < len(b) <= 8 for b in out)
