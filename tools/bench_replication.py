#!/usr/bin/env python3
"""Replication through the agent: a new replica's catch-up, steady-state lag.

One run starts a private RabbitMQ and a single-node Swift, plays Trove's
control plane as integration/conftest.py does, and runs ``--repeat`` rounds
on fresh servers (the order of the three pairs turns round between rounds).
The servers are real CouchDB 3.5 nodes (``--server couchdb3``, the default:
the release tools/bootstrap installs in .cache/couchdb) or pouchdb-servers
(``--server pouchdb``, the CouchDB 1.6 API).  Every guest is configured
for Swift as an operator configures one (the backup key, the default
segment size; the owner's token in the request context):

- agent-seeded: a master guest (the real agent, default options, managing
  its own server) prepared with database ``bench`` and a user, who loads
  ``--docs`` documents of ``--doc-size`` bytes of JSON (``_bulk_docs``,
  1,000 a request); then a fresh replica guest, created as Trove 26's
  taskmanager creates one (integration/scenario/control_plane.py
  ``create_replica``): ``backup_required_for_replication``, the master's
  ``get_replication_snapshot`` with a backup id (the agent backs the master
  up to Swift), the conductor's COMPLETED ``update_backup``,
  ``prepare(backup_info=..., snapshot=...)`` (the replica restores the
  backup, then replicates from the sequences it holds), and the deletion of
  the backup.  Timed from the snapshot call: until the snapshot (its
  backup) is done, until the replica reports "running" (prepare done), and
  until its last document arrives.  The backup alone is timed by the
  master's BUILDING and COMPLETED updates to the conductor, the restore
  alone by the replica's log ("Restoring backup" to "Verified ... after the
  restore");
- agent-http: the same, but the snapshot names no backup (``id`` None):
  the replica is prepared with the snapshot alone and replicates every
  document over HTTP.  Timed the same way, from the snapshot call;
- bare: the same documents between two plain servers (no agent; on
  CouchDB 3.5 its one admin at both ends, as the server demands one; on
  pouchdb-server no admin), replicated by one continuous ``_replicator``
  document on the target (the form of the agent's job), timed from the PUT
  of that document;
- lag, on each pair once caught up and its job running (a probe written
  on the source has arrived), and SETTLE seconds later, so that the
  agent's first progress check after the catch-up is over: ``--writes``
  single documents PUT on the source at ``--rate`` a second from one thread;
  a document's lag runs from the return of its PUT to its arrival.

Arrivals are recorded by a follower of the replica's ``_changes`` feed
(``feed=continuous``, as the replica's admin): the monotonic time each
document id first shows, so no polling interval adds to the figures.  The
documents a database already holds when it first shows (the seeded
replica's, restored from the backup) arrive then: its ``_all_docs`` names
them.  "catch-up" is N / (last arrival - start); "transfer" is N / (last
arrival - first arrival), replication alone without prepare or job
start-up: its agent-http/bare ratio is what the agent costs replication
(the seeded replica replicates none of them).  Medians of the rounds are
printed with each round's values, and the ratios of the medians:
seeded/http and http/bare.  Every process started here is stopped and the
work directory removed, whatever happens.  Exit status 0 whatever the
figures; 1 when a step fails (the message says which, with the agent's
log).

    .venv/bin/python tools/bench_replication.py
    .venv/bin/python tools/bench_replication.py --docs 200000
    .venv/bin/python tools/bench_replication.py --server pouchdb
    .venv/bin/python tools/bench_replication.py --docs 2000 --repeat 1
"""

import argparse
import base64
import contextlib
import datetime
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
from integration.scenario import control_plane  # noqa: E402
from integration.services import base  # noqa: E402
from integration.services import couchdb3  # noqa: E402
from integration.services import pouchdb  # noqa: E402
from integration.services import rabbitmq  # noqa: E402
from integration.services import servers  # noqa: E402
from integration.services import swift as swift_mod  # noqa: E402
import trove.common.cfg  # noqa: E402,F401  (registers the options)
from trove import rpc  # noqa: E402

DB = 'bench'
USER = {'_name': 'bench', '_password': 'bench-pw', '_host': '%',
        '_databases': [{'_name': DB}]}
BATCH = 1000
SIDES = ('agent-seeded', 'agent-http', 'bare')
BACKUP_KEY = 'bench-replication-backup-key'
SETTLE = 3.0     # > the agent's replication_sync_interval (2 s)
WORDS = ('kalo', 'mine', 'rato', 'suvi', 'deba', 'zupe', 'quifo', 'grashi',
         'anel', 'orur', 'order', 'paid', 'shipped', 'gift', 'bulk', 'promo')


# The replica's restore, from its agent's log (oslo.log's default format).
LOG_TIME = r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) .*'
RESTORE_STARTS = LOG_TIME + r'Restoring backup %s\.$'
RESTORE_ENDS = LOG_TIME + r'Verified \d+ databases after the restore$'


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
    exist; the documents the database holds when it first shows (restored
    from a backup) show then."""

    def __init__(self, port, db, credentials=None, appear_timeout=120):
        self.port, self.db, self.credentials = port, db, credentials
        self.appear_timeout = appear_timeout
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
        for _ in base.polling_loop(base.scaled(self.appear_timeout),
                                   interval=0.02):
            if self._stopped:
                break
            # OSError: no credentials file yet, or (requests) no server.
            with contextlib.suppress(OSError, ValueError, KeyError):
                headers = self._headers()
                answer = requests.get(url, headers=headers, timeout=5)
                if answer.status_code == 200:
                    self._present(url, headers, time.monotonic(),
                                  answer.json()['doc_count'])
                    return headers
        raise BenchError('database %s did not appear on port %d'
                         % (self.db, self.port))

    def _present(self, url, headers, seen, count):
        """The documents the database held at ``seen`` (``count``, design
        documents included): unless more arrived before ``_all_docs``
        listed them, they arrived at ``seen``."""
        if not count:
            return
        answer = requests.get(url + '/_all_docs', headers=headers,
                              timeout=base.scaled(300))
        if answer.status_code != 200:
            raise BenchError('_all_docs answered %d' % answer.status_code)
        listed = answer.json()
        if listed['total_rows'] != count:
            seen = time.monotonic()
        with self._cond:
            for row in listed['rows']:
                if not row['id'].startswith('_design/'):
                    self.arrivals.setdefault(row['id'], seen)
            self._cond.notify_all()

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
    """The control plane (RabbitMQ, RPC, a conductor, Swift) and the rounds."""

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
        self.swift = swift_mod.SwiftCluster(workdir / 'swift')
        stack.callback(self.swift.stop)
        self.swift.start()

    @property
    def real(self):
        return self.args.server == 'couchdb3'

    def sides(self, round_no):
        """(side, run) of the three pairs, in this round's order: each
        round starts one further along SIDES."""
        runs = {'agent-seeded': self.seeded_pair,
                'agent-http': self.http_pair, 'bare': self.bare_pair}
        turn = (round_no - 1) % len(SIDES)
        return [(side, runs[side]) for side in SIDES[turn:] + SIDES[:turn]]

    def guest(self, stack, name):
        """A started agent and its server, whose backups go to the Swift
        as an operator configures it (the backup key, the default segment
        size, the owner's token in the context)."""
        def start(name, auth, options):
            couchdb = servers.make_server(self.args.server,
                                          self.workdir / name / 'couchdb')
            couchdb.data_dir.mkdir(parents=True, exist_ok=True)
            agent = guest_mod.GuestAgent(self.workdir / name / 'agent',
                                         self.broker.transport_url, couchdb,
                                         report_interval=30, options=options)
            stack.callback(couchdb.stop)
            stack.callback(agent.stop)
            agent.start()
            return guest_mod.Guest(agent, self.listener, **auth)

        # The operator's defaults, not the tests' (heartbeat every second,
        # a debug line per CouchDB request, 64 KiB segments).
        return control_plane.swift_guest(
            start, self.swift, name, BACKUP_KEY,
            rpc.CONF.backup_segment_max_size,
            options={'DEFAULT': {'debug': 'False'}})

    def master(self, stack, name):
        """A master guest holding the documents; the tenant user's
        session."""
        master = self.guest(stack, name + '-master')
        self.prepared(master, databases=[{'_name': DB}], users=[USER])
        writer = master.session(USER['_name'], USER['_password'])
        bulk_load(writer, master.url(DB), self.docs)
        return master, writer

    def replica(self, stack, name):
        """A fresh guest, not prepared yet; a follower of its database."""
        replica = self.guest(stack, name + '-replica')
        follower = Follower(replica.couchdb.port, DB, agent_credentials(
            replica.agent.state_dir / 'couchdb-os_admin.json'),
            appear_timeout=self.timeout)
        stack.callback(follower.stop)
        return replica, follower

    def seeded_pair(self, round_no):
        """Trove 26's create-replica: the source's backup, its restore."""
        with contextlib.ExitStack() as stack:
            master, writer = self.master(stack, 'seeded-%d' % round_no)
            replica, follower = self.replica(stack, 'seeded-%d' % round_no)
            snapshots = []
            wall, start = time.time(), time.monotonic()
            try:
                ready, = control_plane.create_replica(
                    master, replica, self.swift.connection(),
                    timeout=self.timeout,
                    after_snapshot=lambda snapshot: snapshots.append(
                        (time.monotonic(), snapshot)))
            except AssertionError as exc:
                raise BenchError("Trove's create-replica flow failed: %s\n%s"
                                 % (exc, log_tails(master, replica))) from None
            running(replica, ready)
            result = self.measure(follower, start, writer, master.url(DB),
                                  replicated=False)
            done, snapshot = snapshots[0]
            backup_id = snapshot['seed']['backup_id']
            return dict(result, ready=ready.kwargs['sent'] - wall,
                        snapshot=done - start,
                        restore=restore_seconds(replica, backup_id),
                        **self.backup(master, backup_id))

    def http_pair(self, round_no):
        """A snapshot without a backup: every document over HTTP."""
        with contextlib.ExitStack() as stack:
            master, writer = self.master(stack, 'http-%d' % round_no)
            replica, follower = self.replica(stack, 'http-%d' % round_no)
            wall, start = time.time(), time.monotonic()
            snapshot = master.api.get_replication_snapshot(
                snapshot_info={'id': None, 'instance_id': master.id,
                               'name': 'Replication snapshot',
                               'backup_info': {}},
                replica_source_config=None)
            done = time.monotonic()
            snapshot['config'] = ''
            ready = self.prepared(replica, snapshot=snapshot)
            return dict(self.measure(follower, start, writer, master.url(DB)),
                        ready=ready.kwargs['sent'] - wall,
                        snapshot=done - start)

    def prepared(self, guest, **kwargs):
        """Trove's prepare; the heartbeat that says it is done."""
        try:
            ready = guest.prepare_and_wait(timeout=self.timeout, **kwargs)
        except AssertionError as exc:
            raise BenchError('%s: %s\n%s' % (
                name_of(guest), exc, log_tails(guest))) from None
        return running(guest, ready)

    def backup(self, guest, backup_id):
        """The backup as the conductor saw it: BUILDING to COMPLETED, in
        seconds, and its size."""
        def update(state):
            return self.listener.wait_for(
                'update_backup', guest.id,
                lambda m: (m.kwargs['backup_id'] == backup_id
                           and m.kwargs.get('state') == state)).kwargs
        building, completed = update('BUILDING'), update('COMPLETED')
        return {'backup': completed['sent'] - building['sent'],
                'backup_mb': completed['size'] * 1024}

    def bare_pair(self, round_no):
        with contextlib.ExitStack() as stack:
            source, writer = self.server(stack, 'bare-%d-source' % round_no)
            target, admin = self.server(stack, 'bare-%d-target' % round_no)
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

    def measure(self, follower, start, writer, db_url, replicated=True):
        """Catch-up since ``start``, then the lag of single writes.  The
        transfer rate only when the documents came by replication."""
        count = len(self.docs)
        arrivals = follower.wait(lambda a: len(a) >= count, self.timeout,
                                 'catch-up of %d documents' % count)
        first, last = min(arrivals.values()), max(arrivals.values())
        result = {'catchup': count / (last - start), 'seconds': last - start}
        if replicated:
            result['transfer'] = count / max(last - first, 1e-3)
        # The seeded replica has its documents before its job runs (3.x
        # starts a job up to 5 s late): the lag is measured once a write
        # made now has arrived.
        put(writer, db_url, {'_id': 'probe'})
        follower.wait(lambda a: 'probe' in a, 120, 'arrival of a probe')
        time.sleep(SETTLE)
        acked, begin = {}, time.monotonic()
        for n, doc in enumerate(self.writes):
            time.sleep(max(0.0, begin + n / self.args.rate - time.monotonic()))
            put(writer, db_url, doc)
            acked[doc['_id']] = time.monotonic()
        arrivals = follower.wait(lambda a: all(i in a for i in acked), 120,
                                 'arrival of %d single writes' % len(acked))
        lags = sorted((arrivals[i] - t) * 1000 for i, t in acked.items())
        return dict(result, lag_median=statistics.median(lags),
                    lag_p95=statistics.quantiles(
                        lags, n=20, method='inclusive')[18],
                    lag_max=lags[-1])


def put(session, db_url, doc):
    answer = session.put('%s/%s' % (db_url, doc['_id']), json=doc, timeout=30)
    if answer.status_code != 201:
        raise BenchError('PUT %s: %d %s' % (
            doc['_id'], answer.status_code, answer.text))


def name_of(guest):
    return guest.agent.workdir.parent.name


def log_tails(*guests):
    """The end of each guest's agent log, for a failure's message."""
    return '\n'.join('--- %s (%s), end of its log:\n%s' % (
        name_of(guest), guest.agent.agent_log,
        guest.agent.log_text()[-3000:]) for guest in guests)


def running(guest, ready):
    """``ready``, the heartbeat that ends ``guest``'s prepare, if it says
    "running"."""
    if ready.kwargs['payload']['service_status'] != 'running':
        raise BenchError('%s failed to prepare:\n%s'
                         % (name_of(guest), log_tails(guest)))
    return ready


def restore_seconds(guest, backup_id):
    """How long ``guest`` took to restore ``backup_id``, from its log."""
    text = guest.agent.log_text()
    marks = [re.search(pattern, text, re.MULTILINE) for pattern in (
        RESTORE_STARTS % re.escape(backup_id), RESTORE_ENDS)]
    if not all(marks):
        raise BenchError('%s logged no restore of backup %s:\n%s'
                         % (name_of(guest), backup_id, log_tails(guest)))
    starts, ends = (datetime.datetime.strptime(
        mark.group(1), '%Y-%m-%d %H:%M:%S.%f') for mark in marks)
    return (ends - starts).total_seconds()


# (title, key, format); a side without the key shows "-".
ROWS = (('every document on the replica, s', 'seconds', '%.1f'),
        ('catch-up, docs/s (N / that time)', 'catchup', '%.0f'),
        ('replica prepare done ("running"), s', 'ready', '%.1f'),
        ('snapshot done (with its backup), s', 'snapshot', '%.1f'),
        ('backup, BUILDING to COMPLETED, s', 'backup', '%.1f'),
        ('backup object, MB', 'backup_mb', '%.0f'),
        ("restore, replica's log, s", 'restore', '%.1f'),
        ('transfer, docs/s (first to last arrival)', 'transfer', '%.0f'),
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


def ratio(a, b):
    return '-' if a is None or not b else '%.2f' % (a / b)


def report(args, results, load):
    print('\nA new replica of %d documents of ~%d bytes; lag: %d writes at '
          '%g/s; %d CPUs (load average %.2f at the start, %.2f at the end); '
          '%s' % (args.docs, args.doc_size, args.writes, args.rate,
                  os.cpu_count(), load, os.getloadavg()[0],
                  versions(args.server)))
    print('Medians of %d round(s) [each round]; times from the snapshot call '
          '(agent) or the job\'s PUT (bare)' % len(results))
    print('%-42s %7s %7s %7s %5s %5s   %s' % (
        '', 'seeded', 'http', 'bare', 's/h', 'h/b',
        '[rounds: seeded | http | bare]'))
    for title, key, fmt in ROWS:
        runs = {side: [r[side][key] for r in results if key in r[side]]
                for side in SIDES}
        med = [statistics.median(v) if v else None for v in runs.values()]
        print('%-42s %7s %7s %7s %5s %5s   [%s]' % (
            title, *('-' if m is None else fmt % m for m in med),
            ratio(med[0], med[1]), ratio(med[1], med[2]),
            ' | '.join(' '.join(fmt % v for v in runs[side]) or '-'
                       for side in SIDES)))
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
    parser.add_argument('--workdir', type=pathlib.Path,
                        help='where to make the work directory (default: '
                             'the system temporary directory)')
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
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='bench-replication-',
                                            dir=args.workdir))
    started, load = time.monotonic(), os.getloadavg()[0]
    try:
        with contextlib.ExitStack() as stack:
            bench = Bench(args, workdir, stack)
            results = []
            for round_no in range(1, args.repeat + 1):
                print('Round %d of %d' % (round_no, args.repeat), flush=True)
                results.append({})
                for side, run in bench.sides(round_no):
                    results[-1][side] = run(round_no)
                    print('  %-12s %s' % (side, ', '.join(
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
