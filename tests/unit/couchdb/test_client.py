"""CouchDBClient without a CouchDB: paths, refused input, the transport.

Everything a real server can show runs on the real CouchDB 3.5 and on
pouchdb-server in tests/functional/couchdb/test_client_on_servers.py.
Here: what needs no server at all, and the fake (fake_couchdb3.py) only
for answers a real server does not give on demand: a server error from
its health endpoint, CouchDB 1.6's ``/_restart`` (pouchdb-server has
none).
"""

import socket
import threading

import pytest
import requests

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import client as couch

try:
    from . import fake_couchdb3 as fake
except ImportError:
    import fake_couchdb3 as fake

ADMIN = ('os_admin', 's3cret-Admin')


def _server(version):
    server = fake.FakeCouchDB(version)
    server.set_admin(*ADMIN)
    server.start()
    return server


def _client(server, **kwargs):
    kwargs.setdefault('timeout', 5)
    return couch.CouchDBClient(server.url, *ADMIN, **kwargs)


def _nowhere():
    """A URL nothing listens on."""
    return 'http://127.0.0.1:%d' % fake.free_port()


# -- paths and parameters -------------------------------------------------

@pytest.mark.parametrize('segments, path', [
    (['a/b'], '/a%2Fb'),
    (['_users', 'org.couchdb.user:x'], '/_users/org.couchdb.user%3Ax'),
    (['a$(id)', '_security'], '/a%24%28id%29/_security'),
    (['a b', 'c?d#e'], '/a%20b/c%3Fd%23e'),
    ('/_all_dbs', '/_all_dbs'),
])
def test_build_path_quotes_every_segment(segments, path):
    assert couch.build_path(segments) == path


def test_build_path_refuses_a_relative_constant_path():
    with pytest.raises(ValueError):
        couch.build_path('_all_dbs')


def test_query_params_json_encodes_keys_only():
    params = couch.query_params(startkey='org.couchdb.user:',
                                endkey=['a', 1], include_docs=True,
                                limit=10, stale=None)
    assert params == {'startkey': '"org.couchdb.user:"',
                      'endkey': '["a", 1]', 'include_docs': 'true',
                      'limit': '10'}


# -- refused before any request -------------------------------------------

def test_credentials_in_the_url_are_refused():
    with pytest.raises(ValueError):
        couch.CouchDBClient('http://os_admin:pw@127.0.0.1:5984')


def test_explicit_api_version_is_not_probed():
    # Nothing listens: a probe would fail.
    client = couch.CouchDBClient(_nowhere(), *ADMIN, timeout=2,
                                 api_version='1')
    assert client.api_version == '1'
    with pytest.raises(ValueError):
        couch.CouchDBClient(_nowhere(), api_version='2')


def test_config_values_must_be_strings():
    client = couch.CouchDBClient(_nowhere(), timeout=2, api_version='3')
    with pytest.raises(TypeError):
        client.config_set('log', 'level', 3)


def test_config_needs_a_section_for_a_key():
    client = couch.CouchDBClient(_nowhere(), timeout=2, api_version='3')
    with pytest.raises(ValueError):
        client.config_get(key='level')


# -- the transport --------------------------------------------------------

def test_refused_connection_is_unavailable():
    client = couch.CouchDBClient(_nowhere(), *ADMIN, timeout=2)
    with pytest.raises(exception.CouchDBUnavailable) as err:
        client.request('GET', '/_all_dbs')
    assert (err.value.method, err.value.path) == ('GET', '/_all_dbs')
    assert client.health() is couch.Health.DOWN


def test_timeout_is_unavailable():
    # The kernel takes the connection and nobody ever answers.  Closing
    # the listener later resets it: a client that does not time out by
    # itself sees that reset instead of a timeout.
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    hang_up = threading.Timer(10, listener.close)
    hang_up.start()
    try:
        client = couch.CouchDBClient(
            'http://127.0.0.1:%d' % listener.getsockname()[1], timeout=0.3,
            api_version='3')
        with pytest.raises(exception.CouchDBUnavailable) as err:
            client.server_info()
        assert isinstance(err.value.__cause__, requests.ReadTimeout)
        assert err.value.reason.startswith('ReadTimeout: ')
    finally:
        hang_up.cancel()
        listener.close()


# -- answers a real server does not give on demand ------------------------

@pytest.mark.parametrize('version', ['3', '1'])
def test_server_errors_are_not_ready(version):
    server = _server(version)
    try:
        client = _client(server)
        assert client.health() is couch.Health.UP
        server.fail_status = 500 if version == '3' else 503
        assert client.health() is couch.Health.NOT_READY
    finally:
        server.stop()


def test_restart_server_uses_the_1x_endpoint():
    server = _server('1')
    try:
        client = _client(server)
        assert client.restart_server() == {'ok': True}
        assert server.restarts == 1
        assert client.server_info()['couchdb'] == 'Welcome'
    finally:
        server.stop()


# -- polling loop ---------------------------------------------------------

class _Clock:
    """The ``time`` of the client module: a clock that moves only when
    the code sleeps."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_polling_loop_is_bounded(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(couch, 'time', clock)
    attempts, times = [], []
    for attempt in couch.polling_loop(0.25, 0.1):
        attempts.append(attempt)
        times.append(clock.now)
    # The first attempt at once, one every interval, the last at the
    # deadline.
    assert attempts == [0, 1, 2, 3]
    assert times == pytest.approx([0, 0.1, 0.2, 0.25])


def test_polling_loop_tries_at_least_once():
    assert list(couch.polling_loop(0, 1)) == [0]
