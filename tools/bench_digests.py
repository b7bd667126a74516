#!/usr/bin/env python3
"""Digests side by side: how an incremental backup's digest was chosen.

An incremental backup proves the part of each file its parent holds
unchanged by hashing all of it (``trove/guestagent/backup/digest.py``), so
the digest's speed is the floor of an incremental's time.  This measures,
on the same random bytes in memory, each candidate of ``hashlib`` on one
thread, then the agent's digest (SHA-256 of 16 MiB blocks' SHA-256s) of
a file of those bytes read with ``digest.read_prefix`` on every core, as
a backup does.  Medians of ``--repeat`` rounds, MiB/s.

    .venv/bin/python tools/bench_digests.py
    .venv/bin/python tools/bench_digests.py --size 64MiB --repeat 1
"""

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'tools'))

import bench_backup  # noqa: E402  (its size parser)
from trove.guestagent.backup import digest  # noqa: E402

MiB = 2 ** 20
CANDIDATES = ('sha256', 'sha1', 'blake2b', 'md5')


def _median_seconds(work, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=bench_backup.parse_size,
                        default=256 * MiB)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args(argv)
    data = os.urandom(args.size)
    mib = args.size / MiB
    print('%-44s %10s' % ('digest', 'MiB/s'))
    for name in CANDIDATES:
        seconds = _median_seconds(
            lambda name=name: hashlib.new(name, data).digest(), args.repeat)
        print('%-44s %10.0f' % ('%s, one thread' % name, mib / seconds))
    with tempfile.TemporaryFile() as stream:
        stream.write(data)
        stream.flush()
        threads = os.cpu_count() or 1
        with digest.pool(threads) as pool:
            seconds = _median_seconds(
                lambda: digest.read_prefix(stream.fileno(), args.size,
                                           pool).hexdigest(),
                args.repeat)
        print('%-44s %10.0f' % (
            "the agent's digest of a file, %d threads" % threads,
            mib / seconds))


if __name__ == '__main__':
    main()
