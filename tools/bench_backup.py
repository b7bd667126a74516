#!/usr/bin/env python3
"""Backup and restore to Swift: this project against upstream, and the limits.

One run of this script:

1. starts a private single-node Swift (integration.services.swift) in a
   temporary directory, and builds a CouchDB 1.6-like data directory of
   ``--size`` bytes there (``<db>.couch`` files of appended JSON documents,
   ``.<db>_design/`` view index files, a few dozen files of varied sizes,
   about 3x compressible with gzip -6: the ratio of a sample is printed);
   with ``--couchdb``, a real CouchDB 3.5 data directory instead, loaded
   through its HTTP API by ``tools/bench_couchdb_data.py`` until it holds
   ``--size`` bytes (snappy-compressed document bodies, old revisions,
   view index files; about 2.1x with gzip -6).
   The documents come from a 32 MiB corpus of unique ones, sliced at random
   document boundaries: gzip sees only its 32 KiB window, so the repetition
   at a distance changes nothing for it, and building 1 GiB takes seconds;
2. measures, ``--repeat`` rounds, the median counting (the page cache
   cannot be dropped here: every measurement reads warm data, its input
   read again, untimed, just before it, since this VM pages out file
   data left idle for ~30 s; a Swift object too, since Swift's first read
   of a new object costs it twice the CPU of later ones):

   - ours, backup: the real strategy, ``CouchDBBackup.run()`` (the
     ``stream(meta, progress)`` of tar, parallel gzip and AES-256-GCM saved
     by ``SwiftStorage``) with the agent's default options (ISA-L), the
     only change being ``data_dir`` (and ``snapshot()``, which would ask
     CouchDB, returns a meta dict of the same shape);
   - ours, restore: ``CouchDBRestore._extract()`` (download, checksum,
     decrypt, parallel gunzip, safe extraction into a staging dir, commit)
     into an empty directory;
   - the same two with ``backup_compression_engine = zlib`` (the
     standard library's zlib: this project's pipeline before ISA-L), and
     that restore once more on one inflating thread (as restores ran
     before members carried their size);
   - upstream: ``tar cpPf - DIR | gzip | openssl enc -aes-256-cbc -salt``
     (key through ``-pass fd:N``) read by the same ``SwiftStorage.save``,
     and back: ``get_object | openssl enc -d | gzip -dc | tar x`` (with -C
     and --strip-components instead of absolute names);
   - each engine alone on all cores: ``tar cf - DIR |`` ``gzip_compress``
     with ISA-L and with zlib, ``pigz -1`` and upstream's ``gzip -6``, to
     nothing; ``gzip_decompress`` (ISA-L, zlib), ``pigz -dc`` and ``gzip
     -dc`` of the backup's compressed stream (a warm file);
   - the limits: a plain streamed ``put_object`` of as many random bytes
     as the backup object, and a plain ``get_object`` of it;

   each in its own child process (``--child``), timed inside the child from
   the start of the work to its end (interpreter start-up excluded), with
   the child's peak RSS (VmHWM): ours are the agent's code, so theirs is
   the agent's peak RSS.  ``sync`` runs (untimed) before each measurement
   so that one's write-back does not slow the next.  Each also shows the
   CPU seconds spent while it ran: by the child (all threads; its system
   time apart), by its tools (tar, gzip, openssl), by Swift's processes
   and by everything else on the machine (other work makes the rates low
   and noisy: the summary warns when there was some); ours and the
   engines also show each thread's CPU.  ``--profile ours-backup,...``
   records chosen children with py-spy (all threads) or cProfile;
3. runs ours again on a ``--rss-size`` data directory (256 MiB) to compare
   the peak RSS of two sizes, prints the table and PASS/FAIL for each target
   of issue 13, stops Swift and removes every temporary file, whatever
   happens.  Rates are MB/s (10^6 bytes) of data directory bytes.

    .venv/bin/python tools/bench_backup.py                 # 1 GiB, 3 rounds
    .venv/bin/python tools/bench_backup.py --size 256MiB --repeat 1
    .venv/bin/python tools/bench_backup.py --couchdb       # real 3.5 data

Exit status 0 whatever the numbers; non-zero only when something crashed.
"""

import argparse
import bisect
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MB = 10 ** 6
MiB = 2 ** 20
GiB = 2 ** 30
KEY_ENV = 'BENCH_BACKUP_KEY'
KEY = 'bench-backup key: not a secret, never in argv'
CONTAINER = 'bench_backups'
CHILD_TIMEOUT = 3600
READ_CHUNK = MiB
UPSTREAM_CHUNK = 64 * 1024     # upstream Trove's backup_chunk_size


# --- sizes ----------------------------------------------------------------

_UNITS = {'': 1, 'b': 1, 'k': 2 ** 10, 'kib': 2 ** 10, 'kb': 10 ** 3,
          'm': 2 ** 20, 'mib': 2 ** 20, 'mb': 10 ** 6,
          'g': 2 ** 30, 'gib': 2 ** 30, 'gb': 10 ** 9,
          't': 2 ** 40, 'tib': 2 ** 40, 'tb': 10 ** 12}


def parse_size(text):
    """'1GiB', '256MiB', '300MB', '4096' -> bytes (K/M/G alone: binary)."""
    match = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*', text)
    if not match or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError('not a size: %r' % text)
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def human(size):
    for unit, scale in (('GiB', GiB), ('MiB', MiB), ('KiB', 1024)):
        if size >= scale and size % scale == 0:
            return '%d%s' % (size // scale, unit)
    return '%.1fMB' % (size / MB)


# --- the data directory ---------------------------------------------------

_DOC = ('{"_id":"%s","_rev":"%d-%s","type":"%s","session":"%s",'
        '"customer":{"name":"%s %s","city":"%s","email":"%s@%s.example"},'
        '"items":[%s],"total":%d.%02d,"paid":%s,"currency":"%s",'
        '"status":"%s","tags":["%s","%s"],'
        '"created":"2024-%02d-%02dT%02d:%02d:%02dZ","note":"%s"}')
_ITEM = '{"sku":"%s-%04d","qty":%d,"price":%d.%02d}'
_ROW = ('{"id":"%s","key":["%s","2024-%02d-%02d",%d],'
        '"value":{"total":%d.%02d,"status":"%s","n":%d}}')
_STATUS = ('pending', 'paid', 'shipped', 'delivered', 'returned',
           'cancelled')
_TAGS = ('priority', 'gift', 'bulk', 'export', 'promo', 'retail', 'b2b',
         'vip')
_TYPES = ('order', 'invoice', 'user', 'event', 'shipment')
_SYLLABLES = ('ka', 'lo', 'mi', 'ne', 'ra', 'to', 'su', 'vi', 'de', 'ba',
              'zu', 'pe', 'qui', 'fo', 'gra', 'shi', 'an', 'el', 'or', 'ur')
_DATABASES = ('orders', 'invoices', 'customers', 'events', 'sessions',
              'inventory', 'shipments', 'payments', 'audit_log', 'metrics',
              'catalog', 'reviews', 'carts', 'messages', 'notifications',
              'tickets', 'profiles', 'analytics', 'billing', 'logs_2024',
              'logs_2025', 'geo', 'devices', 'feeds')


class Corpus:
    """Framed records (like a .couch file's appended terms) and their
    offsets, to slice at record boundaries."""

    def __init__(self, data, offsets):
        self.data = memoryview(data)
        self.offsets = offsets
        self.record_size = len(data) / (len(offsets) - 1)

    def pieces(self, rnd, size):
        """``size`` bytes of whole records from random places."""
        last = self.offsets[-1]
        while size > 0:
            want = min(size, rnd.randint(64 * 1024, 1024 * 1024))
            first = rnd.randrange(len(self.offsets) - 1)
            start = self.offsets[first]
            end = min(start + want, last)
            end = self.offsets[bisect.bisect_left(self.offsets, end)]
            piece = self.data[start:min(end, start + size)]
            size -= len(piece)
            yield piece


def _frame(text):
    body = text.encode()
    # length, then term_to_binary's version tag, then the body
    return struct.pack('>IB', len(body) + 1, 0x83) + body


def _corpus(size, make, seed):
    rnd = random.Random(seed)
    words = [''.join(rnd.choice(_SYLLABLES)
                     for _ in range(rnd.randint(2, 4))) for _ in range(3000)]
    data, offsets = bytearray(), [0]
    while len(data) < size:
        data += _frame(make(rnd, words))
        offsets.append(len(data))
    return Corpus(bytes(data), offsets)


def _doc(rnd, words):
    skus = words[:60]
    items = ','.join(_ITEM % (
        rnd.choice(skus).upper()[:3], rnd.randint(0, 9999),
        rnd.randint(1, 9), rnd.randint(0, 499), rnd.randint(0, 99))
        for _ in range(rnd.randint(1, 4)))
    note = ' '.join(rnd.choice(words) for _ in range(rnd.randint(0, 12)))
    return _DOC % (
        rnd.randbytes(16).hex(), rnd.randint(1, 9), rnd.randbytes(16).hex(),
        rnd.choice(_TYPES), rnd.randbytes(4).hex(),
        rnd.choice(words).title(), rnd.choice(words).title(),
        rnd.choice(words[:80]).title(), rnd.choice(words),
        rnd.choice(words[:40]), items, rnd.randint(0, 9999),
        rnd.randint(0, 99), rnd.choice(('true', 'false')),
        rnd.choice(('EUR', 'USD', 'GBP', 'CHF')), rnd.choice(_STATUS),
        rnd.choice(_TAGS), rnd.choice(_TAGS), rnd.randint(1, 12),
        rnd.randint(1, 28), rnd.randint(0, 23), rnd.randint(0, 59),
        rnd.randint(0, 59), note)


def _row(rnd, words):
    return _ROW % (
        rnd.randbytes(16).hex(), rnd.choice(words), rnd.randint(1, 12),
        rnd.randint(1, 28), rnd.randint(0, 999), rnd.randint(0, 9999),
        rnd.randint(0, 99), rnd.choice(_STATUS), rnd.randint(0, 99999))


def _couch_header(rnd, name):
    header = json.dumps({'disk_version': 6, 'db': name,
                         'update_seq': rnd.randint(1, 10 ** 6),
                         'purge_seq': 0}).encode()
    return (b'\x01' + header).ljust(4096, b'\0')


def _split_sizes(rnd, total, count, minimum=8192):
    weights = [rnd.lognormvariate(0, 1.0) for _ in range(count)]
    scale = sum(weights)
    sizes = [max(minimum, int(total * w / scale)) for w in weights]
    sizes[-1] = max(minimum, total - sum(sizes[:-1]))
    return sizes


def build_dataset(root, size, docs, rows, seed=7):
    """A CouchDB 1.6 data dir of exactly ``size`` bytes of files.

    Returns {database: approximate document count} (the meta dict's
    ``databases``) and the file count.
    """
    rnd = random.Random(seed)
    os.makedirs(root)
    plan = []                                  # (path, size, corpus, db)
    system = min(320 * 1024, size // 100)
    views = size * 12 // 100
    dbs = size - views - system
    plan.append(('_users.couch', system * 4 // 5, docs, '_users'))
    plan.append(('_replicator.couch', system - system * 4 // 5, docs,
                 '_replicator'))
    db_sizes = _split_sizes(rnd, dbs, len(_DATABASES))
    for name, part in zip(_DATABASES, db_sizes, strict=True):
        plan.append((name + '.couch', part, docs, name))
    with_views = rnd.sample(_DATABASES, 8)
    index_files = [(db, hashlib.md5(('%s%d' % (db, i)).encode()).hexdigest())
                   for db in with_views for i in range(rnd.randint(1, 3))]
    view_sizes = _split_sizes(rnd, views, len(index_files))
    for (db, digest), part in zip(index_files, view_sizes, strict=True):
        plan.append(('.%s_design/%s.view' % (db, digest), part, rows, None))
    # Exact total: the last file takes up or gives back the difference.
    path, part, corpus, db = plan[-1]
    plan[-1] = (path, part + size - sum(p[1] for p in plan), corpus, db)
    counts = {}
    for path, part, corpus, db in plan:
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, 'wb') as out:
            header = _couch_header(rnd, db or path)[:part]
            out.write(header)
            for piece in corpus.pieces(rnd, part - len(header)):
                out.write(piece)
        if db:
            counts[db] = int(part / corpus.record_size)
    return counts, len(plan)


def directory_size(root):
    total = 0
    for base, _dirs, files in os.walk(root):
        total += sum(os.lstat(os.path.join(base, f)).st_size for f in files)
    return total


def warm(root):
    """Read a file, or every file below a directory, into the page cache."""
    paths = [root] if os.path.isfile(root) else [
        os.path.join(base, name)
        for base, _dirs, files in os.walk(root) for name in files]
    total = 0
    for path in paths:
        with open(path, 'rb') as f:
            while chunk := f.read(8 * MiB):
                total += len(chunk)
    return total


def gzip6_ratio(root, sample=16 * MiB):
    """Input/output of ``gzip -6`` over 2 MiB taken from several files."""
    paths = sorted(os.path.join(base, f) for base, _d, files in os.walk(root)
                   for f in files)
    paths.sort(key=os.path.getsize, reverse=True)
    rnd = random.Random(3)
    picked = bytearray()
    for path in paths[:sample // (2 * MiB)]:
        with open(path, 'rb') as f:
            f.seek(rnd.randrange(max(1, os.path.getsize(path) - 2 * MiB)))
            picked += f.read(2 * MiB)
    packed = subprocess.run(['gzip', '-6', '-c'], input=bytes(picked),
                            stdout=subprocess.PIPE, check=True).stdout
    return len(picked), len(picked) / len(packed)


# --- child processes: each measurement runs in one ------------------------

def peak_rss():
    """This process's peak resident set size in bytes (VmHWM)."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) * 1024
    return 0


def _proc_cpu(pid):
    """CPU seconds (user + system) of a process, 0 when it is gone."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rpartition(')')[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def _machine_busy():
    """CPU seconds spent not idle by the whole machine since boot."""
    with open('/proc/stat') as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]            # idle, iowait
    return (sum(values[:8]) - idle) / os.sysconf('SC_CLK_TCK')


class Window:
    """The timed part of a measurement, and the CPU used during it: by
    this process (all threads), by its subprocesses (tar, gzip...), by
    Swift's processes, and by the rest of the machine."""

    def __init__(self, spec):
        self.swift_pids = spec['swift'].get('pids') or []
        self.cpu0 = self._sample()
        self.main0 = time.thread_time()
        self.t0 = time.perf_counter()

    def _sample(self):
        import resource
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (time.process_time(),
                resource.getrusage(resource.RUSAGE_SELF).ru_stime,
                children.ru_utime + children.ru_stime,
                sum(_proc_cpu(pid) for pid in self.swift_pids),
                _machine_busy())

    def end(self, **extra):
        seconds = time.perf_counter() - self.t0
        own, own_sys, sub, swift, busy = (b - a for a, b in zip(
            self.cpu0, self._sample(), strict=True))
        extra.update(seconds=seconds, cpu_self=own, cpu_sub=sub,
                     cpu_self_sys=own_sys,
                     cpu_main=time.thread_time() - self.main0,
                     cpu_swift=swift,
                     cpu_other=max(0.0, busy - own - sub - swift))
        return extra


def _configure(spec):
    from oslo_config import cfg
    from trove.common import cfg as trove_cfg  # noqa: F401 (registers)
    conf = cfg.CONF
    conf([], project='trove', default_config_files=[])
    swift = spec['swift']
    conf.set_override('swift_url', swift['url_prefix'])
    conf.set_override('backup_swift_container', CONTAINER)
    conf.set_override('backup_aes_cbc_key', os.environ[KEY_ENV])
    conf.set_override('backup_segment_max_size', spec['segment'])
    if spec.get('engine') is not None:
        conf.set_override('backup_compression_engine', spec['engine'])
    if spec.get('level') is not None:
        conf.set_override('backup_compression_level', spec['level'])
    if spec.get('threads') is not None:
        conf.set_override('backup_compression_threads', spec['threads'])
    return conf


def _context(spec):
    from trove.common import context as trove_context
    return trove_context.TroveContext(auth_token=spec['swift']['token'],
                                      project_id=spec['swift']['project'])


def _connection(spec):
    from swiftclient import client as swift_client
    return swift_client.Connection(preauthurl=spec['swift']['storage_url'],
                                   preauthtoken=spec['swift']['token'],
                                   retries=0, timeout=300)


def child_ours_backup(spec):
    """The strategy's run(): stream (tar, gzip, encrypt) saved to Swift."""
    _configure(spec)
    from trove.guestagent.backup.storage import swift as swift_storage
    from trove.guestagent.datastore.experimental.couchdb import client
    from trove.guestagent.strategies.backup.experimental import couchdb_impl

    marks = {}

    class BenchBackup(couchdb_impl.CouchDBBackup):
        """The strategy over a plain directory; CouchDB is not asked."""

        @property
        def data_dir(self):
            return spec['data_dir']

        def snapshot(self):
            return {
                'format': couchdb_impl.FORMAT, 'backup_id': self.backup_id,
                'created': time.time(), 'api_version': client.API_V1,
                'version': '1.6.1',
                'admins': {'admin': '-pbkdf2-%s,%s,10' % (
                    hashlib.sha1(b'a').hexdigest(), os.urandom(16).hex())},
                'uuid': os.urandom(16).hex(),
                'databases': spec['databases']}

        def stream(self, meta, progress, *args, **kwargs):
            inner = super().stream(meta, progress, *args, **kwargs)

            def marked():
                yield from inner
                marks['stream_done'] = time.perf_counter()
            return marked()

    info = {'id': spec['backup_id'], 'datastore': 'couchdb',
            'datastore_version': '1.6.1'}
    context = _context(spec)
    window = Window(spec)
    runner = BenchBackup(context, info, None,
                         swift_storage.SwiftStorage(context))
    result = runner.run()
    return window.end(
        stream_seconds=marks['stream_done'] - window.t0,
        location=result.location, checksum=result.checksum,
        size=result.size, name=runner.object_name())


def child_ours_restore(spec):
    """CouchDBRestore._chain() and _extract(): download, verify, decrypt,
    extract."""
    _configure(spec)
    from trove.guestagent.backup import extract
    from trove.guestagent.strategies.restore.experimental import couchdb_impl

    commit_seconds = []
    original_commit = extract.StagedRestore.commit

    def timed_commit(self):
        start = time.perf_counter()
        try:
            return original_commit(self)
        finally:
            commit_seconds.append(time.perf_counter() - start)

    extract.StagedRestore.commit = timed_commit
    info = {'id': spec['backup_id'], 'location': spec['location'],
            'checksum': spec['checksum'], 'type': 'CouchDBBackup'}
    window = Window(spec)
    runner = couchdb_impl.CouchDBRestore(_context(spec), info,
                                         spec['dest'], None)
    result = runner._extract(runner._chain())
    measured = window.end(commit_seconds=sum(commit_seconds),
                          files=result.files, bytes=result.bytes)
    if result.extra('meta/backup.json') is None:
        raise RuntimeError('the restored archive has no meta/backup.json')
    return measured


def _key_fd():
    """A pipe's read end holding the key: openssl's ``-pass fd:N``."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, os.environ[KEY_ENV].encode() + b'\n')
    os.close(write_fd)
    return read_fd


def _wait_all(procs):
    for proc in procs:
        proc.wait()
    failed = ['%s: %s' % (p.args[0], p.returncode) for p in procs
              if p.returncode]
    if failed:
        raise RuntimeError('pipeline failed (%s)' % ', '.join(failed))


def child_upstream_backup(spec):
    """tar cpPf - DIR | gzip | openssl enc -aes-256-cbc -salt -> Swift."""
    _configure(spec)
    from trove.guestagent.backup.storage import swift as swift_storage
    storage = swift_storage.SwiftStorage(_context(spec))
    key_fd = _key_fd()
    window = Window(spec)
    tar = subprocess.Popen(['tar', 'cpPf', '-', spec['data_dir']],
                           stdout=subprocess.PIPE)
    gzip = subprocess.Popen(['gzip'], stdin=tar.stdout,
                            stdout=subprocess.PIPE)
    tar.stdout.close()
    enc = subprocess.Popen(['openssl', 'enc', '-aes-256-cbc', '-salt',
                            '-pass', 'fd:%d' % key_fd], stdin=gzip.stdout,
                           stdout=subprocess.PIPE, pass_fds=(key_fd,))
    gzip.stdout.close()
    os.close(key_fd)
    try:
        chunks = iter(lambda: enc.stdout.read(UPSTREAM_CHUNK), b'')
        saved = storage.save(spec['name'], chunks)
    finally:
        enc.stdout.close()
        _wait_all([tar, gzip, enc])
    return window.end(location=saved.location, checksum=saved.checksum,
                      size=saved.size)


def child_upstream_restore(spec):
    """get_object | openssl enc -d | gzip -dc | tar x into a scratch dir."""
    conn = _connection(spec)
    key_fd = _key_fd()
    window = Window(spec)
    headers, body = conn.get_object(CONTAINER, spec['name'],
                                    resp_chunk_size=UPSTREAM_CHUNK)
    if headers['etag'].strip('"') != spec['checksum']:
        raise RuntimeError('ETag %s, expected %s' % (headers['etag'],
                                                     spec['checksum']))
    dec = subprocess.Popen(['openssl', 'enc', '-d', '-aes-256-cbc',
                            '-pass', 'fd:%d' % key_fd],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           pass_fds=(key_fd,))
    os.close(key_fd)
    gunzip = subprocess.Popen(['gzip', '-dc'], stdin=dec.stdout,
                              stdout=subprocess.PIPE)
    dec.stdout.close()
    tar = subprocess.Popen(['tar', 'xpf', '-', '-C', spec['dest'],
                            '--strip-components=%d' % spec['strip']],
                           stdin=gunzip.stdout)
    gunzip.stdout.close()
    try:
        with dec.stdin:
            for chunk in body:
                dec.stdin.write(chunk)
    finally:
        _wait_all([dec, gunzip, tar])
    return window.end()


def child_compress_limit(spec):
    """tar cf - DIR | gzip_compress (ours, backup settings) > /dev/null."""
    conf = _configure(spec)
    from trove.guestagent.backup import compression
    threads = conf.backup_compression_threads or os.cpu_count() or 1
    window = Window(spec)
    tar = subprocess.Popen(['tar', 'cf', '-', '-C', spec['data_dir'], '.'],
                           stdout=subprocess.PIPE)
    out = 0
    try:
        chunks = iter(lambda: tar.stdout.read(READ_CHUNK), b'')
        for piece in compression.gzip_compress(
                chunks, level=conf.backup_compression_level,
                threads=threads, block_size=conf.backup_chunk_size,
                engine_name=conf.backup_compression_engine):
            out += len(piece)
    finally:
        tar.stdout.close()
        _wait_all([tar])
    return window.end(out=out, level=conf.backup_compression_level,
                      threads=threads, engine=conf.backup_compression_engine)


def _drain(tool, waited):
    """Bytes ``tool`` writes to its stdout, once ``waited`` have ended."""
    out = 0
    try:
        for chunk in iter(lambda: tool.stdout.read(READ_CHUNK), b''):
            out += len(chunk)
    finally:
        tool.stdout.close()
        _wait_all(waited)
    return out


def child_tool_compress(spec):
    """tar cf - DIR | <a gzip tool> (pigz -1, gzip -6) > /dev/null."""
    window = Window(spec)
    tar = subprocess.Popen(['tar', 'cf', '-', '-C', spec['data_dir'], '.'],
                           stdout=subprocess.PIPE)
    tool = subprocess.Popen(spec['tool'], stdin=tar.stdout,
                            stdout=subprocess.PIPE)
    tar.stdout.close()
    return window.end(out=_drain(tool, [tar, tool]))


def child_tool_decompress(spec):
    """<a gzip tool> -dc < the backup's compressed stream > /dev/null."""
    window = Window(spec)
    with open(spec['gz'], 'rb') as source:
        tool = subprocess.Popen(spec['tool'], stdin=source,
                                stdout=subprocess.PIPE)
        return window.end(out=_drain(tool, [tool]))


def child_decompress_limit(spec):
    """gzip_decompress of the backup's compressed stream > /dev/null."""
    conf = _configure(spec)
    from trove.guestagent.backup import compression
    threads = conf.backup_compression_threads or os.cpu_count() or 1
    window = Window(spec)
    out = 0
    with open(spec['gz'], 'rb') as f:
        chunks = iter(lambda: f.read(READ_CHUNK), b'')
        for piece in compression.gzip_decompress(
                chunks, threads=threads,
                engine_name=conf.backup_compression_engine):
            out += len(piece)
    return window.end(out=out, threads=threads)


def child_upload_limit(spec):
    """A plain streamed put_object of ``bytes`` random bytes."""
    conn = _connection(spec)
    pattern = memoryview(os.urandom(17 * MiB))
    total = spec['bytes']

    def chunks():
        sent, offset = 0, 0
        while sent < total:
            size = min(READ_CHUNK, total - sent)
            yield pattern[offset:offset + size]
            offset = (offset + READ_CHUNK + 4093) % (16 * MiB)
            sent += size

    window = Window(spec)
    conn.put_object(CONTAINER, spec['name'], chunks())
    return window.end()


def child_download_limit(spec):
    """A plain get_object of the backup object to nothing."""
    conn = _connection(spec)
    window = Window(spec)
    _headers, body = conn.get_object(CONTAINER, spec['name'],
                                     resp_chunk_size=READ_CHUNK)
    size = sum(len(chunk) for chunk in body)
    return window.end(bytes=size)


def child_gz_stream(spec):
    """(untimed preparation) the backup's compressed stream, to a file."""
    _configure(spec)
    from trove.guestagent.backup import encryption
    from trove.guestagent.backup.storage import swift as swift_storage
    storage = swift_storage.SwiftStorage(_context(spec))
    chunks = encryption.open_stream(
        storage.load(spec['location'], spec['checksum']),
        os.environ[KEY_ENV])
    size = 0
    with open(spec['gz'], 'wb') as out:
        for chunk in chunks:
            out.write(chunk)
            size += len(chunk)
    return {'seconds': 0.0, 'bytes': size}


CHILDREN = {
    'ours-backup': child_ours_backup,
    'ours-restore': child_ours_restore,
    'upstream-backup': child_upstream_backup,
    'upstream-restore': child_upstream_restore,
    'compress-limit': child_compress_limit,
    'tool-compress': child_tool_compress,
    'tool-decompress': child_tool_decompress,
    'decompress-limit': child_decompress_limit,
    'upload-limit': child_upload_limit,
    'download-limit': child_download_limit,
    'gz-stream': child_gz_stream,
}


THREAD_CPU = {}


def _count_thread_cpu():
    """Record the CPU time of every thread when it ends, by name (the
    pipeline's stage threads and the compression pool's workers)."""
    run = threading.Thread.run

    def counted(self):
        try:
            run(self)
        finally:
            name = re.sub(r'_\d+$', '_N', self.name)   # gzip_0 -> gzip_N
            THREAD_CPU[name] = THREAD_CPU.get(name, 0.0) + time.thread_time()

    threading.Thread.run = counted


def child_main(mode, spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    _count_thread_cpu()
    profile = os.environ.get('BENCH_BACKUP_PROFILE')
    if profile and mode in profile.split(',') and spec.get('profile_out'):
        import cProfile
        profiler = cProfile.Profile()
        result = profiler.runcall(CHILDREN[mode], spec)
        profiler.dump_stats(spec['profile_out'])
    else:
        result = CHILDREN[mode](spec)
    result['peak_rss'] = peak_rss()
    result['thread_cpu'] = dict(THREAD_CPU, main=result.get('cpu_main', 0))
    with open(spec['result'], 'w') as f:
        json.dump(result, f)


# --- the parent -----------------------------------------------------------

class Bench:
    def __init__(self, args, workdir):
        self.args = args
        self.workdir = workdir
        self.swift = None
        self.swift_spec = None
        self.count = 0
        self.results = {}      # (dataset, what) -> [result dicts]

    def start_swift(self):
        from integration.services.swift import SwiftCluster
        self.swift = SwiftCluster(os.path.join(self.workdir, 'swift'))
        self.swift.start()
        token, storage_url = self.swift.token_and_storage_url()
        project = storage_url.rsplit('/', 1)[1][len('AUTH_'):]
        self.swift_spec = {'token': token, 'storage_url': storage_url,
                           'project': project, 'pids': self.swift.pids(),
                           'url_prefix': storage_url[:-len(project)]}
        conn = self.swift.connection()
        conn.put_container(CONTAINER)

    def stop_swift(self):
        if self.swift is not None:
            self.swift.stop()

    def read_object(self, name):
        """Read an object from Swift to nothing (untimed).  Swift's first
        read of a new object costs it about twice the CPU of later ones
        here (3.0 against 1.5 CPU-s for 385 MB), CPU taken from the same
        two cores: every measurement that reads an object reads one Swift
        has read before."""
        _headers, body = self.swift.connection().get_object(
            CONTAINER, name, resp_chunk_size=READ_CHUNK)
        for _chunk in body:
            pass

    def delete(self, name):
        conn = self.swift.connection()
        headers = conn.head_object(CONTAINER, name)
        query = None
        if headers.get('x-static-large-object', '').lower() == 'true':
            query = 'multipart-manifest=delete'
        conn.delete_object(CONTAINER, name, query_string=query)

    def child(self, mode, **spec):
        """Run one measurement in a child process; its result dict."""
        self.count += 1
        tag = '%03d-%s' % (self.count, mode)
        spec.setdefault('level', self.args.level)
        spec.setdefault('threads', self.args.threads)
        spec.update(swift=self.swift_spec, segment=self.args.segment,
                    result=os.path.join(self.workdir, tag + '.json'),
                    profile_out=os.path.join(self.workdir, tag + '.prof'))
        spec_path = os.path.join(self.workdir, tag + '.spec')
        with open(spec_path, 'w') as f:
            json.dump(spec, f)
        log_path = os.path.join(self.workdir, tag + '.log')
        env = dict(os.environ, **{KEY_ENV: KEY})
        argv = [sys.executable, os.path.abspath(__file__), '--child', mode,
                '--spec', spec_path]
        if (self.args.profiler == 'py-spy'
                and mode in self.args.profile.split(',')):
            flame = os.path.join(self.args.profile_dir, tag + '.pyspy.txt')
            argv = [self.args.py_spy, 'record', '--threads', '--rate', '250',
                    '--format', 'raw', '-o', flame, '--'] + argv
            print('  (profiling %s with py-spy into %s)' % (mode, flame))
        for key in ('data_dir', 'gz'):     # inputs: warm, untimed
            if spec.get(key):
                warm(spec[key])
        if spec.get('reads'):              # a Swift object: read once too
            self.read_object(spec['reads'])
        os.sync()          # earlier write-back must not slow this one
        with open(log_path, 'wb') as log:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env, timeout=CHILD_TIMEOUT,
                check=False)
        if proc.returncode:
            with open(log_path, 'rb') as log:
                tail = log.read()[-4000:].decode(errors='replace')
            raise RuntimeError('child %s exited with %s:\n%s' % (
                mode, proc.returncode, tail))
        with open(spec['result']) as f:
            result = json.load(f)
        if os.path.exists(spec['profile_out']):
            kept = os.path.join(self.args.profile_dir, tag + '.prof')
            shutil.copy(spec['profile_out'], kept)
            result['profile'] = kept
        return result

    def record(self, dataset, what, result):
        self.results.setdefault((dataset, what), []).append(result)
        rate = dataset['size'] / result['seconds'] / MB
        extra = ''
        if 'stream_seconds' in result:
            extra = '\n%36s(stream done at %.2f s; the save finished %.2f s ' \
                'later)' % ('', result['stream_seconds'],
                            result['seconds'] - result['stream_seconds'])
        if what.startswith(('ours', 'zlib ', 'isal ')):
            extra += '\n%36sthread cpu s: %s' % ('', ', '.join(
                '%s %.2f' % item for item in sorted(
                    result['thread_cpu'].items(), key=lambda i: -i[1])))
        if 'out' in result and 'inflate' not in what and '-dc' not in what:
            extra += '\n%36s(%.1f MB out: %.3fx smaller than the data)' % (
                '', result['out'] / MB, dataset['size'] / result['out'])
        if 'commit_seconds' in result:
            extra += '\n%36s(of which the commit, sync + swap: %.2f s)' % (
                '', result['commit_seconds'])
        print('  %-7s %-25s %6.2f s %7.1f MB/s   peak RSS %5.1f MB\n'
              '%36scpu s: self %5.2f (sys %4.2f), tools %5.2f, swift %5.2f, '
              'other %5.2f%s'
              % (dataset['label'], what, result['seconds'], rate,
                 result['peak_rss'] / MB, '', result['cpu_self'],
                 result['cpu_self_sys'], result['cpu_sub'],
                 result['cpu_swift'], result['cpu_other'], extra),
              flush=True)

    def scratch(self, name):
        path = os.path.join(self.workdir, name)
        os.makedirs(path)
        return path

    def ours(self, dataset, round_no, engine=None, what='ours'):
        """Our backup, then our restore of it; the backup result.  With
        ``engine='zlib'`` (the standard library's zlib, the pipeline as
        it was before ISA-L), also the restore on one inflating thread,
        as it was before members carried their size."""
        backup = self.child('ours-backup', data_dir=dataset['dir'],
                            databases=dataset['databases'], engine=engine,
                            level=None if engine else self.args.level,
                            backup_id='%s-%s-%d' % (
                                what, dataset['label'], round_no))
        self.record(dataset, what + ' backup', backup)
        restores = [(what + ' restore', None)]
        if engine == 'zlib':
            restores.append((what + ' restore, 1 thread', 1))
        for name, threads in restores:
            dest = self.scratch('restore-%s-%s-%d-%d' % (
                what, dataset['label'], round_no, threads or 0))
            try:
                restore = self.child(
                    'ours-restore', location=backup['location'],
                    checksum=backup['checksum'], dest=dest,
                    backup_id=backup['name'], reads=backup['name'],
                    engine=engine, threads=threads or self.args.threads)
                if restore['bytes'] != dataset['size']:
                    raise RuntimeError('restored %d bytes of data, the '
                                       'source has %d' % (restore['bytes'],
                                                          dataset['size']))
                self.record(dataset, name, restore)
            finally:
                shutil.rmtree(dest, ignore_errors=True)
        return backup

    def round(self, dataset, round_no):
        backup = self.ours(dataset, round_no)
        try:
            baseline = self.ours(dataset, round_no, engine='zlib',
                                 what='zlib')
            self.delete(baseline['name'])
            dataset['zlib_object_size'] = baseline['size']
            if not dataset.get('gz'):
                gz = os.path.join(self.workdir, 'stream-%s.gz'
                                  % dataset['label'])
                self.child('gz-stream', location=backup['location'],
                           checksum=backup['checksum'], gz=gz)
                dataset['gz'] = gz
            download = self.child('download-limit', name=backup['name'],
                                  reads=backup['name'])
            if download['bytes'] != backup['size']:
                raise RuntimeError('plain download got %d bytes, not %d'
                                   % (download['bytes'], backup['size']))
            download['wire_bytes'] = backup['size']
            self.record(dataset, 'download limit', download)
            self.engines_alone(dataset)
            self.upstream(dataset, round_no)
            name = 'plain-%s-%d' % (dataset['label'], round_no)
            upload = self.child('upload-limit', name=name,
                                bytes=backup['size'])
            upload['wire_bytes'] = backup['size']
            stored = int(self.swift.connection().head_object(
                CONTAINER, name)['content-length'])
            self.delete(name)
            if stored != backup['size']:
                raise RuntimeError('plain upload stored %d bytes, not %d'
                                   % (stored, backup['size']))
            self.record(dataset, 'upload limit', upload)
            dataset['object_size'] = backup['size']
        finally:
            self.delete(backup['name'])

    def engines_alone(self, dataset):
        """Each engine with nothing else: deflating tar's output, and
        inflating our backup's compressed stream (a warm file)."""
        cores = str(self.args.threads or os.cpu_count() or 1)
        for engine in ('isal', 'zlib'):
            level = self.args.level if engine == 'isal' else None
            self.record(dataset, '%s alone: deflate' % engine, self.child(
                'compress-limit', data_dir=dataset['dir'], engine=engine,
                level=level))
            self.record(dataset, '%s alone: inflate' % engine, self.child(
                'decompress-limit', gz=dataset['gz'], engine=engine))
        for what, tool in (('pigz -1 alone', ['pigz', '-1', '-p', cores]),
                           ('gzip -6 alone', ['gzip', '-6'])):
            self.record(dataset, what, self.child(
                'tool-compress', data_dir=dataset['dir'], tool=tool))
        for what, tool in (('pigz -dc alone', ['pigz', '-dc']),
                           ('gzip -dc alone', ['gzip', '-dc'])):
            self.record(dataset, what, self.child(
                'tool-decompress', gz=dataset['gz'], tool=tool))

    def upstream(self, dataset, round_no):
        name = 'upstream-%s-%d.tar.gz.enc' % (dataset['label'], round_no)
        backup = self.child('upstream-backup', data_dir=dataset['dir'],
                            name=name)
        try:
            dataset['upstream_size'] = backup['size']
            self.record(dataset, 'upstream backup', backup)
            dest = self.scratch('restore-upstream-%s-%d' % (
                dataset['label'], round_no))
            try:
                strip = len(dataset['dir'].strip('/').split('/'))
                result = self.child('upstream-restore', name=name,
                                    checksum=backup['checksum'], dest=dest,
                                    strip=strip, reads=name)
                restored = directory_size(dest)
                if restored != dataset['size']:
                    raise RuntimeError('upstream restore wrote %d bytes, '
                                       'the source has %d' % (
                                           restored, dataset['size']))
                self.record(dataset, 'upstream restore', result)
            finally:
                shutil.rmtree(dest, ignore_errors=True)
        finally:
            self.delete(name)


# A dataset is a dict; results are keyed by (id of the dict, what).
class Dataset(dict):
    __hash__ = object.__hash__
    __eq__ = object.__eq__


def make_dataset(workdir, size, docs, rows):
    label = human(size)
    root = os.path.join(workdir, 'data-%s' % label)
    start = time.perf_counter()
    counts, files = build_dataset(root, size, docs, rows)
    assert directory_size(root) == size
    sample, ratio = gzip6_ratio(root)
    print('Data directory %s: %d files, %s in %.1f s; gzip -6 ratio of a '
          '%d MiB sample: %.2fx' % (root, files, label,
                                    time.perf_counter() - start,
                                    sample // MiB, ratio), flush=True)
    return Dataset(label=label, dir=root, size=size, databases=counts,
                   files=files, gzip6=ratio)


def make_couchdb_dataset(workdir, size):
    """A real CouchDB 3.5 data directory of about ``size`` bytes
    (tools/bench_couchdb_data.py): snappy-compressed document bodies,
    old revisions, view index files."""
    import bench_couchdb_data
    label = human(size)
    start = time.perf_counter()
    root, counts, files = bench_couchdb_data.build_couchdb_dataset(
        os.path.join(workdir, 'couchdb-%s' % label), size,
        log=lambda *args: None)
    sample, ratio = gzip6_ratio(root)
    actual = directory_size(root)
    print('CouchDB 3.5 data directory %s: %d files, %d documents, %.1f MB '
          '(asked %s) in %.1f s; gzip -6 ratio of a %d MiB sample: %.2fx'
          % (root, files, sum(counts.values()), actual / MB, label,
             time.perf_counter() - start, sample // MiB, ratio), flush=True)
    return Dataset(label='couch' + label, dir=root, size=actual,
                   databases=counts, files=files, gzip6=ratio)


def med(values):
    return statistics.median(values)


def summary(bench, main, small):
    res = bench.results
    size = main['size']

    def rates(what, dataset=main):
        return [dataset['size'] / r['seconds'] / MB
                for r in res[(dataset, what)]]

    def rss(what, dataset):
        return max(r['peak_rss'] for r in res[(dataset, what)]) / MB

    rows = [
        ('backup', 'ours: CouchDBBackup.run() -> SwiftStorage',
         'ours backup', True),
        ('backup', 'ours on stdlib zlib (before ISA-L)', 'zlib backup',
         True),
        ('backup', 'upstream: tar | gzip | openssl enc -> Swift',
         'upstream backup', False),
        ('alone', 'tar | gzip_compress, ISA-L', 'isal alone: deflate',
         False),
        ('alone', 'tar | gzip_compress, stdlib zlib', 'zlib alone: deflate',
         False),
        ('alone', 'tar | pigz -1 (all cores)', 'pigz -1 alone', False),
        ('alone', "tar | gzip -6 (upstream's)", 'gzip -6 alone', False),
        ('limit', 'plain upload of the object size',
         'upload limit', False),
        ('restore', 'ours: CouchDBRestore._extract()', 'ours restore', True),
        ('restore', 'ours on stdlib zlib', 'zlib restore', True),
        ('restore', 'ours on stdlib zlib, one inflating thread',
         'zlib restore, 1 thread', True),
        ('restore', 'upstream: get | openssl -d | gzip -dc | tar x',
         'upstream restore', False),
        ('alone', 'gzip_decompress, ISA-L', 'isal alone: inflate', False),
        ('alone', 'gzip_decompress, stdlib zlib', 'zlib alone: inflate',
         False),
        ('alone', 'pigz -dc', 'pigz -dc alone', False),
        ('alone', 'gzip -dc', 'gzip -dc alone', False),
        ('limit', 'plain download of the object', 'download limit', False),
    ]
    runs = len(res[(main, 'ours backup')])
    print()
    print('Results: %s data directory, %d round(s), median (min-max) MB/s '
          'of data directory bytes' % (main['label'], runs))
    print('%-8s %-46s %8s %17s %9s %8s' % ('', 'measurement', 'MB/s',
                                           '(min-max)', 'wire MB/s',
                                           'peak RSS'))
    medians = {}
    for kind, title, what, agent in rows:
        values = rates(what)
        medians[what] = med(values)
        wire = ''
        wire_bytes = res[(main, what)][0].get('wire_bytes')
        if wire_bytes:
            wire = '%9.1f' % (wire_bytes / med(
                [r['seconds'] for r in res[(main, what)]]) / MB)
        peak = '%6.1f MB' % rss(what, main) if agent else '       -'
        print('%-8s %-46s %8.1f %17s %9s %s' % (
            kind, title, medians[what],
            '(%.1f-%.1f)' % (min(values), max(values)), wire, peak))
    print()
    print('CPU seconds during each (medians): this process (all threads), '
          'its tools (tar, gzip, openssl), Swift, everything else')
    cores = os.cpu_count() or 1
    others = []
    for _kind, _title, what, _agent in rows:
        runs_of = res[(main, what)]
        cpu = {k: med([r[k] for r in runs_of])
               for k in ('cpu_self', 'cpu_sub', 'cpu_swift', 'cpu_other')}
        wall = med([r['seconds'] for r in runs_of])
        others.extend(r['cpu_other'] / (r['seconds'] * cores)
                      for r in runs_of)
        print('  %-17s self %6.2f  tools %6.2f  swift %5.2f  other %6.2f'
              '   busy %.2f of %d cores' % (
                  what, cpu['cpu_self'], cpu['cpu_sub'], cpu['cpu_swift'],
                  cpu['cpu_other'], sum(cpu.values()) / wall, cores))
    load = med(others)
    if load > 0.05:
        print('WARNING: other processes used %.0f%% of the machine\'s CPU '
              '(median over the measurements): the rates above are lower '
              'and noisier than on an idle machine.' % (100 * load))
    print()
    print('Object sizes: ours %.1f MB (%.2fx smaller than the data), upstream '
          '%.1f MB (%.2fx)' % (
              main['object_size'] / MB, size / main['object_size'],
              main['upstream_size'] / MB, size / main['upstream_size']))
    print('Object sizes: stdlib zlib %.1f MB (%.3fx)' % (
        main['zlib_object_size'] / MB, size / main['zlib_object_size']))
    b_zlib = medians['ours backup'] / medians['zlib backup']
    b_up = medians['ours backup'] / medians['upstream backup']
    b_upload = medians['ours backup'] / medians['upload limit']
    r_zlib = medians['ours restore'] / medians['zlib restore, 1 thread']
    r_zlib2 = medians['ours restore'] / medians['zlib restore']
    r_up = medians['ours restore'] / medians['upstream restore']
    r_download = medians['ours restore'] / medians['download limit']
    growth = main['object_size'] / main['zlib_object_size'] - 1
    print('backup:  ours / ours on zlib = %.2fx; ours / upstream = %.2fx; '
          'ours / plain upload = %.2f' % (b_zlib, b_up, b_upload))
    print('restore: ours / ours on zlib, one thread = %.2fx (on two '
          'threads: %.2fx); ours / upstream = %.2fx; ours / plain download '
          '= %.2f' % (r_zlib, r_zlib2, r_up, r_download))
    checks = [
        ('backup >= 2.5x ours on stdlib zlib', b_zlib >= 2.5,
         '%.2fx' % b_zlib),
        ('backup >= 12x upstream', b_up >= 12.0, '%.2fx' % b_up),
        ('restore >= 2x ours on stdlib zlib (one thread)', r_zlib >= 2.0,
         '%.2fx' % r_zlib),
        ('restore >= 4x upstream', r_up >= 4.0, '%.2fx' % r_up),
        ('object <= 3% larger than stdlib zlib level 1', growth <= 0.03,
         '%+.2f%%' % (100 * growth)),
    ]
    peaks = {(d['label'], what): rss(what, d)
             for d in (main, small) if d is not None
             for what in ('ours backup', 'ours restore')}
    worst = max(peaks.values())
    checks.append(('agent peak RSS < 200 MB', worst < 200,
                   'max %.1f MB (%s)' % (worst, ', '.join(
                       '%s %s %.1f' % (label, what.split()[1], value)
                       for (label, what), value in sorted(peaks.items())))))
    if small is not None:
        tolerance = bench.args.rss_tolerance
        for what in ('ours backup', 'ours restore'):
            big, little = peaks[(main['label'], what)], peaks[(small['label'],
                                                                what)]
            checks.append((
                'peak RSS of %s: %s <= %s (+%.0f MB noise)' % (
                    what.split()[1], main['label'], small['label'],
                    tolerance / MB),
                big <= little + tolerance / MB,
                '%.1f MB vs %.1f MB' % (big, little)))
    else:
        checks.append(('peak RSS not larger for a bigger size', None,
                       'not measured: needs --rss-size smaller than --size'))
    print()
    print('Targets (issue 13):')
    for name, ok, detail in checks:
        verdict = 'n/a ' if ok is None else ('PASS' if ok else 'FAIL')
        print('  %s  %-48s %s' % (verdict, name, detail))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--couchdb', action='store_true',
                        help='benchmark a real CouchDB 3.5 data directory '
                        '(loaded by tools/bench_couchdb_data.py until it '
                        'holds --size bytes) instead of the synthetic one')
    parser.add_argument('--size', type=parse_size, default=GiB,
                        help='data directory size (default 1GiB; e.g. '
                        '256MiB)')
    parser.add_argument('--repeat', type=int, default=3,
                        help='rounds of every measurement; medians count '
                        '(default 3)')
    parser.add_argument('--rss-size', type=parse_size, default=256 * MiB,
                        help='a second, smaller data directory on which '
                        'only ours runs, to compare peak RSS (default '
                        '256MiB; 0: skip)')
    parser.add_argument('--rss-tolerance', type=parse_size, default=4 * MB,
                        help='allocator noise allowed when comparing the '
                        'two peak RSS (default 4MB)')
    parser.add_argument('--segment', type=parse_size, default=2 * GiB,
                        help='backup_segment_max_size (default 2GiB, the '
                        "agent's default)")
    parser.add_argument('--level', type=int, default=None,
                        help="ISA-L level (default: the agent's, 2)")
    parser.add_argument('--threads', type=int, default=None,
                        help="compression threads (default: the agent's, "
                        'one per CPU)')
    parser.add_argument('--workdir', default=None,
                        help='where the temporary directory goes (default: '
                        '$TMPDIR or /tmp); it is removed at the end')
    parser.add_argument('--profile', default='',
                        help='comma-separated child modes to profile '
                        '(e.g. ours-backup,ours-restore) with --profiler; '
                        'profiles go to --profile-dir')
    parser.add_argument('--profiler', choices=('py-spy', 'cprofile'),
                        default='py-spy',
                        help='py-spy (all threads, "raw" collapsed stacks; '
                        'the py-spy binary from --py-spy or PATH) or '
                        'cprofile (the main thread only)')
    parser.add_argument('--py-spy', default=shutil.which('py-spy'),
                        help='path of the py-spy binary')
    parser.add_argument('--profile-dir', default=os.path.join(
        tempfile.gettempdir(), 'bench-backup-profiles'),
                        help='where profiles are kept (default: '
                        '$TMPDIR/bench-backup-profiles)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--spec', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error('--repeat must be at least 1')
    if args.rss_size >= args.size:
        args.rss_size = 0
    return args


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child_main(args.child, args.spec)
        return 0
    if args.profile:
        os.makedirs(args.profile_dir, exist_ok=True)
    if args.profile and args.profiler == 'cprofile':
        os.environ['BENCH_BACKUP_PROFILE'] = args.profile
    elif args.profile and not args.py_spy:
        raise SystemExit('--profile with py-spy: no py-spy binary (pip '
                         'install py-spy, or give --py-spy PATH)')
    signal.signal(signal.SIGTERM, _terminate)
    workdir = tempfile.mkdtemp(prefix='bench-backup-', dir=args.workdir)
    bench = Bench(args, workdir)
    swift_errors = []

    def start_swift():
        try:
            bench.start_swift()
        except BaseException as exc:
            swift_errors.append(exc)

    # Swift starts while the data directory is built.
    swift_thread = threading.Thread(target=start_swift, daemon=True)
    try:
        print('%d CPUs, load average %.2f, Python %s; work dir %s' % (
            os.cpu_count(), os.getloadavg()[0], sys.version.split()[0],
            workdir), flush=True)
        started = time.perf_counter()
        swift_thread.start()
        if args.couchdb:
            main_set = make_couchdb_dataset(workdir, args.size)
            small = None
            if args.rss_size:
                small = make_couchdb_dataset(workdir, args.rss_size)
        else:
            docs = _corpus(32 * MiB, _doc, seed=1)
            rows = _corpus(8 * MiB, _row, seed=2)
            main_set = make_dataset(workdir, args.size, docs, rows)
            small = None
            if args.rss_size:
                small = make_dataset(workdir, args.rss_size, docs, rows)
            del docs, rows
        swift_thread.join()
        if swift_errors:
            raise swift_errors[0]
        print('Swift (single node) at %s' % bench.swift_spec['storage_url'])
        print('Caches cannot be dropped here: every measurement reads warm '
              'data (its input is read again, untimed, just before it: '
              'this VM pages out file data left idle for ~30 s; Swift '
              'objects are read once first too).')
        print('Agent settings: ISA-L level %s, %s compression thread(s), '
              'AES-256-GCM, segment %s' % (
                  '2 (default)' if args.level is None else args.level,
                  args.threads or '%d (one per CPU, default)'
                  % os.cpu_count(), human(args.segment)), flush=True)
        for round_no in range(1, args.repeat + 1):
            print('Round %d of %d' % (round_no, args.repeat), flush=True)
            bench.round(main_set, round_no)
            if small is not None:
                bench.delete(bench.ours(small, round_no)['name'])
        summary(bench, main_set, small)
        print('\nTotal %.0f s' % (time.perf_counter() - started))
    finally:
        if swift_thread.is_alive():
            swift_thread.join()
        with contextlib.suppress(Exception):
            bench.stop_swift()
        shutil.rmtree(workdir, ignore_errors=True)
        if os.path.exists(workdir):
            print('WARNING: could not remove %s' % workdir, file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
