#!/usr/bin/env python3
"""Throughput of the backup stream stages on JSON-like data, in memory.

Measures each stage alone (gzip_compress at several levels and thread
counts, gzip_decompress, encrypt, decrypt), compress + encrypt chained (a
backup without tar and upload) and open_stream + decompress (a restore), and
with --external the gzip / pigz / zstd / openssl binaries on the same bytes
for comparison.  Rates are MB/s (10^6 bytes) of uncompressed data.

    .venv/bin/python tools/bench_streams.py --size-mib 256 --external
"""

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from trove.guestagent.backup import compression  # noqa: E402
from trove.guestagent.backup import encryption  # noqa: E402

MB = 10 ** 6
KEY = 'benchmark key, not a secret'
# The key travels in the environment (BENCH_PASS), never in argv.
_OPENSSL_ENC = ['openssl', 'enc', '-aes-256-cbc', '-salt',
                '-pass', 'env:BENCH_PASS']
_DOC = ('{"_id":"%s","_rev":"%d-%s","type":"%s","customer":"%s %s",'
        '"city":"%s","items":%d,"total":%d.%02d,"paid":%s,'
        '"currency":"EUR","status":"%s","tags":["%s","%s"],'
        '"created":"2024-%02d-%02dT%02d:%02d:%02dZ"}\n')
_STATUS = ('pending', 'paid', 'shipped', 'delivered', 'returned')
_TAGS = ('priority', 'gift', 'bulk', 'export', 'promo', 'retail', 'b2b')


def json_like(size, seed=1):
    """``size`` bytes of small JSON documents (gzip -6: about 3-4x)."""
    rnd = random.Random(seed)
    words = ['%s%s' % (rnd.choice('bcdfghjklmnprstvz'),
                       rnd.randbytes(3).hex()) for _ in range(2000)]
    parts, total = [], 0
    while total < size:
        doc = _DOC % (
            rnd.randbytes(16).hex(), rnd.randint(1, 9),
            rnd.randbytes(16).hex(),
            rnd.choice(('order', 'invoice', 'user', 'event')),
            rnd.choice(words), rnd.choice(words), rnd.choice(words[:50]),
            rnd.randint(1, 40), rnd.randint(0, 9999), rnd.randint(0, 99),
            rnd.choice(('true', 'false')), rnd.choice(_STATUS),
            rnd.choice(_TAGS), rnd.choice(_TAGS), rnd.randint(1, 12),
            rnd.randint(1, 28), rnd.randint(0, 23), rnd.randint(0, 59),
            rnd.randint(0, 59))
        parts.append(doc)
        total += len(doc)
    return ''.join(parts).encode()[:size]


def pieces(data, size):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def collect(chunks):
    return b''.join(chunks)


def drain(chunks):
    return sum(len(c) for c in chunks)


def timed(repeat, func, *args, **kwargs):
    """(result, best wall time of ``repeat`` runs)."""
    best = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func(*args, **kwargs)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return result, best


def report(name, basis, seconds, out_len=None):
    ratio = '' if out_len is None else '%8.3f' % (out_len / basis)
    print('%-44s %9.1f MB/s %7.2f s %s' % (name, basis / MB / seconds,
                                           seconds, ratio), flush=True)


# Each timed stage drains its output (counts the bytes): keeping hundreds of
# MiB of output would time the allocator, not the stage.

def compress(data, chunk, level, threads, keep=drain):
    return keep(compression.gzip_compress(
        pieces(data, chunk), level=level, threads=threads))


def decompress(blob, chunk):
    return drain(compression.gzip_decompress(pieces(blob, chunk)))


def encrypt(data, chunk, keep=drain):
    return keep(encryption.encrypt(pieces(data, chunk), KEY))


def decrypt(blob, chunk):
    return drain(encryption.decrypt(pieces(blob, chunk), KEY))


def backup(chunks, level, threads, keep=drain):
    return keep(encryption.encrypt(compression.gzip_compress(
        chunks, level=level, threads=threads), KEY))


def restore(blob, chunk):
    return drain(compression.gzip_decompress(encryption.open_stream(
        pieces(blob, chunk), KEY)))


def bench_stages(data, args):
    size, chunk, repeat = len(data), args.chunk, args.repeat
    for level in args.levels:
        for threads in args.threads:
            out, secs = timed(repeat, compress, data, chunk, level, threads)
            report('gzip_compress level %s, %s threads' % (level, threads),
                   size, secs, out)
    blob = compress(data, chunk, args.levels[0], max(args.threads), collect)
    out, secs = timed(repeat, decompress, blob, chunk)
    assert out == size
    report('gzip_decompress (of level %s)' % args.levels[0], size, secs)
    out, secs = timed(repeat, encrypt, data, chunk)
    report('encrypt (AES-256-GCM, 1 MiB chunks)', size, secs, out)
    sealed = encrypt(data, chunk, collect)
    out, secs = timed(repeat, decrypt, sealed, chunk)
    assert out == size
    report('decrypt', size, secs)


def bench_chains(data, args):
    level, threads = args.levels[0], max(args.threads)
    out, secs = timed(args.repeat, lambda: backup(
        pieces(data, args.chunk), level, threads))
    report('backup: compress -%s x%s + encrypt' % (level, threads),
           len(data), secs, out)
    blob = backup(pieces(data, args.chunk), level, threads, collect)
    out, secs = timed(args.repeat, restore, blob, args.chunk)
    assert out == len(data)
    report('restore: open_stream + decompress', len(data), secs)


def tar_backup(directory, level, threads):
    """tar c DIR | our compress + encrypt, read as the agent would."""
    with subprocess.Popen(['tar', 'c', '-C', directory, '.'],
                          stdout=subprocess.PIPE) as tar:
        chunks = iter(lambda: tar.stdout.read(65536), b'')
        out = backup(chunks, level, threads)
    if tar.returncode:
        raise RuntimeError('tar exited with %s' % tar.returncode)
    return out


def bench_tar(data, args):
    """The whole backup minus upload: ours against upstream's pipeline."""
    level, threads = args.levels[0], max(args.threads)
    with tempfile.TemporaryDirectory(prefix='bench-streams-') as directory:
        for index, start in enumerate(range(0, len(data), 4 * 2 ** 20)):
            with open(os.path.join(directory, 'shard%04d.couch' % index),
                      'wb') as out:
                out.write(data[start:start + 4 * 2 ** 20])
        out, secs = timed(args.repeat, tar_backup, directory, level, threads)
        report('tar | compress -%s x%s | encrypt (ours)' % (level, threads),
               len(data), secs, out)
        tar = ['tar', 'c', '-C', directory, '.']
        out, secs = timed(args.repeat, run_pipeline,
                          [tar, ['gzip'], _OPENSSL_ENC], b'')
        report('tar | gzip | openssl enc (upstream)', len(data), secs, out)


def run_pipeline(argvs, data, keep=False):
    """Pipe ``data`` through the commands: the output (or its length)."""
    env = dict(os.environ, BENCH_PASS=KEY, LC_ALL='C')
    procs, stdin = [], subprocess.PIPE
    for argv in argvs:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env)
        if procs:
            procs[-1].stdout.close()
        procs.append(proc)
        stdin = proc.stdout

    def feed():
        with procs[0].stdin as sink:
            for piece in pieces(data, MB):
                sink.write(piece)

    feeder = threading.Thread(target=feed)
    feeder.start()
    outputs = iter(lambda: procs[-1].stdout.read(MB), b'')
    total = collect(outputs) if keep else drain(outputs)
    feeder.join()
    for proc in procs:
        if proc.wait():
            raise RuntimeError('%s exited with %s' % (proc.args[0],
                                                      proc.returncode))
    return total


def external_pipelines():
    enc = _OPENSSL_ENC
    dec = enc[:2] + ['-d'] + enc[2:]
    yield 'gzip -1', [['gzip', '-1']]
    yield 'gzip -6', [['gzip', '-6']]
    yield 'upstream: gzip -6 | openssl enc', [['gzip', '-6'], enc]
    yield 'pigz -1 (2 threads)', [['pigz', '-1', '-p', '2']]
    yield 'pigz -6 (2 threads)', [['pigz', '-6', '-p', '2']]
    yield 'zstd -1', [['zstd', '-1', '-q', '-c']]
    yield 'openssl enc alone', [enc]
    yield 'restore: openssl -d | gzip -dc', [dec, ['gzip', '-dc']]
    yield 'restore: openssl -d | pigz -dc', [dec, ['pigz', '-dc']]


def bench_external(data, args):
    upstream = None
    for name, argvs in external_pipelines():
        missing = [a[0] for a in argvs if shutil.which(a[0]) is None]
        if missing:
            print('%-44s (not installed: %s)' % (name, ' '.join(missing)))
        elif name.startswith('restore'):    # reads the upstream object
            out, secs = timed(args.repeat, run_pipeline, argvs, upstream)
            assert out == len(data)
            report(name, len(data), secs)
        else:
            out, secs = timed(args.repeat, run_pipeline, argvs, data)
            report(name, len(data), secs, out)
            if name.startswith('upstream'):
                upstream = run_pipeline(argvs, data, keep=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size-mib', type=int, default=256)
    parser.add_argument('--chunk', type=int, default=65536,
                        help='size of the input chunks fed to each stage')
    parser.add_argument('--levels', type=int, nargs='+', default=[1, 6])
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--repeat', type=int, default=1,
                        help='runs of each measurement; the best counts')
    parser.add_argument('--external', action='store_true',
                        help='also time the gzip/pigz/zstd/openssl binaries')
    parser.add_argument('--tar', action='store_true',
                        help='also time tar | ours against tar | gzip | '
                        'openssl enc over the data written to files')
    parser.add_argument('--seed', type=int, default=1)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    data = json_like(args.size_mib * 2 ** 20, args.seed)
    print('%d MiB of JSON-like data generated in %.1f s; %d CPUs; '
          'load average %.2f' % (args.size_mib, time.perf_counter() - start,
                                 os.cpu_count(), os.getloadavg()[0]))
    print('%-44s %14s %9s %8s' % ('stage', 'rate', 'time', 'out/in'))
    bench_stages(data, args)
    bench_chains(data, args)
    if args.tar:
        bench_tar(data, args)
    if args.external:
        bench_external(data, args)


if __name__ == '__main__':
    main()
