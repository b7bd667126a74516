#!/usr/bin/env python3
"""Deflate engines side by side on 1 MiB blocks: ratio, deflate, inflate.

How the backup engine and its default level were chosen.  Every engine
compresses the same data cut into the agent's 1 MiB blocks (one gzip
member each, as ``gzip_compress`` writes them) on one thread and on two,
then inflates what it wrote; medians of ``--repeat`` rounds, MB/s of
uncompressed bytes.  The data: a tar of a real CouchDB 3.5 data directory
loaded by ``tools/bench_couchdb_data.py`` (``--couchdb 256MiB``, the
default), the synthetic data of ``tools/bench_backup.py``
(``--synthetic``), or any file or directory (``--data PATH``).

Engines: the standard library's zlib and ISA-L (``isal``, the agent's
dependency) always; zlib-ng (``zlib-ng``) and libdeflate (``deflate``)
when installed (``pip install zlib-ng deflate``: they are not the agent's
dependencies, only candidates that were measured).

    .venv/bin/python tools/bench_engines.py                  # CouchDB data
    .venv/bin/python tools/bench_engines.py --synthetic --size 64MiB
"""

import argparse
import io
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import threading
import time
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'tools'))

import bench_backup  # noqa: E402  (sizes and the synthetic corpus)

MiB = 2 ** 20
BLOCK = MiB


def _zlib_like(module, level):
    def deflate(block):
        compressor = module.compressobj(level, zlib.DEFLATED, 31)
        return compressor.compress(block) + compressor.flush()

    def inflate(member):
        return module.decompressobj(31).decompress(member)
    return deflate, inflate


def engines():
    """[(name, deflate, inflate)], the optional ones when installed."""
    from isal import isal_zlib
    found = [('zlib %d' % level,) + _zlib_like(zlib, level)
             for level in (1, 6)]
    found += [('isal %d' % level,) + _zlib_like(isal_zlib, level)
              for level in range(4)]
    missing = []
    try:
        from zlib_ng import zlib_ng
        found += [('zlib-ng %d' % level,) + _zlib_like(zlib_ng, level)
                  for level in (1, 2, 4)]
    except ImportError:
        missing.append('zlib-ng')
    try:
        import deflate as libdeflate
        found += [('libdeflate %d' % level,
                   lambda b, lv=level: libdeflate.gzip_compress(b, lv),
                   libdeflate.gzip_decompress) for level in (1, 4, 6)]
    except ImportError:
        missing.append('deflate (libdeflate)')
    return found, missing


def on_threads(work, items, threads):
    """Seconds to apply ``work`` to every item on ``threads`` threads."""
    out = [None] * len(items)

    def run(first):
        for i in range(first, len(items), threads):
            out[i] = work(items[i])

    pool = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    start = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - start, out


def timed(work, items, threads, repeat):
    """Median seconds over ``repeat`` rounds, and the last round's output."""
    times = []
    for _ in range(repeat):
        seconds, out = on_threads(work, items, threads)
        times.append(seconds)
    return statistics.median(times), out


def tar_of(path, size):
    """The first ``size`` bytes of a tar of ``path`` (or of the file)."""
    if os.path.isfile(path):
        with open(path, 'rb') as f:
            return f.read(size)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        tar.add(path, arcname='data')
    return buf.getvalue()[:size]


def synthetic(size):
    import random
    docs = bench_backup._corpus(32 * MiB, bench_backup._doc, seed=1)
    return b''.join(bytes(p) for p in docs.pieces(random.Random(2), size))


def couchdb_data(size, workdir):
    import bench_couchdb_data
    data_dir, _counts, _files = bench_couchdb_data.build_couchdb_dataset(
        os.path.join(workdir, 'couchdb-data'), size, log=lambda *a: None)
    return tar_of(data_dir, size * 2)


def measure(data, repeat):
    blocks = [data[i:i + BLOCK] for i in range(0, len(data), BLOCK)]
    found, missing = engines()
    print('%d MiB in %d blocks of 1 MiB; medians of %d rounds, MB/s of '
          'uncompressed bytes' % (len(data) // MiB, len(blocks), repeat))
    print('%-14s %6s %10s %10s %10s %10s' % (
        'engine', 'ratio', 'deflate x1', 'deflate x2', 'inflate x1',
        'inflate x2'))
    for name, deflate, inflate in found:
        rates = []
        members = None
        for work in (deflate, inflate):
            items = blocks if work is deflate else members
            for threads in (1, 2):
                seconds, out = timed(work, items, threads, repeat)
                rates.append(len(data) / seconds / 1e6)
            if work is deflate:
                members = out
            elif b''.join(out) != data:
                raise RuntimeError('%s does not give the data back' % name)
        ratio = len(data) / sum(map(len, members))
        print('%-14s %6.3f %10.0f %10.0f %10.0f %10.0f' % (
            (name, ratio) + tuple(rates)), flush=True)
    if missing:
        print('not installed, not measured: %s' % ', '.join(missing))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--couchdb', type=bench_backup.parse_size,
                        default=256 * MiB,
                        help='load a real CouchDB 3.5 data directory of '
                        'this size (default 256MiB) and measure its tar')
    source.add_argument('--synthetic', action='store_true',
                        help="tools/bench_backup.py's synthetic documents")
    source.add_argument('--data', help='a file or directory to measure')
    parser.add_argument('--size', type=bench_backup.parse_size,
                        default=128 * MiB,
                        help='bytes measured (default 128MiB)')
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix='bench-engines-')
    try:
        if args.data:
            data = tar_of(args.data, args.size)
        elif args.synthetic:
            data = synthetic(args.size)
        else:
            data = couchdb_data(max(args.couchdb, args.size), workdir)
        measure(data[:args.size], args.repeat)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
