"""tools/bench_incremental.py still runs end to end (on a small data dir).

Issue 14's numbers come from this script; the test keeps it working (a
real CouchDB 3.5 node, its own Swift, the chain of five backups, both
restores and their checks, the anchors, the summary), never its numbers:
no ratio is asserted.
"""

import os
import re
import subprocess
import sys

from integration.services import base

BENCH = base.REPO_ROOT / 'tools' / 'bench_incremental.py'
MEASUREMENTS = (
    'full backup F0 of the data directory',
    'full backup after 1% new documents',
    'incremental after 1% new documents, on F0',
    'full backups, steps 1-4',
    'incrementals, steps 1-4 (each on the one before)',
    'restore of a full backup of the final state',
    'restore of the chain of five (F0 + 4 incrementals)',
)
ANCHORS = (
    'cat of the data directory (every byte)',
    "SHA-256 of the parent's part of every file",
    'read of the appended bytes alone, step 1',
    'appended bytes / cat rate, step 1',
)
NUMBERS = r'\s+([0-9.]+)\s+\(([0-9.]+)-([0-9.]+)\)\s+([0-9.]+)\s+([0-9.]+)'


def test_bench_incremental_runs_every_measurement(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(BENCH), '--size', '16MiB', '--rounds', '1',
         '--workdir', str(tmp_path)],
        cwd=base.REPO_ROOT, capture_output=True, text=True,
        timeout=base.scaled(300), check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = proc.stdout.split('\nResults:', 1)[1]
    assert 'the node ran during every backup (hot' in results
    for what in MEASUREMENTS + ANCHORS:
        row = re.search(r'\n' + re.escape(what) + NUMBERS, results)
        assert row, what
        seconds, _low, _high, rate, size = map(float, row.groups())
        # A read of a few hundred KB from the page cache may take 0.0000 s.
        assert (seconds > 0 and rate > 0) or what in ANCHORS, what
        assert size > 0, what
    # Every incremental stored its files as deltas or not at all.
    notes = re.findall(r'(\d+) files whole, (\d+) appended to',
                       proc.stdout)
    assert len(notes) == 4
    assert all(int(appended) > 0 for _whole, appended in notes)
    assert 'WARNING' not in proc.stdout
    targets = re.findall(r'^  (PASS|FAIL)  ', results, re.MULTILINE)
    assert len(targets) == 3
    # Everything it made is gone: its work dir, its Swift, its CouchDB.
    assert os.listdir(tmp_path) == []


def test_bench_digests_measures_every_candidate():
    """tools/bench_digests.py (the digest's choice) prints a rate for each
    candidate and for the agent's own digest."""
    done = subprocess.run(
        [sys.executable, str(base.REPO_ROOT / 'tools' / 'bench_digests.py'),
         '--size', '4MiB', '--repeat', '1'],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    for row in ('sha256, one thread', 'sha1, one thread',
                'blake2b, one thread', 'md5, one thread',
                "the agent's digest of a file"):
        line = [text for text in done.stdout.splitlines()
                if text.startswith(row)]
        assert line and re.search(r'\d+$', line[0]), done.stdout
