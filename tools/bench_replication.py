#!/usr/bin/env python3
"""Replication through the agent: catch-up throughput and steady-state lag.

One run starts a private RabbitMQ, plays Trove's control plane as
integration/conftest.py does, and runs ``--repeat`` rounds, each on fresh
servers (the order of the two pairs alternates between rounds):

- agent: a master guest (the real agent managing its own pouchdb-server)
  prepared with database ``bench`` and a user, who loads ``--docs``
  documents of about ``--doc-size`` bytes of JSON (``_bulk_docs``, 1,000 a
  request); then a fresh replica guest created as Trove's taskmanager
  creates one: the master's ``get_replication_snapshot``, then
  ``prepare(snapshot=...)``.  Timed from the prepare call: until the replica
  reports "running" (prepare done), and until its last document arrives;
- bare: the same documents between two plain pouchdb-servers (no agent, no
  admins), replicated by one continuous ``_replicator`` document on the
  target, the form of the agent's job; timed from the PUT of that document;
- lag, on each pair once caught up: ``--writes`` single documents PUT on the
  source at ``--rate`` a second from one thread; a document's lag runs from
  the return of its PUT to its arrival on the replica.

Arrivals are recorded by a follower of the replica's ``_changes`` feed
(``feed=continuous``; os_admin's credentials on the agent's replica): the
monotonic time each document id first shows, so no polling interval adds
to the figures.  "catch-up" is N / (last arrival - start); "transfer" is
N / (last arrival - first arrival), what replication itself takes without
prepare or job start-up: its agent/bare ratio is what the agent costs.
Medians over the rounds are printed with each round's values.  Every
process started here is stopped and the work directory removed, whatever
happens.  Exit status 0 whatever the figures.

    .venv/bin/python tools/bench_replication.py
    .venv/bin/python tools/bench_replication.py --docs 2000 --repeat 1
"""

import argparse
import base64
import contextlib
import http.client
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import oslo_messaging as messaging  # noqa: E402
import requests  # noqa: E402

from integration import conductor  # noqa: E402
from integration import guest as guest_mod  # noqa: E402
from integration.services import base  # noqa: E402
from integration.services import pouchdb  # noqa: E402
from integration.services import rabbitmq  # noqa: E402
import trove.common.cfg  # noqa: E402,F401  (registers the options)
from trove import rpc  # noqa: E402

DB = 'bench'
USER = {'_name': 'bench', '_password': 'bench-pw', '_host': '%',
        '_databases': [{'_name': DB}]}
BATCH = 1000
WORDS = ('ka', 'lo', 'mi', 'ne', 'ra', 'to', 'su', 'vi', 'de', 'ba', 'zu',
         'pe', 'qui', 'fo', 'gra', 'shi', 'an', 'el', 'or', 'ur')


class BenchError(Exception):
    """A step of the benchmark failed; the message says which."""


def make_docs(prefix, count, size, seed):
    """``count`` order-like documents of about ``size`` bytes of JSON."""
    rnd = random.Random(seed)
    docs = []
    for n in range(count):
        doc = {'_id': '%s-%06d' % (prefix, n), 'type': 'order', 'n': n,
               'customer': {'name': rnd.choice(WORDS).title(),
                            'city': rnd.choice(WORDS).title()},
               'items': [{'sku': 'SKU-%04d' % rnd.randrange(10000),
                          'qty': rnd.randint(1, 9)}
                         for _ in range(rnd.randint(1, 4))],
               'total': rnd.randrange(100000) / 100, 'note': ''}
        pad = size - len(json.dumps(doc))
        words = (''.join(rnd.choices(WORDS, k=rnd.randint(2, 4)))
                 for _ in range(max(0, pad)))
        doc['note'] = ' '.join(words)[:max(0, pad)]
        docs.append(doc)
    return docs


def bulk_load(session, db_url, docs):
    for start in range(0, len(docs), BATCH):
        answer = session.post(db_url + '/_bulk_docs', timeout=120,
                              json={'docs': docs[start:start + BATCH]})
        failed = [row for row in answer.json() if 'error' in row] \
            if answer.status_code == 201 else answer.text
        if failed:
            raise BenchError('_bulk_docs on %s: %s' % (db_url, failed[:3]))


class Follower:
    """Follows a database's ``_changes`` feed from sequence 0 and records
    the monotonic time each document id (design documents aside) first
    shows.  It waits for the server and the database to exist, and for
    ``auth()`` to give (user, password) or None for no credentials."""

    def __init__(self, port, db, auth=lambda: None):
        self.port, self.db, self.auth = port, db, auth
        self.arrivals = {}
        self.error = None
        self._cond = threading.Condition()
        self._stopped = False
        self._conn = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stopped = True
        with contextlib.suppress(OSError, AttributeError):
            self._conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(5)

    def wait(self, done, timeout, what):
        """The arrivals once ``done(arrivals)`` is true."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.error or done(
                    self.arrivals), base.scaled(timeout)):
                raise BenchError('%s: not within %d s (%d documents seen)'
                                 % (what, timeout, len(self.arrivals)))
            if self.error:
                raise BenchError('%s: the _changes follower failed: %s'
                                 % (what, self.error))
            return dict(self.arrivals)

    def _run(self):
        try:
            self._follow(self._wait_for_database())
        except Exception as exc:
            with self._cond:
                self.error = None if self._stopped else exc
                self._cond.notify_all()

    def _headers(self, credentials):
        if credentials is None:
            return {}
        token = base64.b64encode(('%s:%s' % credentials).encode()).decode()
        return {'Authorization': 'Basic ' + token}

    def _wait_for_database(self):
        url = 'http://127.0.0.1:%d/%s' % (self.port, self.db)
        for _ in base.polling_loop(base.scaled(120), interval=0.02):
            if self._stopped:
                break
            credentials = self.auth()
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, headers=self._headers(credentials),
                                timeout=5).status_code == 200:
                    return credentials
        raise BenchError('database %s did not appear on port %d'
                         % (self.db, self.port))

    def _follow(self, credentials):
        self._conn = http.client.HTTPConnection('127.0.0.1', self.port)
        self._conn.request('GET', '/%s/_changes?feed=continuous&since=0'
                           '&heartbeat=5000' % self.db,
                           headers=self._headers(credentials))
        feed = self._conn.getresponse()
        if feed.status != 200:
            raise BenchError('_changes answered %d' % feed.status)
        while line := feed.readline():
            change = json.loads(line) if line.strip() else {}
            doc_id = change.get('id', '_design/')
            if not doc_id.startswith('_design/'):
                with self._cond:
                    self.arrivals.setdefault(doc_id, time.monotonic())
                    self._cond.notify_all()
        raise BenchError('the _changes feed ended')


def catch_up(follower, count, start, timeout):
    arrivals = follower.wait(lambda a: len(a) >= count, timeout,
                             'catch-up of %d documents' % count)
    first, last = min(arrivals.values()), max(arrivals.values())
    return {'catchup': count / (last - start),
            'transfer': count / max(last - first, 1e-3),
            'seconds': last - start}


def measure_lag(session, db_url, follower, docs, rate):
    """PUT ``docs`` one by one at ``rate``/s; each one's lag in ms."""
    acked = {}
    start = time.monotonic()
    for n, doc in enumerate(docs):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        answer = session.put('%s/%s' % (db_url, doc['_id']), json=doc,
                             timeout=30)
        if answer.status_code != 201:
            raise BenchError('PUT %s: %d %s' % (doc['_id'],
                                                answer.status_code,
                                                answer.text))
        acked[doc['_id']] = time.monotonic()
    arrivals = follower.wait(lambda a: all(i in a for i in acked), 120,
                             'arrival of %d single writes' % len(docs))
    lags = sorted((arrivals[i] - t) * 1000 for i, t in acked.items())
    return {'lag_median': statistics.median(lags),
            'lag_p95': statistics.quantiles(lags, n=20,
                                            method='inclusive')[18],
            'lag_max': lags[-1]}


class Bench:
    """The control plane (RabbitMQ, RPC, a conductor) and the rounds."""

    def __init__(self, args, workdir, stack):
        self.args, self.workdir, self.stack = args, workdir, stack
        self.docs = make_docs('doc', args.docs, args.doc_size, 1)
        self.writes = make_docs('lag', args.writes, args.doc_size, 2)
        self.timeout = 120 + args.docs / 20
        self.broker = rabbitmq.RabbitMQBroker(workdir / 'rabbitmq')
        stack.callback(self.broker.stop)
        self.broker.start()
        rpc.set_defaults('trove')
        rpc.TRANSPORT = messaging.get_rpc_transport(
            rpc.CONF, url=self.broker.transport_url,
            allowed_remote_exmods=rpc.ALLOWED_EXMODS)
        stack.callback(rpc.cleanup)
        self.listener = conductor.ConductorListener(rpc.TRANSPORT).start()
        stack.callback(self.listener.stop)

    def guest(self, stack, name):
        couchdb = pouchdb.PouchDBServer(self.workdir / name / 'couchdb')
        couchdb.data_dir.mkdir(parents=True, exist_ok=True)
        couchdb.config_file.parent.mkdir(parents=True, exist_ok=True)
        agent = guest_mod.GuestAgent(self.workdir / name / 'agent',
                                     self.broker.transport_url, couchdb)
        stack.callback(couchdb.stop)
        stack.callback(agent.stop)
        agent.start()
        return guest_mod.Guest(agent, self.listener)

    def server(self, stack, name):
        server = pouchdb.PouchDBServer(self.workdir / name)
        stack.callback(server.stop)
        return server.start()

    def agent_pair(self, round_no):
        with contextlib.ExitStack() as stack:
            master = self.guest(stack, 'master-%d' % round_no)
            ready = master.prepare_and_wait(databases=[{'_name': DB}],
                                            users=[USER])
            if ready.kwargs['payload']['service_status'] != 'running':
                raise BenchError('the master failed to prepare')
            writer = master.session(USER['_name'], USER['_password'])
            bulk_load(writer, master.url(DB), self.docs)
            snapshot = master.api.get_replication_snapshot(
                snapshot_info={'id': None, 'instance_id': master.id,
                               'name': 'Replication snapshot',
                               'backup_info': {}},
                replica_source_config=None)
            snapshot['config'] = ''
            replica = self.guest(stack, 'replica-%d' % round_no)
            creds = replica.agent.state_dir / 'couchdb-os_admin.json'

            def os_admin():
                with contextlib.suppress(OSError, ValueError):
                    saved = json.loads(creds.read_text())
                    return saved['user'], saved['password']
                return None

            follower = Follower(replica.couchdb.port, DB, os_admin).start()
            stack.callback(follower.stop)
            wall, start = time.time(), time.monotonic()
            ready = replica.prepare_and_wait(timeout=self.timeout,
                                             snapshot=snapshot)
            if ready.kwargs['payload']['service_status'] != 'running':
                raise BenchError('the replica failed to prepare:\n%s' %
                                 replica.agent.log_text()[-3000:])
            result = catch_up(follower, len(self.docs), start, self.timeout)
            result['ready'] = ready.kwargs['sent'] - wall
            result.update(measure_lag(writer, master.url(DB), follower,
                                      self.writes, self.args.rate))
            return result

    def bare_pair(self, round_no):
        with contextlib.ExitStack() as stack:
            source = self.server(stack, 'source-%d' % round_no)
            target = self.server(stack, 'target-%d' % round_no)
            session = requests.Session()
            for server in (source, target):
                session.put(server.url + '/' + DB, timeout=30)
            bulk_load(session, source.url + '/' + DB, self.docs)
            follower = Follower(target.port, DB).start()
            stack.callback(follower.stop)
            start = time.monotonic()
            answer = session.put(target.url + '/_replicator/' + DB, json={
                'source': source.url + '/' + DB,
                'target': target.url + '/' + DB, 'continuous': True},
                timeout=30)
            if answer.status_code != 201:
                raise BenchError('_replicator: %s' % answer.text)
            result = catch_up(follower, len(self.docs), start, self.timeout)
            result.update(measure_lag(session, source.url + '/' + DB,
                                      follower, self.writes,
                                      self.args.rate))
            return result


ROWS = (('catch-up, docs/s (from prepare / job PUT)', 'catchup', '%.0f'),
        ('transfer, docs/s (first to last arrival)', 'transfer', '%.0f'),
        ('catch-up time, s', 'seconds', '%.1f'),
        ('replica prepare done ("running"), s', 'ready', '%.1f'),
        ('lag median, ms', 'lag_median', '%.0f'),
        ('lag p95, ms', 'lag_p95', '%.0f'),
        ('lag max, ms', 'lag_max', '%.0f'))


def versions():
    modules = pouchdb.pouchdb_home() / 'node_modules'

    def version(package):
        with contextlib.suppress(OSError, ValueError, KeyError):
            return json.loads((modules / package / 'package.json')
                              .read_text())['version']
        return '?'

    node = subprocess.run(['node', '--version'], capture_output=True,
                          text=True, check=False).stdout.strip()
    return 'pouchdb-server %s (PouchDB %s, node %s)' % (
        version('pouchdb-server'), version('pouchdb-core'), node or '?')


def report(args, results):
    def cell(side, key, fmt):
        values = [r[side][key] for r in results if key in r[side]]
        if not values:
            return '-', ''
        return fmt % statistics.median(values), ' '.join(
            fmt % v for v in values)

    print('\nReplication of %d documents of ~%d bytes; lag: %d writes at '
          '%g/s; %d CPUs; %s' % (args.docs, args.doc_size, args.writes,
                                 args.rate, os.cpu_count(), versions()))
    print('Medians of %d round(s) [each round]' % len(results))
    print('%-42s %9s %9s %7s   %s' % ('', 'agent', 'bare', 'a/b',
                                       'rounds: agent | bare'))
    for title, key, fmt in ROWS:
        agent, agent_runs = cell('agent', key, fmt)
        bare, bare_runs = cell('bare', key, fmt)
        ratio = '-' if '-' in (agent, bare) else '%.2f' % (
            statistics.median([r['agent'][key] for r in results]) /
            statistics.median([r['bare'][key] for r in results]))
        print('%-42s %9s %9s %7s   [%s | %s]' % (title, agent, bare, ratio,
                                                 agent_runs, bare_runs))
    print('Reproduce: .venv/bin/python tools/bench_replication.py --docs %d '
          '--doc-size %d --writes %d --rate %g --repeat %d' % (
              args.docs, args.doc_size, args.writes, args.rate, args.repeat))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--docs', type=int, default=10000,
                        help='documents to catch up (default 10000)')
    parser.add_argument('--doc-size', type=int, default=1024,
                        help='approximate JSON bytes a document (1024)')
    parser.add_argument('--writes', type=int, default=300,
                        help='single writes of the lag measurement (300)')
    parser.add_argument('--rate', type=float, default=20.0,
                        help='writes a second of the lag measurement (20)')
    parser.add_argument('--repeat', type=int, default=3,
                        help='rounds; medians count (default 3)')
    parser.add_argument('--keep', action='store_true',
                        help='keep the work directory (logs, data)')
    args = parser.parse_args(argv)
    if min(args.docs, args.writes, args.repeat) < 1 or args.rate <= 0:
        parser.error('--docs, --writes, --repeat and --rate must be > 0')
    return args


def _terminate(signum, _frame):
    raise SystemExit(128 + signum)


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='bench-replication-'))
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            bench = Bench(args, workdir, stack)
            results = []
            for round_no in range(1, args.repeat + 1):
                print('Round %d of %d' % (round_no, args.repeat), flush=True)
                sides = [('agent', bench.agent_pair),
                         ('bare', bench.bare_pair)]
                result = {}
                for side, run in sides[::1 if round_no % 2 else -1]:
                    result[side] = run(round_no)
                    print('  %-5s %s' % (side, ', '.join(
                        '%s %.1f' % kv for kv in sorted(
                            result[side].items()))), flush=True)
                results.append(result)
        report(args, results)
        print('Total %.0f s' % (time.monotonic() - started))
    finally:
        if args.keep:
            print('Work directory kept: %s' % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
