"""tools/bench_replication.py still runs end to end (on a few documents).

The README's replication figures come from this script; the test keeps it
working on real CouchDB 3.5 nodes (its RabbitMQ and Swift, the three pairs:
a replica seeded from the source's backup as Trove 26 creates one, a
replica fed over HTTP, bare replication; every row of the table), and
checks that it leaves nothing behind, even when it is stopped halfway;
never its numbers: no ratio is asserted.
"""

import os
import re
import signal
import subprocess
import sys

from integration.services import base

BENCH = base.REPO_ROOT / 'tools' / 'bench_replication.py'
SIDES = ('agent-seeded', 'agent-http', 'bare')
# Each row of the table, and the sides it has a figure for.
ROWS = {
    'every document on the replica, s': SIDES,
    'catch-up, docs/s (N / that time)': SIDES,
    'replica prepare done ("running"), s': SIDES[:2],
    'snapshot done (with its backup), s': SIDES[:2],
    'backup, BUILDING to COMPLETED, s': SIDES[:1],
    'backup object, MB': SIDES[:1],
    "restore, replica's log, s": SIDES[:1],
    'transfer, docs/s (first to last arrival)': SIDES[1:],
    'lag median, ms': SIDES,
    'lag p95, ms': SIDES,
    'lag max, ms': SIDES,
}
# Figures that may round to 0 on a few documents.
MAY_BE_ZERO = ('backup, BUILDING to COMPLETED, s', 'backup object, MB')


def _run(tmp_path, stop_when=None):
    """Run the bench in ``tmp_path/work``, watching its processes; once
    ``stop_when(work)`` is true, send it SIGTERM.  Its output, its exit
    status, the processes it had ({(pid, start time): command line}) and
    the work dir."""
    work = tmp_path / 'work'
    work.mkdir()
    had = {}
    with open(tmp_path / 'output', 'w') as output:
        bench = subprocess.Popen(
            [sys.executable, str(BENCH), '--docs', '200', '--writes', '10',
             '--repeat', '1', '--workdir', str(work)],
            cwd=base.REPO_ROOT, stdin=subprocess.DEVNULL, stdout=output,
            stderr=subprocess.STDOUT, text=True)
        try:
            for _ in base.polling_loop(base.scaled(900), interval=0.5):
                had.update(_descendants(bench.pid))
                if bench.poll() is not None:
                    break
                if stop_when and stop_when(work):
                    bench.send_signal(signal.SIGTERM)
                    stop_when = None
            else:
                raise AssertionError('the bench still runs after 900 s')
        finally:
            if bench.poll() is None:
                bench.kill()
                bench.wait(30)
    return (tmp_path / 'output').read_text(), bench.returncode, had, work


def _stat(pid):
    """(parent pid, start time, state) of a process, or None."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[19], fields[0]


def _cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return f.read().replace(b'\0', b' ').decode(errors='replace')
    except OSError:
        return ''


def _descendants(root):
    """{(pid, start time): command line} of every process under ``root``
    now."""
    stats = {int(pid): _stat(int(pid))
             for pid in os.listdir('/proc') if pid.isdigit()}
    found, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, stat in stats.items():
            if stat and stat[0] == parent:
                found[pid, stat[1]] = _cmdline(pid)
                todo.append(pid)
    return found


def _running(pid, started):
    """The process is still there and not a zombie (an Erlang VM's helper
    that exited with it waits there until init reaps it)."""
    stat = _stat(pid)
    return bool(stat) and stat[1] == started and stat[2] not in 'ZX'


def _left_behind(work, had):
    """What the bench left: files in ``work``, processes it had that still
    run, and processes whose command line names ``work`` (CouchDB nodes
    detach from their parent)."""
    alive = sorted('%d %s' % (pid, cmdline)
                   for (pid, started), cmdline in had.items()
                   if _running(pid, started))
    named = [pid for pid in map(int, filter(str.isdigit, os.listdir('/proc')))
             if str(work) in _cmdline(pid)]
    return os.listdir(work), alive, named


def test_bench_replication_runs_every_side(tmp_path):
    output, status, had, work = _run(tmp_path)
    assert status == 0, output[-6000:]
    for side in SIDES:
        assert re.search(r'^  %s +\w' % side, output, re.MULTILINE), side
    table = output.split('\nMedians of 1 round(s)', 1)[1]
    for title, sides in ROWS.items():
        row = re.search(r'\n' + re.escape(title) + r' +(\S+) +(\S+) +(\S+)'
                        r' +(\S+) +(\S+) +\[', table)
        assert row, title
        for side, value in zip(SIDES, row.groups()[:3], strict=True):
            if side not in sides:
                assert value == '-', (title, side)
            elif title in MAY_BE_ZERO:
                assert float(value) >= 0, (title, side)
            else:
                assert float(value) > 0, (title, side)
    assert 'Reproduce: ' in table
    # RabbitMQ, Swift, its memcached, agents, their servers: all gone.
    assert len(had) > 10
    assert _left_behind(work, had) == ([], [], [])


def test_bench_replication_stops_everything_when_terminated(tmp_path):
    """SIGTERM while the seeded replica is being made: the bench stops
    what it started and removes its work directory."""
    output, status, had, work = _run(tmp_path, lambda work: list(
        work.glob('*/seeded-1-replica/agent/*.log')))
    assert status == 128 + signal.SIGTERM, output[-6000:]
    assert 'Round 1 of 1' in output and 'Medians' not in output
    assert _left_behind(work, had) == ([], [], [])
