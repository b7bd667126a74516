"""tools/bench_backup.py still runs end to end (on a small data directory).

The README's backup and restore numbers come from this script; the test
keeps it working (its own Swift, every child, the restore byte check, the
summary), never its numbers: no rate is asserted.
"""

import os
import re
import subprocess
import sys

from integration.services import base

BENCH = base.REPO_ROOT / 'tools' / 'bench_backup.py'
MEASUREMENTS = (
    'ours: CouchDBBackup.run() -> SwiftStorage',
    'ours on stdlib zlib (before ISA-L)',
    'upstream: tar | gzip | openssl enc -> Swift',
    'tar | gzip_compress, ISA-L',
    'tar | gzip_compress, stdlib zlib',
    'tar | pigz -1 (all cores)',
    "tar | gzip -6 (upstream's)",
    'plain upload of the object size',
    'ours: CouchDBRestore._extract()',
    'ours on stdlib zlib ',
    'ours on stdlib zlib, one inflating thread',
    'upstream: get | openssl -d | gzip -dc | tar x',
    'gzip_decompress, ISA-L',
    'gzip_decompress, stdlib zlib',
    'pigz -dc ',
    'gzip -dc ',
    'plain download of the object',
)


def _run(tmp_path, *args):
    proc = subprocess.run(
        [sys.executable, str(BENCH), '--repeat', '1', '--workdir',
         str(tmp_path), *args],
        cwd=base.REPO_ROOT, capture_output=True, text=True,
        timeout=base.scaled(600), check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = proc.stdout.split('\nResults:', 1)[1]
    for what in MEASUREMENTS:
        row = re.search(r'\n\w+ +' + re.escape(what) + r'\s*([0-9.]+)',
                        results)
        assert row and float(row.group(1)) > 0, what
    # Everything it made is gone: its work dir, its Swift (and CouchDB).
    assert os.listdir(tmp_path) == []
    return proc.stdout, results


def test_bench_backup_runs_every_measurement(tmp_path):
    _out, results = _run(tmp_path, '--size', '16MiB', '--rss-size', '4MiB')
    targets = re.findall(r'^  (PASS|FAIL)  ', results, re.MULTILINE)
    assert len(targets) == 8


def test_bench_backup_on_a_real_couchdb_data_directory(tmp_path):
    out, results = _run(tmp_path, '--couchdb', '--size', '8MiB',
                        '--rss-size', '0')
    assert 'CouchDB 3.5 data directory' in out
    targets = re.findall(r'^  (PASS|FAIL|n/a )  ', results, re.MULTILINE)
    assert len(targets) == 7
