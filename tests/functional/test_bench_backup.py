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
    'upstream: tar | gzip | openssl enc -> Swift',
    'compressor alone: tar | gzip_compress',
    'plain upload of the object size',
    'ours: CouchDBRestore._extract()',
    'upstream: get | openssl -d | gzip -dc | tar x',
    'decompressor alone: gzip_decompress',
    'plain download of the object',
)


def test_bench_backup_runs_every_measurement(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(BENCH), '--size', '16MiB', '--rss-size', '4MiB',
         '--repeat', '1', '--workdir', str(tmp_path)],
        cwd=base.REPO_ROOT, capture_output=True, text=True,
        timeout=base.scaled(300), check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = proc.stdout.split('\nResults:', 1)[1]
    for what in MEASUREMENTS:
        row = re.search(re.escape(what) + r'\s+([0-9.]+)', results)
        assert row and float(row.group(1)) > 0, what
    targets = re.findall(r'^  (PASS|FAIL)  ', results, re.MULTILINE)
    assert len(targets) == 7
    # Everything it made is gone: its work dir, its Swift.
    assert os.listdir(tmp_path) == []
