"""An HTTP-level fake of a CouchDB 3.x node (and a sliver of 1.6).

Kept only for what one real node cannot show; everything else runs on the
real CouchDB 3.5 and on pouchdb-server in tests/functional/couchdb/:

- A cluster's shard maps (tests/unit/couchdb/test_restore_3x_node.py): a
  backup whose ``_dbs`` documents place databases on several nodes, which
  the restore must refuse before it writes any (``requests_seen`` lists
  what the fake was asked).  A restore onto another node name runs on two
  real nodes (tests/functional/couchdb/test_restore_node.py).
- Answers a real server does not give on demand
  (tests/unit/couchdb/test_client.py): ``fail_status``, a server error on
  every request, and CouchDB 1.6's ``POST /_restart``, which
  pouchdb-server lacks.  With ``version='1'`` the fake answers only
  ``GET /`` (version 1.6.1), ``/_up`` (400, as 1.6 takes it for a
  database name) and ``/_restart``; anything else is a 404.
- Replication states real jobs never reach
  (tests/unit/couchdb/test_replication_3x.py): nothing replicates by
  itself, ``replicate(source, target, db, skip=...)`` copies documents with
  their revisions where a job would, so a replica can lack a revision in
  the middle of a database; ``set_job_state`` says what
  ``/_scheduler/docs`` reports of a job (``failed``, then ``running``:
  every job is ``running`` until then).

Written from CouchDB's documentation and held against a real 3.5 node
where it models 3.x's security
(tests/functional/couchdb/test_fake_couchdb3_agrees.py): a
``ThreadingHTTPServer`` on 127.0.0.1 in a thread, with in-memory state.
What the 3.x node models, because the tests above go through it:

- Basic auth against the [admins] config section (stored hashed,
  ``-pbkdf2-<key>,<salt>,<iterations>``) and the ``_users`` documents
  (password hashed on write into derived_key/salt/iterations/...).
- ``/_up``, ``/_session``, admin-only ``/_all_dbs``,
  ``/_node/_local/_config``; new databases admin-only (``_security``
  members/admins roles ``_admin``), ``_users`` included, so a user cannot
  even read its own document (as a real 3.5 answers: 403 "You are not
  allowed to access this db.").  Endpoints for server admins only answer
  401 "You are not a server admin." to everyone else, logged in or not;
  these include ``_all_docs`` and ``_changes`` of ``_users`` and
  ``_replicator``.
- Documents with ``_rev`` and 409 on a stale or missing rev; design
  documents (``_design/x``, written by db or server admins only; their
  functions are stored, never run); deletions leave tombstones.
- Per-database update sequences as 3.x's opaque strings ``"N-g1AAAA..."``
  in ``GET /{db}`` (``update_seq``) and ``GET /{db}/_changes`` (``since``,
  ``limit``; one row per document at its latest change, ``last_seq``,
  ``pending``).  A ``since`` must be ``0``, ``now`` or a sequence the
  server gave out (only its opaque part counts).  A ``_security`` change
  bumps ``update_seq`` without a ``_changes`` row, as CouchDB's storage
  engines do.  ``POST /{db}/_revs_diff`` against every revision a document
  has had.
- ``PUT /{db}/_security``: membership is checked first (401 for nobody,
  403 for a user); a member who is no admin gets 3.5's 500
  ``no_majority``.
- ``GET /_scheduler/docs[/_replicator[/{docid}]]``, admins only.
- The node (docs.couchdb.org "/_node/{node-name}", "Shard Management"):
  ``FakeCouchDB('3', node='couchdb@host')`` is named ``node`` (default
  ``couchdb@127.0.0.1``); ``GET /_node/_local`` answers ``{"name": node}``.
  The node-local database ``_dbs`` (one shard map per database: ``_id``,
  ``_rev``, ``shard_suffix``, ``changelog`` [["add", range, node], ...],
  ``by_node`` {node: [ranges]}, ``by_range`` {range: [nodes]}, ``props``)
  answers ``GET /_node/_local/_dbs/_all_docs`` (``include_docs``,
  ``startkey``, ``endkey``, ``skip``, ``limit``), admins only.  Creating a
  database writes its q=2, n=1 shard map on this node, deleting it
  removes the map.
- Configuration files: at start the fake reads ``[admins]`` and ``[couchdb]
  uuid`` from ``<config_dir>/local.d/*.ini`` (later files win), as CouchDB
  reads its ini chain; changes through the config API stay in memory.
  ``GET /`` shows ``[couchdb] uuid`` (a random one at creation, as a real
  node has one).
- ``copy_data(source, target)``: what a file-level restore of ``source``'s
  data directory onto ``target`` does (databases and ``_dbs``, never the
  configuration).
"""

import base64
import configparser
import hashlib
import http.server
import json
import os
import re
import secrets
import socket
import threading
import time
import uuid
from urllib import parse

_DB_NAME = re.compile(r'^[a-z][a-z0-9_$()+/-]*$')
_SYSTEM_DBS = ('_users', '_replicator', '_global_changes')
_ITERATIONS = 10
_ADMIN_ONLY = {'members': {'roles': ['_admin']},
               'admins': {'roles': ['_admin']}}
# Replication job states of CouchDB 3.x's scheduler (_scheduler/docs).
JOB_STATES = ('initializing', 'running', 'pending', 'crashing', 'error',
              'failed', 'completed')
_ERROR_STATES = ('crashing', 'error', 'failed')
DEFAULT_NODE = 'couchdb@127.0.0.1'
# The node-local databases reached through /_node/_local/{name}.
NODE_LOCAL_DBS = ('_dbs',)
# The shard ranges of a q=2 database.
Q2_RANGES = ('00000000-7fffffff', '80000000-ffffffff')


def _copy(value):
    return json.loads(json.dumps(value))


def _new_db(security):
    """One database: live documents, every document's history, sequence.

    ``history[doc_id]``: ``seq`` of its latest change, winning ``rev``,
    ``deleted``, and ``revs``: every revision the database has seen.
    """
    return {'security': _copy(security), 'docs': {}, 'history': {},
            'seq': 0, 'tokens': {}, 'token_seqs': {}}


def _generation(rev):
    return int(rev.split('-', 1)[0])


def shard_map(db_name, nodes, ranges=Q2_RANGES, created=None):
    """The ``_dbs`` document of a database with every range on ``nodes``.

    As docs.couchdb.org shows it: ``shard_suffix`` is ``.<created>`` as
    ASCII codes, one ``add`` changelog entry per range and node.
    """
    if isinstance(nodes, str):
        nodes = [nodes]
    created = int(time.time()) if created is None else created
    return {'_id': db_name,
            'shard_suffix': [ord(c) for c in '.%d' % created],
            'changelog': [['add', r, node] for node in nodes
                          for r in ranges],
            'by_node': {node: list(ranges) for node in nodes},
            'by_range': {r: list(nodes) for r in ranges},
            'props': {}}


def _new_rev(old_rev=None):
    generation = _generation(old_rev) + 1 if old_rev else 1
    return '%d-%s' % (generation, uuid.uuid4().hex)


def copy_data(source, target):
    """Give ``target`` the data directory of ``source`` (not its config)."""
    with source.lock:
        dbs = _copy(source.dbs)
        local_dbs = _copy(source.local_dbs)
    with target.lock:
        target.dbs = dbs
        target.local_dbs = local_dbs


class HTTPError(Exception):
    def __init__(self, status, error, reason=''):
        super().__init__(status, error, reason)
        self.status = status
        self.body = {'error': error, 'reason': reason}


def free_port():
    """A TCP port on 127.0.0.1 nothing listens on (for tests)."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def hash_password(password, salt=None, iterations=_ITERATIONS):
    salt = salt or secrets.token_hex(16)
    key = hashlib.pbkdf2_hmac('sha256', password.encode(), salt.encode(),
                              iterations).hex()
    return key, salt, iterations


def _admin_hash(password):
    return '-pbkdf2-%s,%s,%s' % hash_password(password)


def _check_admin_hash(stored, password):
    key, salt, iterations = stored[len('-pbkdf2-'):].split(',')
    return hash_password(password, salt, int(iterations))[0] == key


class FakeCouchDB:
    """One fake CouchDB node; ``start()``/``stop()`` like a real process."""

    def __init__(self, version='3', node=DEFAULT_NODE):
        self.version = version
        self.port = 0
        self.node = node
        self.config = {'admins': {}, 'couchdb': {'uuid': uuid.uuid4().hex}}
        self.dbs = {}
        # Node-local databases: name -> {doc_id: document with _rev}.
        self.local_dbs = {name: {} for name in NODE_LOCAL_DBS}
        # doc_id of a _replicator document -> (state, error, error_count)
        self.job_states = {}
        self.fail_status = None
        self.restarts = 0
        # (method, raw path with query, Authorization header or None)
        self.requests_seen = []
        self.lock = threading.RLock()
        self._server = None
        self._thread = None
        self._connections = set()

    # -- process-like control ---------------------------------------------

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    @property
    def running(self):
        return self._server is not None

    def start(self):
        if self.running:
            return
        server = http.server.ThreadingHTTPServer(('127.0.0.1', self.port),
                                                 _handler_for(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self):
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self.lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(5)

    def load_ini_admins(self, config_dir):
        """Read <config_dir>/local.d/*.ini as CouchDB at start.

        Only [admins] and [couchdb] uuid are read; later files win.
        """
        local_d = os.path.join(config_dir, 'local.d')
        if not os.path.isdir(local_d):
            return
        for name in sorted(os.listdir(local_d)):
            if not name.endswith('.ini'):
                continue
            parser = configparser.ConfigParser(interpolation=None)
            parser.read(os.path.join(local_d, name))
            if parser.has_section('admins'):
                for user, value in parser.items('admins'):
                    self.set_admin(user, value)
            if parser.has_option('couchdb', 'uuid'):
                with self.lock:
                    self.config['couchdb']['uuid'] = parser.get('couchdb',
                                                                'uuid')

    # -- state helpers ----------------------------------------------------

    def set_admin(self, name, password):
        with self.lock:
            self.config['admins'][name] = (
                password if password.startswith('-pbkdf2-')
                else _admin_hash(password))

    def user_doc(self, name):
        return self.dbs['_users']['docs'].get('org.couchdb.user:' + name)

    def set_shard_map(self, doc):
        """Store a ``_dbs`` document (a new revision); return its _rev."""
        with self.lock:
            current = self.local_dbs['_dbs'].get(doc['_id'])
            rev = _new_rev(current and current['_rev'])
            stored = _copy(doc)
            stored['_rev'] = rev
            self.local_dbs['_dbs'][doc['_id']] = stored
            return rev

    def set_job_state(self, doc_id, state, error=None):
        """What _scheduler/docs says of the _replicator document doc_id."""
        if state not in JOB_STATES:
            raise ValueError('unknown replication job state %r' % state)
        with self.lock:
            _old, _error, count = self.job_states.get(doc_id,
                                                      (None, None, 0))
            count = count + 1 if state in _ERROR_STATES else 0
            self.job_states[doc_id] = (state, error, count)

    # -- update sequences and documents ----------------------------------

    def seq_token(self, db_name, number):
        """The sequence ``number`` of ``db_name`` as 3.x shows it."""
        db = self.dbs[db_name]
        token = db['tokens'].get(number)
        if token is None:
            opaque = 'g1AAAA' + secrets.token_urlsafe(30)
            token = '%d-%s' % (number, opaque)
            db['tokens'][number] = token
            db['token_seqs'][opaque] = number
        return token

    def parse_since(self, db_name, since):
        """The sequence number a ``since`` parameter stands for."""
        db = self.dbs[db_name]
        if since in (None, '0', 0):
            return 0
        if since == 'now':
            return db['seq']
        # Like fabric_view_changes: the leading "N-" is ignored, the opaque
        # part must decode to positions of this database's shards.
        opaque = since.split('-', 1)[1] if re.match(r'^\d+-', since) \
            else since
        if opaque not in db['token_seqs']:
            raise HTTPError(400, 'bad_request', "Malformed sequence "
                                                "supplied in 'since' "
                                                "parameter.")
        return db['token_seqs'][opaque]

    def bump_seq(self, db_name):
        db = self.dbs[db_name]
        db['seq'] += 1
        return db['seq']

    def write_doc(self, db_name, doc_id, body, deleted=False):
        """An interactive edit: a new revision after the current one."""
        db = self.dbs[db_name]
        info = db['history'].get(doc_id)
        generation = _generation(info['rev']) + 1 if info else 1
        rev = '%d-%s' % (generation, uuid.uuid4().hex)
        self._store(db_name, doc_id, rev, body, deleted,
                    ancestors=info['revs'] if info else [])
        return rev

    def _store(self, db_name, doc_id, rev, body, deleted, ancestors):
        db = self.dbs[db_name]
        info = db['history'].setdefault(doc_id, {'revs': []})
        known = info['revs']
        for seen in list(ancestors) + [rev]:
            if seen not in known:
                known.append(seen)
        current = (None if not info.get('rev') else
                   (not info['deleted'], _generation(info['rev']),
                    info['rev']))
        incoming = (not deleted, _generation(rev), rev)
        if current is None or info['rev'] in ancestors or incoming > current:
            info.update(rev=rev, deleted=deleted)
            if deleted:
                db['docs'].pop(doc_id, None)
            else:
                db['docs'][doc_id] = dict(_copy(body), _id=doc_id, _rev=rev)
        info['seq'] = self.bump_seq(db_name)

    # -- authentication ---------------------------------------------------

    def authenticate(self, header):
        """userCtx {name, roles} of an Authorization header, or 401."""
        if not header:
            return {'name': None, 'roles': []}
        try:
            scheme, token = header.split(' ', 1)
            name, _, password = base64.b64decode(token).decode().partition(
                ':')
        except ValueError:
            scheme = None
        if scheme != 'Basic':
            raise HTTPError(401, 'unauthorized', 'Bad Authorization header')
        stored = self.config['admins'].get(name)
        if stored and _check_admin_hash(stored, password):
            return {'name': name, 'roles': ['_admin']}
        doc = self.user_doc(name) if '_users' in self.dbs else None
        if doc and 'derived_key' in doc and hash_password(
                password, doc['salt'], doc['iterations'])[0] == \
                doc['derived_key']:
            return {'name': name, 'roles': list(doc.get('roles', []))}
        raise HTTPError(401, 'unauthorized', 'Name or password is incorrect.')


def _is_admin(ctx):
    return '_admin' in ctx['roles']


def _require_admin(ctx):
    # CouchDB answers 401 to anyone but a server admin, logged in or not
    # (seen on 3.5: /_all_dbs, /_scheduler/docs, PUT /{db} as a user).
    if not _is_admin(ctx):
        raise HTTPError(401, 'unauthorized', 'You are not a server admin.')


def _in_section(ctx, section):
    section = section or {}
    return (ctx['name'] in section.get('names', [])
            or bool(set(ctx['roles']) & set(section.get('roles', []))))


def _check_member(ctx, security):
    if _is_admin(ctx) or _in_section(ctx, security.get('admins')):
        return
    members = security.get('members') or {}
    if not members.get('names') and not members.get('roles'):
        return
    if _in_section(ctx, members):
        return
    if ctx['name'] is None:
        raise HTTPError(401, 'unauthorized',
                        'You are not authorized to access this db.')
    raise HTTPError(403, 'forbidden',
                    'You are not allowed to access this db.')


def _check_db_admin(ctx, security):
    if _is_admin(ctx) or _in_section(ctx, security.get('admins')):
        return
    raise HTTPError(403, 'forbidden', 'You are not a db or server admin.')


def _doc_id(rest):
    """The document a path below /{db} names, or None for an endpoint."""
    if len(rest) == 2 and rest[0] == '_design':
        return '_design/' + rest[1]
    if len(rest) == 1 and (rest[0].startswith('_design/')
                           or not rest[0].startswith('_')):
        return rest[0]
    return None


class _Routes:
    """Request dispatch: one method per resource."""

    def __init__(self, fake, method, segments, query, body, ctx):
        self.fake = fake
        self.method = method
        self.segments = segments
        self.query = query
        self.body = body
        self.ctx = ctx

    def dispatch(self):
        seg = self.segments
        if self.fake.version == '1':
            return self.dispatch_1_6(seg)
        if not seg:
            return self.root()
        head = seg[0]
        if head == '_up':
            return 200, {'status': 'ok', 'seeds': {}}
        if head == '_session':
            return 200, {'ok': True, 'userCtx': self.ctx,
                         'info': {'authenticated': 'default'}}
        if head == '_all_dbs':
            _require_admin(self.ctx)
            return 200, sorted(self.fake.dbs)
        if seg[:2] == ['_node', '_local']:
            return self.node(seg[2:])
        if head == '_scheduler':
            return self.scheduler(seg[1:])
        if head.startswith('_') and head not in _SYSTEM_DBS:
            raise HTTPError(400, 'illegal_database_name',
                            'Name: %r' % head)
        return self.database(head, seg[1:])

    def dispatch_1_6(self, seg):
        """CouchDB 1.6: only ``/``, ``/_up`` and ``/_restart``."""
        if not seg:
            return self.root()
        if seg == ['_up']:
            # No such endpoint: 1.6 takes it for a database name.
            raise HTTPError(400, 'illegal_database_name',
                            "Name: '_up'. Only lowercase characters...")
        if seg == ['_restart'] and self.method == 'POST':
            _require_admin(self.ctx)
            self.fake.restarts += 1
            return 202, {'ok': True}
        raise HTTPError(404, 'not_found', 'not modelled by the fake')

    def root(self):
        version = '3.5.0' if self.fake.version == '3' else '1.6.1'
        return 200, {'couchdb': 'Welcome', 'version': version,
                     'uuid': self.fake.config['couchdb']['uuid'],
                     'vendor': {'name': 'The Apache Software Foundation'}}

    def node(self, rest):
        if rest[:1] == ['_config']:
            return self.config(rest[1:])
        if not rest and self.method == 'GET':
            _require_admin(self.ctx)
            return 200, {'name': self.fake.node}
        if rest and rest[0] in NODE_LOCAL_DBS:
            _require_admin(self.ctx)
            return self.node_local_db(rest[0], rest[1:])
        raise HTTPError(404, 'not_found', 'missing')

    def node_local_db(self, name, rest):
        """/_node/_local/_dbs (admins only): its info and _all_docs."""
        docs = self.fake.local_dbs[name]
        if not rest:
            if self.method != 'GET':
                raise HTTPError(405, 'method_not_allowed', self.method)
            return 200, {'db_name': name, 'doc_count': len(docs)}
        if rest == ['_all_docs']:
            return self.local_all_docs(docs)
        raise HTTPError(404, 'not_found', 'missing')

    def local_all_docs(self, docs):
        if self.method != 'GET':
            raise HTTPError(405, 'method_not_allowed', self.method)
        start = json.loads(self.query.get('startkey', 'null'))
        end = json.loads(self.query.get('endkey', 'null'))
        skip = int(self.query.get('skip', '0'))
        limit = self.query.get('limit')
        include = self.query.get('include_docs') == 'true'
        ids = [i for i in sorted(docs)
               if (start is None or i >= start)
               and (end is None or i <= end)]
        offset = len(docs) - len(ids) + skip
        ids = ids[skip:]
        if limit is not None:
            ids = ids[:int(limit)]
        rows = []
        for doc_id in ids:
            row = {'id': doc_id, 'key': doc_id,
                   'value': {'rev': docs[doc_id]['_rev']}}
            if include:
                row['doc'] = _copy(docs[doc_id])
            rows.append(row)
        return 200, {'total_rows': len(docs), 'offset': offset,
                     'rows': rows}

    def config(self, rest):
        _require_admin(self.ctx)
        config = self.fake.config
        if len(rest) == 0 and self.method == 'GET':
            return 200, config
        if len(rest) == 1 and self.method == 'GET':
            return 200, dict(config.get(rest[0], {}))
        if len(rest) != 2:
            raise HTTPError(405, 'method_not_allowed', 'Only GET allowed')
        section, key = rest
        values = config.setdefault(section, {})
        old = values.get(key)
        if self.method == 'GET':
            if old is None:
                raise HTTPError(404, 'not_found', 'unknown_config_value')
            return 200, old
        if self.method == 'PUT':
            if not isinstance(self.body, str):
                raise HTTPError(400, 'bad_request', 'Invalid JSON')
            values[key] = (_admin_hash(self.body) if section == 'admins'
                           else self.body)
            return 200, old or ''
        if self.method == 'DELETE':
            if old is None:
                raise HTTPError(404, 'not_found', 'unknown_config_value')
            del values[key]
            return 200, old
        raise HTTPError(405, 'method_not_allowed', self.method)

    def scheduler(self, rest):
        """GET /_scheduler/docs[/{replicator db}[/{docid}]] (3.x)."""
        _require_admin(self.ctx)
        if self.method != 'GET':
            raise HTTPError(405, 'method_not_allowed', self.method)
        if rest[:1] != ['docs'] or len(rest) > 3:
            raise HTTPError(404, 'not_found', 'missing')
        replicator = rest[1] if len(rest) > 1 else '_replicator'
        if replicator not in self.fake.dbs:
            raise HTTPError(404, 'not_found', 'Database does not exist.')
        docs = self.fake.dbs[replicator]['docs']
        ids = [i for i in sorted(docs) if not i.startswith('_design/')]
        if len(rest) == 3:
            if rest[2] not in ids:
                raise HTTPError(404, 'not_found', 'unknown')
            return 200, self._job(replicator, docs[rest[2]])
        jobs = [self._job(replicator, docs[i]) for i in ids]
        return 200, {'docs': jobs, 'offset': 0, 'total_rows': len(jobs)}

    def _job(self, replicator, doc):
        state, error, count = self.fake.job_states.get(
            doc['_id'], ('running', None, 0))
        if state in _ERROR_STATES:
            info = {'error': error or 'unknown error'}
        else:
            info = {'docs_read': 0, 'docs_written': 0,
                    'doc_write_failures': 0, 'changes_pending': 0}
        return {'database': replicator, 'doc_id': doc['_id'],
                'node': self.fake.node, 'state': state, 'info': info,
                'error_count': count}

    def database(self, name, rest):
        dbs = self.fake.dbs
        if not rest:
            return self.database_itself(name)
        if name not in dbs:
            raise HTTPError(404, 'not_found', 'Database does not exist.')
        db = dbs[name]
        if rest == ['_security']:
            return self.security(name, db)
        doc_id = _doc_id(rest)
        if (name in ('_users', '_replicator')
                and rest in (['_all_docs'], ['_changes'])):
            _require_admin(self.ctx)     # before membership, as on 3.5
        # Membership first, as on 3.5: _users is admin-only there, so a
        # user cannot even read its own document.
        _check_member(self.ctx, db['security'])
        if rest == ['_all_docs']:
            return self.all_docs(db)
        if rest == ['_changes']:
            return self.changes(name, db)
        if rest == ['_revs_diff'] and self.method == 'POST':
            return self.revs_diff(db)
        if doc_id is not None:
            return self.document(name, db, doc_id)
        raise HTTPError(404, 'not_found', 'missing')

    def database_itself(self, name):
        dbs = self.fake.dbs
        if self.method in ('GET', 'HEAD'):
            if name not in dbs:
                raise HTTPError(404, 'not_found', 'Database does not exist.')
            db = dbs[name]
            _check_member(self.ctx, db['security'])
            deleted = sum(1 for info in db['history'].values()
                          if info['deleted'])
            return 200, {'db_name': name,
                         'doc_count': len(db['docs']),
                         'doc_del_count': deleted,
                         'update_seq': self.fake.seq_token(name, db['seq']),
                         'purge_seq': self.fake.seq_token(name, 0),
                         'compact_running': False}
        _require_admin(self.ctx)
        if self.method == 'PUT':
            if name not in _SYSTEM_DBS and not _DB_NAME.match(name):
                raise HTTPError(400, 'illegal_database_name',
                                'Name: %r' % name)
            if name in dbs:
                raise HTTPError(412, 'file_exists',
                                'The database could not be created, the '
                                'file already exists.')
            dbs[name] = _new_db(_ADMIN_ONLY)
            self.fake.set_shard_map(shard_map(name, self.fake.node))
            return 201, {'ok': True}
        if self.method == 'DELETE':
            if name not in dbs:
                raise HTTPError(404, 'not_found', 'Database does not exist.')
            del dbs[name]
            self.fake.local_dbs['_dbs'].pop(name, None)
            if name == '_replicator':
                self.fake.job_states.clear()
            return 200, {'ok': True}
        raise HTTPError(405, 'method_not_allowed', self.method)

    def security(self, name, db):
        if self.method == 'GET':
            _check_member(self.ctx, db['security'])
            return 200, db['security']
        if self.method == 'PUT':
            # As CouchDB checks: membership first (401 for nobody, 403 for
            # a user), then admin rights; 3.5 answers a member who is no
            # admin with 500 no_majority (each shard said forbidden).
            _check_member(self.ctx, db['security'])
            if not (_is_admin(self.ctx)
                    or _in_section(self.ctx, db['security'].get('admins'))):
                raise HTTPError(500, 'error', 'no_majority')
            _check_db_admin(self.ctx, db['security'])
            if not isinstance(self.body, dict):
                raise HTTPError(400, 'bad_request', 'Invalid JSON')
            db['security'] = self.body
            # couch_bt_engine:set_security (and 1.x's updater) count the
            # change in update_seq; it has no row in _changes.
            self.fake.bump_seq(name)
            return 200, {'ok': True}
        raise HTTPError(405, 'method_not_allowed', self.method)

    def all_docs(self, db):
        start = json.loads(self.query.get('startkey', 'null'))
        end = json.loads(self.query.get('endkey', 'null'))
        include = self.query.get('include_docs') == 'true'
        rows = []
        for doc_id in sorted(db['docs']):
            if (start is not None and doc_id < start) or (
                    end is not None and doc_id > end):
                continue
            doc = db['docs'][doc_id]
            row = {'id': doc_id, 'key': doc_id, 'value': {'rev': doc['_rev']}}
            if include:
                row['doc'] = doc
            rows.append(row)
        return 200, {'total_rows': len(db['docs']), 'offset': 0,
                     'rows': rows}

    def changes(self, name, db):
        """GET /{db}/_changes: normal feed, since and limit."""
        if self.method != 'GET':
            raise HTTPError(405, 'method_not_allowed', self.method)
        since = self.fake.parse_since(name, self.query.get('since'))
        try:
            limit = int(self.query.get('limit', '0')) or None
        except ValueError as exc:
            raise HTTPError(400, 'query_parse_error',
                            'Invalid value for integer: limit') from exc
        pending = sorted((info['seq'], doc_id)
                         for doc_id, info in db['history'].items()
                         if info['seq'] > since)
        shown = pending[:limit] if limit else pending
        results = []
        for seq, doc_id in shown:
            info = db['history'][doc_id]
            row = {'seq': self.fake.seq_token(name, seq), 'id': doc_id,
                   'changes': [{'rev': info['rev']}]}
            if info['deleted']:
                row['deleted'] = True
            results.append(row)
        last = shown[-1][0] if shown else since
        body = {'results': results,
                'last_seq': self.fake.seq_token(name, last)}
        body['pending'] = len(pending) - len(shown)
        return 200, body

    def revs_diff(self, db):
        """POST /{db}/_revs_diff: the revisions this database lacks."""
        if not isinstance(self.body, dict) or not all(
                isinstance(v, list) for v in self.body.values()):
            raise HTTPError(400, 'bad_request',
                            'Body must be {docid: [rev, ...]}')
        missing = {}
        for doc_id, revs in self.body.items():
            known = (db['history'].get(doc_id) or {}).get('revs', [])
            lacking = [rev for rev in revs if rev not in known]
            if lacking:
                missing[doc_id] = {'missing': lacking}
        return 200, missing

    def document(self, db_name, db, doc_id):
        current = db['docs'].get(doc_id)
        if self.method in ('GET', 'HEAD'):
            if current is None:
                info = db['history'].get(doc_id)
                raise HTTPError(404, 'not_found', 'deleted' if info
                                else 'missing')
            return 200, current
        if doc_id.startswith('_design/'):
            _check_db_admin(self.ctx, db['security'])
        if self.method == 'PUT':
            return self._put_document(db_name, db, doc_id, current)
        if self.method == 'DELETE':
            if current is None:
                raise HTTPError(404, 'not_found', 'missing')
            if self.query.get('rev') != current['_rev']:
                raise HTTPError(409, 'conflict', 'Document update conflict.')
            rev = self.fake.write_doc(db_name, doc_id, {}, deleted=True)
            if db_name == '_replicator':
                self.fake.job_states.pop(doc_id, None)
            return 200, {'ok': True, 'id': doc_id, 'rev': rev}
        raise HTTPError(405, 'method_not_allowed', self.method)

    def _put_document(self, db_name, db, doc_id, current):
        doc = self.body
        if not isinstance(doc, dict):
            raise HTTPError(400, 'bad_request', 'Document must be a JSON '
                                                'object')
        rev = doc.get('_rev') or self.query.get('rev')
        if (current is None and rev) or (
                current is not None and rev != current['_rev']):
            raise HTTPError(409, 'conflict', 'Document update conflict.')
        if db_name == '_users':
            doc = _validated_user_doc(doc_id, doc, current)
        body = {k: v for k, v in doc.items() if k not in ('_id', '_rev')}
        rev = self.fake.write_doc(db_name, doc_id, body)
        if db_name == '_replicator':
            self.fake.job_states.pop(doc_id, None)
        return 201, {'ok': True, 'id': doc_id, 'rev': rev}


def _validated_user_doc(doc_id, doc, old):
    """What CouchDB's _users validation (for server admins, the only
    writers of 3.x's _users) and password hashing do."""
    name = doc.get('name')
    if doc_id != 'org.couchdb.user:%s' % name:
        raise HTTPError(403, 'forbidden',
                        'Doc ID must be of the form org.couchdb.user:name')
    if doc.get('type') != 'user' or not isinstance(doc.get('roles'), list):
        raise HTTPError(403, 'forbidden', 'doc.type must be user and '
                                          'doc.roles an array')
    if any(not isinstance(r, str) or r.startswith('_')
           for r in doc['roles']):
        raise HTTPError(403, 'forbidden', 'No system roles (starting with '
                                          'underscore) in users db.')
    if old is not None and old.get('name') != name:
        raise HTTPError(403, 'forbidden', 'Usernames can not be changed.')
    doc = dict(doc)
    password = doc.pop('password', None)
    if password is not None:
        key, salt, iterations = hash_password(password)
        doc.update(derived_key=key, salt=salt, iterations=iterations,
                   password_scheme='pbkdf2', pbkdf2_prf='sha256')
    return doc


def replicate(source, target, db_name, doc_ids=None, skip=()):
    """Copy documents of ``db_name`` with their revisions, like a job.

    ``doc_ids``: only these (default: every document, deleted ones too);
    ``skip``: not these.  The target database must exist.
    """
    with source.lock:
        history = _copy(source.dbs[db_name]['history'])
        docs = _copy(source.dbs[db_name]['docs'])
    wanted = sorted(set(history if doc_ids is None else doc_ids)
                    - set(skip))
    with target.lock:
        for doc_id in wanted:
            info = history[doc_id]
            known = (target.dbs[db_name]['history'].get(doc_id) or {}).get(
                'revs', [])
            if info['rev'] in known:
                continue
            body = {k: v for k, v in docs.get(doc_id, {}).items()
                    if k not in ('_id', '_rev')}
            target._store(db_name, doc_id, info['rev'], body,
                          info['deleted'], ancestors=info['revs'])
    return wanted


def _handler_for(fake):
    class Handler(_Handler):
        pass

    Handler.fake = fake
    return Handler


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    fake = None

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.fake.lock:
            self.fake._connections.add(self.connection)

    def finish(self):
        with self.fake.lock:
            self.fake._connections.discard(self.connection)
        super().finish()

    def do_GET(self):
        self._handle()

    do_PUT = do_DELETE = do_POST = do_HEAD = do_GET

    def _read_body(self):
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise HTTPError(400, 'bad_request', 'invalid UTF-8 JSON') from exc

    def _handle(self):
        url = parse.urlsplit(self.path)
        segments = [parse.unquote(s) for s in url.path.split('/') if s]
        query = dict(parse.parse_qsl(url.query))
        self.fake.requests_seen.append(
            (self.command, self.path, self.headers.get('Authorization')))
        try:
            body = self._read_body()
            with self.fake.lock:
                if self.fake.fail_status:
                    raise HTTPError(self.fake.fail_status, 'unknown_error',
                                    'simulated failure')
                ctx = self.fake.authenticate(
                    self.headers.get('Authorization'))
                status, payload = _Routes(self.fake, self.command, segments,
                                          query, body, ctx).dispatch()
        except HTTPError as exc:
            status, payload = exc.status, exc.body
        self._reply(status, payload)

    def _reply(self, status, payload):
        data = json.dumps(payload).encode() + b'\n'
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)


class FakeServiceManager:
    """A service manager that starts and stops a FakeCouchDB.

    On start it reads ``[admins]`` from ``<config_dir>/local.d`` first, as
    CouchDB does when it boots.
    """

    def __init__(self, server, config_dir=None):
        self.server = server
        self.config_dir = config_dir
        self.enabled = None
        self.starts = 0
        self.stops = 0

    def start(self):
        self.starts += 1
        if self.config_dir:
            self.server.load_ini_admins(self.config_dir)
        self.server.start()

    def stop(self):
        self.stops += 1
        self.server.stop()

    def enable_on_boot(self):
        self.enabled = True

    def disable_on_boot(self):
        self.enabled = False
