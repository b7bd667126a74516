#!/usr/bin/env python3
"""Incremental backups against full ones, on a real CouchDB 3.5 node.

One run of this script (issue 14's numbers):

1. builds a real CouchDB 3.5 data directory of ``--size`` bytes
   (tools/bench_couchdb_data.py) while the private single-node Swift of
   tools/bench_backup.py starts, then starts the node on that directory
   again, under its Erlang node name (the shard maps name it).  The node
   runs during every backup, as on a guest: the backups are hot, the
   node idle while they run, its writes flushed and its files settled;
2. adds 1% new documents, untimed (``--no-warm-up``: not): the build
   indexes each view in one pass, and CouchDB's first update of such an
   index appends more than later ones (on 32 MiB 8 times what the next
   1% appends, on 1 GiB 1.3 times), which the indexes of a live
   database, updated all along, do not;
3. ``--rounds`` times: a full backup F0; then four steps, each adding 1%
   new documents (1% of each database's documents, documents of the
   shape bench_couchdb_data writes), querying every view so that its
   index file grows too, ``_ensure_full_commit`` of every database and a
   wait until no file changes for ``SETTLE`` seconds, then an
   incremental backup on the backup before (F0, then the last
   incremental) and a full backup of the same state side by side; last,
   the restore of the fourth incremental (the chain of five: F0 and four
   incrementals) and the restore of the last full backup, each into an
   empty directory, and their files checked against the data directory
   as it was after the backup;
4. at each step, the anchors on the raw storage: ``cat`` of the data
   directory, the SHA-256 digest of the part of every file its parent
   holds, as an incremental backup proves it unchanged
   (``digest.read_prefix`` on every core), and a read of the appended
   bytes alone;
5. prints the medians (min-max) and PASS/FAIL for each target, then stops
   the node, its epmd and Swift and removes every file it made, whatever
   happens (Ctrl-C, SIGTERM, SIGHUP, a failure).

The agent's code runs in this process: ``CouchDBBackup.run()`` and
``CouchDBBackupIncremental.run()`` unchanged (the real snapshot asked of
the running node, ``SwiftStorage``, ISA-L, AES-256-GCM), then
``CouchDBRestore._chain()`` and ``_extract()``.  The page cache cannot be
dropped here: every input is read once, untimed, just before it is
measured (this VM pages out file data left idle), Swift objects too, and
``sync`` runs first.  Rates are MB/s (10^6 bytes) of data directory bytes.

    .venv/bin/python tools/bench_incremental.py            # 1 GiB, 3 rounds
    .venv/bin/python tools/bench_incremental.py --size 64MiB --rounds 1

Exit status 0 whatever the numbers; non-zero only when something crashed.
"""

import argparse
import concurrent.futures
import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (REPO, os.path.join(REPO, 'tools')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import bench_backup  # noqa: E402  (Swift, the agent's settings, Window)
import bench_couchdb_data  # noqa: E402  (the data, the documents)
from integration.services import couchdb3  # noqa: E402

MB = bench_backup.MB
MiB = bench_backup.MiB
GROWTH = 0.01           # new documents a step: 1% of each database's
STEPS = 4               # incrementals after the full backup: five links
# Seconds no file may change before a backup: CouchDB writes an updated
# view index's header up to [query_server_config] commit_freq (5 s) later.
SETTLE = 6.0
SETTLE_TIMEOUT = 120
SEED = 'incremental'    # new documents, not those of the build again
INCREMENTAL_NOTE = re.compile(
    r'(\d+) files whole, (\d+) appended to, (\d+) unchanged, '
    r'(\d+) deleted')


# --- the node ---------------------------------------------------------------

def node_name(vm_args):
    """The ``-name`` of a node's vm.args."""
    with open(vm_args) as f:
        for line in f:
            if line.startswith('-name '):
                return line.split()[1]
    raise RuntimeError('%s names no node' % vm_args)


def data_sizes(data_dir):
    """{path relative to data_dir: size} of every file below it."""
    return {os.path.relpath(path, data_dir): size
            for path, size in bench_couchdb_data.data_files(data_dir)}


class Node:
    """The node bench_couchdb_data built, on its data directory again."""

    def __init__(self, data_dir):
        self.server = couchdb3.CouchDB3Server(os.path.dirname(data_dir))
        self.server.node = node_name(self.server.config_dir / 'vm.args')
        self.data_dir = data_dir
        self.session = None
        self.databases = {}      # name: bench_couchdb_data.Database

    def start(self):
        self.server.start()
        self.session = self.server.session()
        vocab = bench_couchdb_data.Vocabulary(SEED)
        for name, kind, auto_id, _share in bench_couchdb_data.DATABASES:
            db = bench_couchdb_data.Database(name, kind, auto_id, 0.0, 1.0,
                                             vocab, SEED, 1)
            # Ids go on after those of the build: no conflict.
            db.gen.count = self.doc_count(name)
            self.databases[name] = db
        self.settle()

    def stop(self):
        if self.session is not None:
            self.session.close()
        self.server.stop()

    def request(self, method, path, **kwargs):
        return bench_couchdb_data._request(
            self.session, method, '%s/%s' % (self.server.url, path),
            **kwargs)

    def doc_count(self, db):
        return self.request('GET', db)['doc_count']

    def add_documents(self, share):
        """``share`` of each database's document count in new documents,
        and the views brought up to date; returns how many were added."""
        added = 0
        for name, db in self.databases.items():
            want = max(1, round(share * self.doc_count(name)))
            while want > 0:
                db.batch = min(want, bench_couchdb_data.BATCH)
                docs, updates, body = db.next_batch()
                answer = self.request(
                    'POST', name + '/_bulk_docs', data=body,
                    headers={'Content-Type': 'application/json'})
                db.absorb(docs, updates, body, answer)
                want -= len(docs)
                added += len(docs)
        bench_couchdb_data._query_views(self.server, self.session,
                                        lambda line: None)
        for name in self.databases:
            self.request('POST', name + '/_ensure_full_commit', json={})
        self.settle()
        return added

    def settle(self):
        """Until no file below the data directory changes for SETTLE s."""
        last = {'sizes': None, 'since': 0.0}

        def settled():
            sizes, now = data_sizes(self.data_dir), time.monotonic()
            if sizes != last['sizes']:
                last.update(sizes=sizes, since=now)
            return now - last['since'] >= SETTLE

        if not bench_couchdb_data._wait_for(settled, SETTLE_TIMEOUT):
            raise RuntimeError('the files of %s kept changing for %d s' % (
                self.data_dir, SETTLE_TIMEOUT))


# --- the agent --------------------------------------------------------------

class Agent:
    """The agent's backups and restores, run in this process."""

    def __init__(self, bench, node, segment):
        os.environ[bench_backup.KEY_ENV] = bench_backup.KEY
        self.bench = bench
        self.spec = {'swift': bench.swift_spec, 'segment': segment}
        conf = bench_backup._configure(self.spec)
        conf.set_override('mount_point', node.data_dir, group='couchdb')
        # Restored files get an owner, as on a guest: this user's.
        conf.set_override('couchdb_user', pwd.getpwuid(os.getuid()).pw_name,
                          group='couchdb')
        conf.set_override('couchdb_group', grp.getgrgid(os.getgid()).gr_name,
                          group='couchdb')
        from trove.guestagent.datastore.experimental.couchdb import client
        self.context = bench_backup._context(self.spec)
        self.app = types.SimpleNamespace(client=client.CouchDBClient(
            node.server.url, *node.server.admin))
        self.data_dir = node.data_dir

    def backup(self, backup_id, parent=None):
        """A full backup, or an incremental one on ``parent``."""
        from trove.guestagent.backup.storage import swift
        from trove.guestagent.strategies.backup.experimental import (
            couchdb_impl)
        info = {'id': backup_id, 'datastore': 'couchdb',
                'datastore_version': '3.5.0'}
        runner_class = couchdb_impl.CouchDBBackup
        if parent is not None:
            info['parent'] = {'location': parent['location'],
                              'checksum': parent['checksum']}
            runner_class = couchdb_impl.CouchDBBackupIncremental
        runner = runner_class(self.context, info, self.app,
                              swift.SwiftStorage(self.context))
        bench_backup.warm(self.data_dir)
        os.sync()
        window = bench_backup.Window(self.spec)
        result = runner.run()
        return window.end(location=result.location,
                          checksum=result.checksum, size=result.size,
                          note=result.note, name=runner.object_name())

    def restore(self, backup, links, dest):
        """The restore of ``backup`` (its chain: ``links``) into ``dest``."""
        from trove.guestagent.strategies.restore.experimental import (
            couchdb_impl)
        for link in links:       # Swift's first read costs it more
            self.bench.read_object(link['name'])
        os.sync()
        info = {'id': backup['name'], 'location': backup['location'],
                'checksum': backup['checksum']}
        runner = couchdb_impl.CouchDBRestore(self.context, info, dest, None)
        window = bench_backup.Window(self.spec)
        chain = runner._chain()
        result = runner._extract(chain)
        return window.end(links=len(chain), deltas=result.deltas)


# --- the anchors: the raw storage -------------------------------------------

def anchors(data_dir, before, threads):
    """cat of every file, the digest of the part ``before`` ({rel: size})
    holds, and a read of the bytes appended since: seconds and bytes."""
    from trove.guestagent.backup import digest
    sizes = data_sizes(data_dir)
    paths = [os.path.join(data_dir, rel) for rel in sorted(sizes)]
    bench_backup.warm(data_dir)
    os.sync()
    start = time.perf_counter()
    subprocess.run(['cat', *paths], stdout=subprocess.DEVNULL, check=True)
    cat = time.perf_counter() - start
    start = time.perf_counter()
    with digest.pool(threads) as hashers:
        for rel, size in before.items():
            if rel in sizes:
                with open(os.path.join(data_dir, rel), 'rb') as f:
                    digest.read_prefix(f.fileno(), min(size, sizes[rel]),
                                       hashers)
    hashed = time.perf_counter() - start
    start = time.perf_counter()
    appended = sum(_read_from(os.path.join(data_dir, rel),
                              before.get(rel, 0))
                   for rel, size in sizes.items()
                   if size > before.get(rel, 0))
    return {'cat': cat, 'digest': hashed,
            'appended': time.perf_counter() - start,
            'appended_bytes': appended, 'size': sum(sizes.values()),
            'parent_bytes': sum(before.values())}


def _read_from(path, offset):
    """Read a file from ``offset`` to its end; the bytes read."""
    total = 0
    with open(path, 'rb') as f:
        while chunk := os.pread(f.fileno(), MiB, offset + total):
            total += len(chunk)
    return total


# --- the rounds -------------------------------------------------------------

class Rounds:
    def __init__(self, bench, agent, node, threads):
        self.bench, self.agent, self.node = bench, agent, node
        self.threads = threads
        self.results = {}        # what: [result dicts]

    def record(self, what, result, size):
        self.results.setdefault(what, []).append(result)
        rate = size / result['seconds'] / MB
        print('  %-24s %7.2f s %8.1f MB/s %9.2f MB   cpu s: self %.2f, '
              'swift %.2f, other %.2f' % (
                  what, result['seconds'], rate, result.get('size', 0) / MB,
                  result['cpu_self'], result['cpu_swift'],
                  result['cpu_other']), flush=True)
        if result.get('note'):
            print('%29s%s' % ('', result['note']), flush=True)

    def run(self, round_no):
        made = []
        try:
            self._chain(round_no, made)
        finally:
            for backup in made:
                self.bench.delete(backup['name'])

    def _chain(self, round_no, made):
        data_dir = self.node.data_dir
        size = bench_couchdb_data.directory_size(data_dir)
        parent = self.agent.backup('r%d-full-0' % round_no)
        made.append(parent)
        self.record('full F0', parent, size)
        links = [parent]
        for step in range(1, STEPS + 1):
            before = data_sizes(data_dir)
            added = self.node.add_documents(GROWTH)
            found = anchors(data_dir, before, self.threads)
            self.results.setdefault('anchors %d' % step, []).append(found)
            new_files = len(set(data_sizes(data_dir)) - set(before))
            print('  step %d: %d new documents, %.2f MB appended (%d new '
                  'files); data %.1f MB' % (
                      step, added, found['appended_bytes'] / MB, new_files,
                      found['size'] / MB), flush=True)
            incremental = self.agent.backup(
                'r%d-incremental-%d' % (round_no, step), parent=parent)
            made.append(incremental)
            incremental['files'] = data_sizes(data_dir)
            self.record('incremental %d' % step, incremental, found['size'])
            _check_note(incremental['note'], new_files)
            full = self.agent.backup('r%d-full-%d' % (round_no, step))
            made.append(full)
            full['files'] = data_sizes(data_dir)
            if full['files'] != incremental['files']:
                print('WARNING: the data directory changed between the '
                      'incremental and the full backup')
            self.record('full %d' % step, full, found['size'])
            parent = incremental
            links.append(incremental)
        self._restores(round_no, links, full, found['size'])

    def _restores(self, round_no, links, full, size):
        for what, backup, chain in (
                ('restore of the chain', links[-1], links),
                ('restore of a full', full, [full])):
            dest = os.path.join(self.bench.workdir, 'restore-%d' % round_no)
            os.makedirs(dest)
            try:
                result = self.agent.restore(backup, chain, dest)
                _check_restored(what, data_sizes(dest), backup['files'])
                if result['links'] != len(chain):
                    raise RuntimeError('%s: %d links restored, not %d' % (
                        what, result['links'], len(chain)))
                result['size'] = sum(link['size'] for link in chain)
                self.record(what, result, size)
            finally:
                shutil.rmtree(dest, ignore_errors=True)


def _check_restored(what, restored, expected):
    """The files restored have the sizes they had after the backup."""
    wrong = sorted(rel for rel in set(restored) | set(expected)
                   if restored.get(rel) != expected.get(rel))
    if wrong:
        raise RuntimeError('%s: %d files differ from the data directory '
                           'as it was after the backup, first: %s' % (
                               what, len(wrong), ', '.join(
                                   '%s %s (expected %s)' % (
                                       rel, restored.get(rel),
                                       expected.get(rel))
                                   for rel in wrong[:3])))


def _check_note(note, new_files):
    """Warn when files that existed in the parent were stored whole."""
    counts = INCREMENTAL_NOTE.search(note)
    if counts is None:
        print('WARNING: the incremental backup\'s note has no file counts: '
              '%s' % note)
    elif int(counts.group(1)) > new_files:
        print('WARNING: %s files stored whole, only %d are new since the '
              'parent: files appended to were copied whole' % (
                  counts.group(1), new_files))


# --- the report -------------------------------------------------------------

med = bench_backup.med


def _spread(values, digits=2):
    return '(%.*f-%.*f)' % (digits, min(values), digits, max(values))


def summary(results, size):
    def seconds(what):
        return [r['seconds'] for r in results[what]]

    def sizes(what):
        return [r['size'] for r in results[what]]

    def steps(kind):
        return ['%s %d' % (kind, step) for step in range(1, STEPS + 1)]

    def every(whats, key):
        return [r[key] for what in whats for r in results[what]]

    rows = [
        ('full backup F0 of the data directory', seconds('full F0'),
         sizes('full F0')),
        ('full backup after 1% new documents', seconds('full 1'),
         sizes('full 1')),
        ('incremental after 1% new documents, on F0',
         seconds('incremental 1'), sizes('incremental 1')),
        ('full backups, steps 1-4', every(steps('full'), 'seconds'),
         every(steps('full'), 'size')),
        ('incrementals, steps 1-4 (each on the one before)',
         every(steps('incremental'), 'seconds'),
         every(steps('incremental'), 'size')),
        ('restore of a full backup of the final state',
         seconds('restore of a full'), sizes('restore of a full')),
        ('restore of the chain of five (F0 + 4 incrementals)',
         seconds('restore of the chain'), sizes('restore of the chain')),
    ]
    runs = len(results['full F0'])
    print()
    print('Results: CouchDB 3.5 data directory of %.1f MB, %d round(s), '
          'median (min-max); the node ran during every backup (hot, idle)'
          % (size / MB, runs))
    print('%-52s %8s %15s %8s %10s' % ('measurement', 'seconds', '(min-max)',
                                       'MB/s', 'object MB'))
    for title, secs, objects in rows:
        print('%-52s %8.2f %15s %8.1f %10.2f' % (
            title, med(secs), _spread(secs), size / med(secs) / MB,
            med(objects) / MB))
    _anchor_rows(results, size)
    _targets(results)


def _anchor_rows(results, size):
    found = [a for step in range(1, STEPS + 1)
             for a in results['anchors %d' % step]]
    first = results['anchors 1']
    cat = [a['cat'] for a in found]
    rate = med([a['size'] / a['cat'] for a in found])
    appended = [a['appended_bytes'] for a in first]
    rows = [
        ('cat of the data directory (every byte)', cat,
         med([a['size'] for a in found])),
        ("SHA-256 of the parent's part of every file",
         [a['digest'] for a in found],
         med([a['parent_bytes'] for a in found])),
        ('read of the appended bytes alone, step 1',
         [a['appended'] for a in first], med(appended)),
        ('appended bytes / cat rate, step 1',
         [a['appended_bytes'] / rate for a in first], med(appended)),
    ]
    print()
    print('Anchors, the raw storage (steps 1-4 unless said; warm page '
          'cache):')
    print('%-52s %8s %15s %8s %10s' % ('', 'seconds', '(min-max)', 'MB/s',
                                       'bytes MB'))
    for title, secs, nbytes in rows:
        print('%-52s %8.4f %15s %8.0f %10.2f' % (
            title, med(secs), _spread(secs, 4), nbytes / max(med(secs), 1e-6)
            / MB, nbytes / MB))
    incremental = med([r['size'] for r in results['incremental 1']])
    print('incremental object / appended bytes, step 1: %.2f; full object '
          '/ data: %.2f' % (incremental / med(appended), med(
              [r['size'] for r in results['full 1']]) / size))
    print('incremental time / its SHA-256 of the same bytes, step 1: %.1f; '
          'full backup time / cat: %.1f' % (
              med([r['seconds'] / a['digest'] for r, a in zip(
                  results['incremental 1'], first, strict=True)]),
              med([r['seconds'] / a['cat'] for r, a in zip(
                  results['full 1'], first, strict=True)])))


def _targets(results):
    def ratios(top, bottom, key):
        return [a[key] / b[key] for a, b in zip(
            results[top], results[bottom], strict=True)]

    size_ratio = med(ratios('incremental 1', 'full 1', 'size'))
    time_ratio = med(ratios('incremental 1', 'full 1', 'seconds'))
    every = [r for step in range(1, STEPS + 1)
             for r in zip(results['incremental %d' % step],
                          results['full %d' % step], strict=True)]
    restore = med(ratios('restore of the chain', 'restore of a full',
                         'seconds'))
    print('steps 1-4: incremental / full size %.2f%%, time 1/%.1f' % (
        100 * med([i['size'] / f['size'] for i, f in every]),
        1 / med([i['seconds'] / f['seconds'] for i, f in every])))
    checks = [
        ('incremental size <= 3% of a full backup', size_ratio <= 0.03,
         '%.2f%%' % (100 * size_ratio)),
        ('incremental time <= 1/5 of a full backup', time_ratio <= 0.2,
         '%.3f (1/%.1f)' % (time_ratio, 1 / time_ratio)),
        ('chain-of-five restore <= 1.3x a full restore', restore <= 1.3,
         '%.2fx' % restore),
    ]
    print()
    print('Targets (issue 14; each ratio the median of the rounds\' '
          'side-by-side ratios):')
    for name, ok, detail in checks:
        print('  %s  %-48s %s' % ('PASS' if ok else 'FAIL', name, detail))


# --- main -------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=bench_backup.parse_size,
                        default=bench_backup.GiB,
                        help='data directory size (default 1GiB)')
    parser.add_argument('--rounds', type=int, default=3,
                        help='rounds of the whole chain; medians count '
                        '(default 3)')
    parser.add_argument('--segment', type=bench_backup.parse_size,
                        default=2 * bench_backup.GiB,
                        help="backup_segment_max_size (default 2GiB, the "
                        "agent's default)")
    parser.add_argument('--no-warm-up', dest='warm_up',
                        action='store_false',
                        help='measure from the data directory as built: '
                        'the first new documents then make CouchDB append '
                        'more to every view index than later ones')
    parser.add_argument('--workdir', default=None,
                        help='where the temporary directory goes (default: '
                        '$TMPDIR or /tmp); it is removed at the end')
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error('--rounds must be at least 1')
    return args


def build(bench, workdir, size):
    """The data directory, built while Swift starts."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        swift = pool.submit(bench.start_swift)
        start = time.perf_counter()
        data_dir, counts, files = bench_couchdb_data.build_couchdb_dataset(
            os.path.join(workdir, 'data'), size, log=lambda line: None)
        print('CouchDB 3.5 data directory %s: %d files, %d documents in %d '
              'databases, %.1f MB (asked %s) in %.0f s' % (
                  data_dir, files, sum(counts.values()), len(counts),
                  bench_couchdb_data.directory_size(data_dir) / MB,
                  bench_backup.human(size), time.perf_counter() - start),
              flush=True)
        swift.result()
    return data_dir


def warm_up(node):
    """A first 1% of new documents, untimed.

    The build indexes each view in one pass at the end of its loading;
    CouchDB's first update of such an index appends more of its b-trees
    than later ones (on 32 MiB 4.3 MB, 8 times what the next 1% appends;
    on 1 GiB 15 MB against 12 MB), which a live database's indexes,
    updated all along, do not."""
    before = bench_couchdb_data.directory_size(node.data_dir)
    added = node.add_documents(GROWTH)
    after = bench_couchdb_data.directory_size(node.data_dir)
    print('Warm-up, untimed: %d new documents, their first view updates '
          'appended %.2f MB (%.1f%% of the data directory)' % (
              added, (after - before) / MB, 100 * (after - before) / after),
          flush=True)


def run(args, bench, workdir):
    started = time.perf_counter()
    data_dir = build(bench, workdir, args.size)
    node = Node(data_dir)
    try:
        node.start()
        agent = Agent(bench, node, args.segment)
        threads = os.cpu_count() or 1
        print('Swift (single node) at %s; CouchDB %s at %s, running during '
              'the backups; %d CPUs' % (
                  bench.swift_spec['storage_url'],
                  node.request('GET', '')['version'], node.server.url,
                  threads), flush=True)
        if args.warm_up:
            warm_up(node)
        rounds = Rounds(bench, agent, node, threads)
        for round_no in range(1, args.rounds + 1):
            print('Round %d of %d' % (round_no, args.rounds), flush=True)
            rounds.run(round_no)
        summary(rounds.results, med(
            [a['size'] for a in rounds.results['anchors 1']]))
    finally:
        node.stop()
    print('\nPeak RSS of this process (the agent ran in it, the data was '
          'loaded from it): %.1f MB' % (bench_backup.peak_rss() / MB))
    print('Total %.0f s' % (time.perf_counter() - started))


def _remove(workdir):
    shutil.rmtree(workdir, ignore_errors=True)
    if os.path.exists(workdir):
        print('WARNING: could not remove %s' % workdir, file=sys.stderr)


def main(argv=None):
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, bench_couchdb_data._terminate)
    with contextlib.ExitStack() as cleanup:
        workdir = tempfile.mkdtemp(prefix='bench-incremental-',
                                   dir=args.workdir)
        cleanup.callback(_remove, workdir)
        bench = bench_backup.Bench(args, workdir)
        cleanup.callback(bench.stop_swift)
        print('Load average %.2f, Python %s; work dir %s' % (
            os.getloadavg()[0], sys.version.split()[0], workdir), flush=True)
        run(args, bench, workdir)
    return 0


if __name__ == '__main__':
    sys.exit(main())
