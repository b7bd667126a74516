"""Parallel gzip compression and strict decompression: outcomes only."""

import gzip
import itertools
import json
import os
import random
import shutil
import subprocess
import threading
import zlib

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
ENGINE_LEVELS = [('isal', 0), ('isal', 1), ('isal', 3), ('zlib', 1),
                 ('zlib', 6)]


@pytest.mark.parametrize('size', SIZES)
@pytest.mark.parametrize('threads', [1, 2, 4])
@pytest.mark.parametrize('engine,level', ENGINE_LEVELS)
def test_round_trip_small_blocks(size, threads, engine, level):
    data = _json_like(size)
    blob = _compress(data, level=level, threads=threads, block_size=BLOCK,
                     engine_name=engine)
    assert _decompress(blob, threads=threads) == data
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
    assert len(_compress(data, level=6, engine_name='zlib')) < len(data) / 2.5
    assert len(_compress(data)) < len(data) / 2.5


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


@pytest.mark.parametrize('kwargs', [
    {'level': 10}, {'level': -1}, {'level': 4},
    {'level': 10, 'engine_name': 'zlib'}, {'engine_name': 'gzip'},
    {'threads': 0}, {'block_size': 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        list(compression.gzip_compress([b'x'], **kwargs))


@pytest.mark.parametrize('kwargs', [{'threads': 0}, {'engine_name': 'x'}])
def test_bad_decompress_arguments(kwargs):
    with pytest.raises(ValueError):
        list(compression.gzip_decompress([_compress(b'x')], **kwargs))


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


# -- members that carry their size: parallel inflate ------------------------

def _members(blob):
    """(offset, size, FEXTRA subfields) of each member, walking the sizes
    the headers give (fails on a member without one)."""
    out, offset = [], 0
    while offset < len(blob):
        flags, xlen = blob[offset + 3], int.from_bytes(
            blob[offset + 10:offset + 12], 'little')
        assert blob[offset:offset + 3] == compression.GZIP_MAGIC
        assert flags == 0x04                        # FEXTRA, nothing else
        extra = blob[offset + 12:offset + 12 + xlen]
        assert extra[:2] == b'TR' and extra[2:4] == b'\x04\x00'
        size = int.from_bytes(extra[4:8], 'little')
        out.append((offset, size, extra))
        offset += size
    assert offset == len(blob)
    return out


@pytest.mark.parametrize('engine', sorted(compression.ENGINES))
def test_every_member_records_its_own_size(engine):
    data = _json_like(5 * BLOCK + 3)
    blob = _compress(data, block_size=BLOCK, engine_name=engine)
    members = _members(blob)
    assert len(members) == 6
    # each member alone is a whole gzip file of its block
    for number, (offset, size, _extra) in enumerate(members):
        assert gzip.decompress(blob[offset:offset + size]) == data[
            number * BLOCK:(number + 1) * BLOCK]


def test_pigz_reads_our_output():
    data = _json_like(3 * 10 ** 6)
    blob = _compress(data, block_size=BLOCK)
    assert subprocess.run(['pigz', '-dc'], input=blob, capture_output=True,
                          check=True).stdout == data


@pytest.mark.parametrize('writer', sorted(compression.ENGINES))
@pytest.mark.parametrize('reader', sorted(compression.ENGINES))
def test_each_engine_reads_the_other(writer, reader):
    data = _json_like(3 * BLOCK + 11)
    blob = _compress(data, block_size=BLOCK, engine_name=writer)
    assert _decompress(blob, engine_name=reader) == data


def _previous_format(data, block=BLOCK):
    """What this project wrote before members carried their size: zlib
    gzip members with a bare 10-byte header."""
    def member(part):
        deflater = zlib.compressobj(1, zlib.DEFLATED, 31)
        return deflater.compress(part) + deflater.flush()
    return b''.join(member(data[i:i + block])
                    for i in range(0, max(len(data), 1), block))


@pytest.mark.parametrize('engine', sorted(compression.ENGINES))
def test_backups_of_the_previous_format_still_decompress(engine):
    data = _json_like(4 * BLOCK + 9)
    blob = _previous_format(data)
    assert blob[3] == 0                            # no FEXTRA
    assert _decompress(blob, engine_name=engine) == data


def test_sized_members_then_plain_ones_decompress_in_order():
    first, second, third = (_json_like(2 * BLOCK + 1, seed=s)
                            for s in (1, 2, 3))
    blob = (_compress(first, block_size=BLOCK)
            + _gzip_binary('-c', data=second)
            + _compress(third, block_size=BLOCK))
    assert _decompress(blob) == first + second + third


class _Spy:
    """An engine that notes which thread inflates each member."""

    def __init__(self, name='isal'):
        self.real = compression.ENGINES[name]
        self.threads = set()
        self.lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.real, name)

    def decompressobj(self, wbits=31):
        with self.lock:
            self.threads.add(threading.current_thread().name)
        return self.real.decompressobj(wbits)


def test_sized_members_inflate_on_the_pool_threads(monkeypatch):
    spy = _Spy()
    monkeypatch.setitem(compression.ENGINES, 'spy', spy)
    data = _json_like(40 * BLOCK)
    blob = _compress(data, block_size=BLOCK)
    assert _decompress(blob, piece=70001, threads=2,
                       engine_name='spy') == data
    assert len(spy.threads) == 2
    assert all(name.startswith('gunzip') for name in spy.threads)


def test_previous_format_inflates_on_the_callers_thread(monkeypatch):
    spy = _Spy()
    monkeypatch.setitem(compression.ENGINES, 'spy', spy)
    data = _json_like(8 * BLOCK)
    assert _decompress(_previous_format(data), engine_name='spy') == data
    assert spy.threads == {threading.current_thread().name}


def test_a_member_larger_than_the_parallel_limit_streams(monkeypatch):
    monkeypatch.setattr(compression, 'MAX_PARALLEL_MEMBER', BLOCK)
    data = _json_like(3 * BLOCK)
    blob = _compress(data, block_size=2 * BLOCK)   # members inflate to 2x
    got = list(compression.gzip_decompress(_chunks(blob, 4099),
                                           out_size=BLOCK // 4))
    assert b''.join(got) == data
    assert max(map(len, got)) <= BLOCK // 4


def test_decompressed_pieces_of_sized_members_are_bounded():
    data = _json_like(4 * BLOCK)
    blob = _compress(data, block_size=BLOCK)
    got = list(compression.gzip_decompress([blob], out_size=1000))
    assert b''.join(got) == data
    assert all(isinstance(p, bytes) and 0 < len(p) <= 1000 for p in got)


def _resized(blob, member, delta):
    """``blob`` with the size in the header of ``member`` changed."""
    offset = _members(blob)[member][0]
    out = bytearray(blob)
    field = offset + 16
    size = max(0, int.from_bytes(out[field:field + 4], 'little') + delta)
    out[field:field + 4] = size.to_bytes(4, 'little')
    return bytes(out)


@pytest.mark.parametrize('delta', [-1, 1, -100, 10 ** 6, -1000000])
def test_a_member_whose_header_lies_about_its_size_never_gives_wrong_data(
        delta):
    """The size only says where to cut: a wrong one gives a member that
    does not inflate whole (an error), or one whose trailer is out of
    bounds, which then inflates on one thread, CRC-checked as any."""
    data = _json_like(4 * BLOCK)
    blob = _resized(_compress(data, block_size=BLOCK), 1, delta)
    try:
        assert _decompress(blob) == data
    except compression.CompressedStreamError as exc:
        assert 'member 2' in str(exc)


def test_a_member_whose_trailer_lies_about_its_length_is_an_error():
    blob = bytearray(_compress(_json_like(2 * BLOCK), block_size=BLOCK))
    offset, size, _extra = _members(bytes(blob))[0]
    end = offset + size
    isize = int.from_bytes(blob[end - 4:end], 'little')
    blob[end - 4:end] = (isize - 1000).to_bytes(4, 'little')
    with pytest.raises(compression.CompressedStreamError, match='member 1'):
        _decompress(bytes(blob))


@pytest.mark.parametrize('where', ['crc', 'body'])
def test_a_damaged_sized_member_is_an_error(where):
    blob = bytearray(_compress(_json_like(3 * BLOCK), block_size=BLOCK))
    offset, size, _extra = _members(bytes(blob))[1]
    blob[offset + (size - 8 if where == 'crc' else size // 2)] ^= 0x10
    with pytest.raises(compression.CompressedStreamError, match='member 2'):
        _decompress(bytes(blob))


@pytest.mark.parametrize('tail', [b'\0' * 40, b'garbage!', b'\x1f'])
def test_trailing_bytes_after_sized_members_are_an_error(tail):
    blob = _compress(_json_like(2 * BLOCK), block_size=BLOCK)
    with pytest.raises(compression.CompressedStreamError):
        _decompress(blob + tail)


def test_decompression_reads_a_bounded_number_of_members_ahead():
    data = _json_like(BLOCK)
    member = _compress(data, block_size=BLOCK)
    pulled = [0]

    def endless():
        while True:
            pulled[0] += 1
            yield member

    before = threading.active_count()
    stream = compression.gzip_decompress(endless(), threads=2)
    assert list(itertools.islice(stream, 3)) == [data] * 3
    # 3 given out, at most threads + 1 held, one being cut off
    assert pulled[0] <= 3 + 3 + 1
    stream.close()
    assert threading.active_count() == before


def test_an_input_error_while_inflating_propagates_and_stops_the_pool():
    member = _compress(_json_like(BLOCK), block_size=BLOCK)
    before = threading.active_count()

    def failing():
        yield from [member] * 5
        raise OSError('download failed')

    with pytest.raises(OSError, match='download failed'):
        list(compression.gzip_decompress(failing()))
    assert threading.active_count() == before
