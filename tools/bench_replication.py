#!/usr/bin/env python3
"""Replication through the agent: catch-up throughput and steady-state lag.

One run starts a private RabbitMQ, plays Trove's control plane as
integration/conftest.py does, and runs ``--repeat`` rounds on fresh servers
(the order of the two pairs alternates between rounds).  The servers are
real CouchDB 3.5 nodes (``--server couchdb3``, the default: the release
tools/bootstrap installs in .cache/couchdb) or pouchdb-servers (``--server
pouchdb``, the CouchDB 1.6 API):

- agent: a master guest (the real agent, default options, managing its own
  server) prepared with database ``bench`` and a user, who loads
  ``--docs`` documents of ``--doc-size`` bytes of JSON (``_bulk_docs``,
  1,000 a request); then a fresh replica guest, created as Trove's
  taskmanager creates one: the master's ``get_replication_snapshot``, then
  ``prepare(snapshot=...)``.  Timed from the prepare call: until the replica
  reports "running" (prepare done), and until its last document arrives;
- bare: the same documents between two plain servers (no agent; on
  CouchDB 3.5 its one admin at both ends, as the server demands one; on
  pouchdb-server no admin), replicated by one continuous ``_replicator``
  document on the target (the form of the agent's job), timed from the PUT
  of that document;
- lag, on each pair once caught up (and SETTLE seconds later, so that the
  agent's first progress check after the catch-up is over): ``--writes``
  single documents PUT on the source at ``--rate`` a second from one thread;
  a document's lag runs from the return of its PUT to its arrival.

Arrivals are recorded by a follower of the replica's ``_changes`` feed
(``feed=continuous``, as the replica's admin): the monotonic
time each document id first shows, so no polling interval adds to the
figures.  "catch-up" is N / (last arrival - start); "transfer" is N / (last
arrival - first arrival), replication alone without prepare or job start-up:
its agent/bare ratio is what the agent costs replication.  Medians of the
rounds are printed with each round's values.  Every process started here is
stopped and the work directory removed, whatever happens.  Exit status 0
whatever the figures.

    .venv/bin/python tools/bench_replication.py
    .venv/bin/python tools/bench_replication.py --server pouchdb
    .venv/bin/python tools/bench_replication.py --docs 2000 --repeat 1
"""

import argparse
import base64
import contextlib
import http.client
import json
import logging
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# oslo.service imports eventlet, which warns; the agent never runs on it.
warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')

import oslo_messaging as messaging  # noqa: E402
import requests  # noqa: E402

from integration import conductor  # noqa: E402
from integration import guest as guest_mod  # noqa: E402
from integration.services import base  # noqa: E402
from integration.services import couchdb3  # noqa: E402
from integration.services import pouchdb  # noqa: E402
from integration.services import rabbitmq  # noqa: E402
from integration.services import servers  # noqa: E402
import trove.common.cfg  # noqa: E402,F401  (registers the options)
from trove import rpc  # noqa: E402

DB = 'bench'
USER = {'_name': 'bench', '_password': 'bench-pw', '_host': '%',
        '_databases': [{'_name': DB}]}
BATCH = 1000
SETTLE = 3.0     # > the agent's replication_sync_interval (2 s)
WORDS = ('kalo', 'mine', 'rato', 'suvi', 'deba', 'zupe', 'quifo', 'grashi',
         'anel', 'orur', 'order', 'paid', 'shipped', 'gift', 'bulk', 'promo')


class BenchError(Exception):
    """A step of the benchmark failed; the message says which."""


def make_docs(prefix, count, size, seed):
    """``count`` order-like documents of about ``size`` bytes of JSON."""
    rnd = random.Random(seed)
    docs = []
    for n in range(count):
        doc = {'_id': '%s-%06d' % (prefix, n), 'type': 'order', 'n': n,
               'customer': ''.join(rnd.choices(WORDS, k=4)).title(),
               'items': [{'sku': 'SKU-%04d' % rnd.randrange(10000),
                          'qty': rnd.randint(1, 9)}
                         for _ in range(rnd.randint(1, 4))],
               'total': rnd.randrange(100000) / 100, 'note': ''}
        pad = max(0, size - len(json.dumps(doc)))
        doc['note'] = ' '.join(rnd.choices(WORDS, k=pad // 2))[:pad]
        docs.append(doc)
    return docs


def bulk_load(session, db_url, docs):
    for start in range(0, len(docs), BATCH):
        answer = session.post(db_url + '/_bulk_docs', timeout=120,
                              json={'docs': docs[start:start + BATCH]})
        failed = ([row for row in answer.json() if 'error' in row]
                  if answer.status_code == 201 else answer.text)
        if failed:
            raise BenchError('_bulk_docs on %s: %s' % (db_url, failed[:3]))


def agent_credentials(path):
    """(user, password) from the agent's credentials file, once it exists
    (OSError before)."""
    def read():
        saved = json.loads(path.read_text())
        return saved['user'], saved['password']
    return read


class Follower:
    """Follows a database's ``_changes`` feed from sequence 0 and records
    the monotonic time each document id (design documents aside) first
    shows.  It waits for the server, the database and ``credentials()``
    (a callable giving (user, password), or None: no credentials) to
    exist."""

    def __init__(self, port, db, credentials=None):
        self.port, self.db, self.credentials = port, db, credentials
        self.arrivals = {}
        self.error = None
        self._cond = threading.Condition()
        self._stopped = False
        self._conn = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

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

    def _headers(self):
        if self.credentials is None:
            return {}
        token = '%s:%s' % self.credentials()
        return {'Authorization': 'Basic %s' % base64.b64encode(
            token.encode()).decode()}

    def _wait_for_database(self):
        url = 'http://127.0.0.1:%d/%s' % (self.port, self.db)
        for _ in base.polling_loop(base.scaled(120), interval=0.02):
            if self._stopped:
                break
            # OSError: no credentials file yet, or (requests) no server.
            with contextlib.suppress(OSError, ValueError, KeyError):
                headers = self._headers()
                if requests.get(url, headers=headers,
                                timeout=5).status_code == 200:
                    return headers
        raise BenchError('database %s did not appear on port %d'
                         % (self.db, self.port))

    def _follow(self, headers):
        self._conn = http.client.HTTPConnection('127.0.0.1', self.port)
        self._conn.request('GET', '/%s/_changes?feed=continuous&since=0'
                           '&heartbeat=5000' % self.db, headers=headers)
        feed = self._conn.getresponse()
        if feed.status != 200:
            raise BenchError('_changes answered %d' % feed.status)
        while line := feed.readline():
            doc_id = (json.loads(line) if line.strip() else {}).get('id')
            if doc_id and not doc_id.startswith('_design/'):
                with self._cond:
                    self.arrivals.setdefault(doc_id, time.monotonic())
                    self._cond.notify_all()
        raise BenchError('the _changes feed ended')


class Bench:
    """The control plane (RabbitMQ, RPC, a conductor) and the rounds."""

    def __init__(self, args, workdir, stack):
        self.args, self.workdir = args, workdir
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

    @property
    def real(self):
        return self.args.server == 'couchdb3'

    def guest(self, stack, name):
        couchdb = servers.make_server(self.args.server,
                                      self.workdir / name / 'couchdb')
        couchdb.data_dir.mkdir(parents=True, exist_ok=True)
        # The operator's defaults, not the tests' (heartbeat every second,
        # a debug line per CouchDB request).
        agent = guest_mod.GuestAgent(self.workdir / name / 'agent',
                                     self.broker.transport_url, couchdb,
                                     report_interval=30,
                                     options={'DEFAULT': {'debug': 'False'}})
        stack.callback(couchdb.stop)
        stack.callback(agent.stop)
        agent.start()
        return guest_mod.Guest(agent, self.listener)

    def server(self, stack, name):
        """A plain server with database DB; its admin's session."""
        server = servers.make_server(self.args.server, self.workdir / name)
        stack.callback(server.stop)
        server.start()
        session = requests.Session()
        session.trust_env = False
        dbs = [DB]
        if self.real:
            session.auth = server.admin
            dbs = ['_users', '_replicator', DB]
        for db in dbs:
            if session.put(server.url + '/' + db,
                           timeout=30).status_code not in (201, 202):
                raise BenchError('could not create %s on %s'
                                 % (db, server.url))
        return server, session

    def endpoint(self, server, session):
        """A replication endpoint of ``server``'s DB, as its admin."""
        url = server.url + '/' + DB
        if not self.real:
            return url
        user, password = session.auth
        return {'url': url, 'auth': {'basic': {'username': user,
                                               'password': password}}}

    def agent_pair(self, round_no):
        with contextlib.ExitStack() as stack:
            master = self.guest(stack, 'master-%d' % round_no)
            self.prepared(master, databases=[{'_name': DB}], users=[USER])
            writer = master.session(USER['_name'], USER['_password'])
            bulk_load(writer, master.url(DB), self.docs)
            snapshot = master.api.get_replication_snapshot(
                snapshot_info={'id': None, 'instance_id': master.id,
                               'name': 'Replication snapshot',
                               'backup_info': {}},
                replica_source_config=None)
            snapshot['config'] = ''
            replica = self.guest(stack, 'replica-%d' % round_no)
            follower = Follower(replica.couchdb.port, DB, agent_credentials(
                replica.agent.state_dir / 'couchdb-os_admin.json'))
            stack.callback(follower.stop)
            wall, start = time.time(), time.monotonic()
            ready = self.prepared(replica, snapshot=snapshot)
            return dict(self.measure(follower, start, writer, master.url(DB)),
                        ready=ready.kwargs['sent'] - wall)

    def prepared(self, guest, **kwargs):
        """Trove's prepare; the heartbeat that says it is done."""
        ready = guest.prepare_and_wait(timeout=self.timeout, **kwargs)
        if ready.kwargs['payload']['service_status'] != 'running':
            raise BenchError('%s failed to prepare:\n%s' % (
                guest.agent.workdir.name, guest.agent.log_text()[-3000:]))
        return ready

    def bare_pair(self, round_no):
        with contextlib.ExitStack() as stack:
            source, writer = self.server(stack, 'source-%d' % round_no)
            target, admin = self.server(stack, 'target-%d' % round_no)
            bulk_load(writer, source.url + '/' + DB, self.docs)
            follower = Follower(target.port, DB, admin.auth and (
                lambda: admin.auth))
            stack.callback(follower.stop)
            start = time.monotonic()
            answer = admin.put(target.url + '/_replicator/' + DB, json={
                'source': self.endpoint(source, writer),
                'target': self.endpoint(target, admin), 'continuous': True},
                timeout=30)
            if answer.status_code not in (201, 202):
                raise BenchError('_replicator: %s' % answer.text)
            return self.measure(follower, start, writer,
                                source.url + '/' + DB)

    def measure(self, follower, start, writer, db_url):
        """Catch-up since ``start``, then the lag of single writes."""
        count = len(self.docs)
        arrivals = follower.wait(lambda a: len(a) >= count, self.timeout,
                                 'catch-up of %d documents' % count)
        first, last = min(arrivals.values()), max(arrivals.values())
        result = {'catchup': count / (last - start), 'seconds': last - start,
                  'transfer': count / max(last - first, 1e-3)}
        time.sleep(SETTLE)
        acked, begin = {}, time.monotonic()
        for n, doc in enumerate(self.writes):
            time.sleep(max(0.0, begin + n / self.args.rate - time.monotonic()))
            answer = writer.put('%s/%s' % (db_url, doc['_id']), json=doc,
                                timeout=30)
            if answer.status_code != 201:
                raise BenchError('PUT %s: %d %s' % (
                    doc['_id'], answer.status_code, answer.text))
            acked[doc['_id']] = time.monotonic()
        arrivals = follower.wait(lambda a: all(i in a for i in acked), 120,
                                 'arrival of %d single writes' % len(acked))
        lags = sorted((arrivals[i] - t) * 1000 for i, t in acked.items())
        return dict(result, lag_median=statistics.median(lags),
                    lag_p95=statistics.quantiles(
                        lags, n=20, method='inclusive')[18],
                    lag_max=lags[-1])


ROWS = (('catch-up, docs/s (from prepare / job PUT)', 'catchup', '%.0f'),
        ('transfer, docs/s (first to last arrival)', 'transfer', '%.0f'),
        ('catch-up time, s', 'seconds', '%.1f'),
        ('replica prepare done ("running"), s', 'ready', '%.1f'),
        ('lag median, ms', 'lag_median', '%.0f'),
        ('lag p95, ms', 'lag_p95', '%.0f'),
        ('lag max, ms', 'lag_max', '%.0f'))


def versions(kind):
    if kind == 'couchdb3':
        # releases/couchdb.rel: {release, ..., {erts, V}, [..., {couch, V}]}
        release = couchdb3.couchdb_home()
        rel = (release / 'releases' / 'couchdb.rel').read_text()
        found = re.search(r'\{couch,\s*"([^"]+)"', rel)
        erts = re.search(r'\{erts,\s*"([^"]+)"', rel)
        return 'Apache CouchDB %s (ERTS %s, %s)' % (
            found.group(1) if found else '?', erts.group(1) if erts else '?',
            release)

    def version(name):
        package = pouchdb.pouchdb_home() / 'node_modules' / name
        return json.loads((package / 'package.json').read_text())['version']

    node = subprocess.run(['node', '--version'], capture_output=True,
                          text=True, check=False).stdout.strip()
    return 'pouchdb-server %s (PouchDB %s, node %s)' % (
        version('pouchdb-server'), version('pouchdb-core'), node)


def report(args, results, load):
    print('\nReplication of %d documents of ~%d bytes; lag: %d writes at '
          '%g/s; %d CPUs (load average %.2f at the start, %.2f at the end); '
          '%s' % (args.docs, args.doc_size, args.writes, args.rate,
                  os.cpu_count(), load, os.getloadavg()[0],
                  versions(args.server)))
    print('Medians of %d round(s) [each round]' % len(results))
    print('%-42s %8s %8s %6s   %s' % ('', 'agent', 'bare', 'a/b',
                                      '[rounds: agent | bare]'))
    for title, key, fmt in ROWS:
        runs = {side: [r[side][key] for r in results if key in r[side]]
                for side in ('agent', 'bare')}
        med = {side: statistics.median(v) if v else None
               for side, v in runs.items()}
        ratio = '%.2f' % (med['agent'] / med['bare']) if None not in (
            med.values()) else '-'
        print('%-42s %8s %8s %6s   [%s | %s]' % (
            title, *('-' if m is None else fmt % m for m in med.values()),
            ratio, *(' '.join(fmt % v for v in runs[side]) or '-'
                     for side in runs)))
    print('Reproduce: .venv/bin/python tools/bench_replication.py --server %s '
          '--docs %d --doc-size %d --writes %d --rate %g --repeat %d' % (
              args.server, args.docs, args.doc_size, args.writes, args.rate,
              args.repeat))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--server', choices=servers.KINDS,
                        default='couchdb3',
                        help='couchdb3: real CouchDB 3.5 nodes (default); '
                             'pouchdb: pouchdb-servers (the 1.6 API)')
    parser.add_argument('--docs', type=int, default=10000,
                        help='documents to catch up (default 10000)')
    parser.add_argument('--doc-size', type=int, default=1024,
                        help='JSON bytes of a document (default 1024)')
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
    # A channel closing at shutdown logs a harmless warning from py-amqp.
    logging.getLogger('amqp').setLevel(logging.ERROR)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='bench-replication-'))
    started, load = time.monotonic(), os.getloadavg()[0]
    try:
        with contextlib.ExitStack() as stack:
            bench = Bench(args, workdir, stack)
            results = []
            for round_no in range(1, args.repeat + 1):
                print('Round %d of %d' % (round_no, args.repeat), flush=True)
                sides = [('agent', bench.agent_pair),
                         ('bare', bench.bare_pair)]
                results.append({})
                for side, run in sides[::1 if round_no % 2 else -1]:
                    results[-1][side] = run(round_no)
                    print('  %-5s %s' % (side, ', '.join(
                        '%s %.1f' % kv for kv in sorted(
                            results[-1][side].items()))), flush=True)
        report(args, results, load)
        print('Total %.0f s' % (time.monotonic() - started))
    finally:
        if args.keep:
            print('Work directory kept: %s' % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
