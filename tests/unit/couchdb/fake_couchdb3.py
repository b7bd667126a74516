"""An HTTP-level fake of CouchDB, for answers a real server does not give
on demand (tests/unit/couchdb/test_client.py).

Everything a real server can show runs on the real CouchDB 3.5 and on
pouchdb-server in tests/functional/couchdb/; a cluster's shard maps, a
replica missing a revision and a ``failed`` replication job included.
Here:

- ``fail_status``: a server error on every request, as from the health
  endpoint of a node in trouble.
- CouchDB 1.6's ``POST /_restart``, which pouchdb-server lacks: with
  ``version='1'`` the fake answers ``GET /`` (version 1.6.1), ``/_up``
  (400, as 1.6 takes it for a database name) and ``/_restart`` (server
  admins only, counted in ``restarts``).
- ``shard_map()``: the ``_dbs`` document of a database, for the restore's
  helpers (tests/unit/couchdb/test_restore_3x_node.py).

As 3.x (``version='3'``, the default) it answers ``GET /`` and ``GET
/_up``; tests/functional/couchdb/test_fake_couchdb3_agrees.py holds those
bodies and ``shard_map()`` against a real CouchDB 3.5 node.  The 1.6
answers follow CouchDB 1.6's documentation: no CouchDB 1.6 runs here.
Anything else is a 404 that says the fake does not model it.  A
``ThreadingHTTPServer`` on 127.0.0.1 in a thread.
"""

import base64
import http.server
import json
import socket
import threading
import time
import uuid

# The shard ranges of a q=2 database.
Q2_RANGES = ('00000000-7fffffff', '80000000-ffffffff')
VERSIONS = {'3': '3.5.0', '1': '1.6.1'}


def shard_map(db_name, nodes, ranges=Q2_RANGES, created=None):
    """The ``_dbs`` document of a database with every range on ``nodes``.

    As CouchDB writes it: ``shard_suffix`` is ``.<created>`` as ASCII
    codes, one ``add`` changelog entry per node and range.
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


class FakeCouchDB:
    """One fake CouchDB server; ``start()``/``stop()`` like a process."""

    def __init__(self, version='3'):
        self.version = version
        self.port = 0
        self.uuid = uuid.uuid4().hex
        self.admins = {}
        self.fail_status = None
        self.restarts = 0
        self.lock = threading.Lock()
        self._server = None
        self._thread = None
        self._connections = set()

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    def set_admin(self, name, password):
        self.admins[name] = password

    def start(self):
        if self._server is not None:
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

    def is_admin(self, header):
        """Whether an Authorization header names a server admin; a wrong
        name or password is a 401, as CouchDB answers it."""
        if not header:
            return False
        try:
            scheme, token = header.split(' ', 1)
            name, _, password = base64.b64decode(token).decode().partition(
                ':')
        except ValueError:
            scheme = None
        if scheme != 'Basic' or self.admins.get(name) != password:
            raise HTTPError(401, 'unauthorized',
                            'Name or password is incorrect.')
        return True

    def answer(self, method, path, authorization):
        """(status, body) of a request."""
        if self.fail_status:
            raise HTTPError(self.fail_status, 'unknown_error',
                            'simulated failure')
        admin = self.is_admin(authorization)
        if path == '/' and method in ('GET', 'HEAD'):
            return 200, {'couchdb': 'Welcome',
                         'version': VERSIONS[self.version],
                         'uuid': self.uuid,
                         'vendor': {'name': 'The Apache Software '
                                            'Foundation'}}
        if path == '/_up' and self.version == '3':
            return 200, {'status': 'ok', 'seeds': {}}
        if path == '/_up':
            # No such endpoint: 1.6 takes it for a database name.
            raise HTTPError(400, 'illegal_database_name',
                            "Name: '_up'. Only lowercase characters...")
        if (path, method, self.version) == ('/_restart', 'POST', '1'):
            if not admin:
                raise HTTPError(401, 'unauthorized',
                                'You are not a server admin.')
            self.restarts += 1
            return 202, {'ok': True}
        raise HTTPError(404, 'not_found', 'not modelled by the fake')


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
        length = int(self.headers.get('Content-Length') or 0)
        if length:
            self.rfile.read(length)
        try:
            status, payload = self.fake.answer(
                self.command, self.path.split('?', 1)[0],
                self.headers.get('Authorization'))
        except HTTPError as exc:
            status, payload = exc.status, exc.body
        data = json.dumps(payload).encode() + b'\n'
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(data)

    do_PUT = do_DELETE = do_POST = do_HEAD = do_GET
