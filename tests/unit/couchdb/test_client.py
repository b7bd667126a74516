"""CouchDBClient against a fake CouchDB speaking real HTTP (3.x and 1.x)."""

import base64
import logging
import socket
import threading
import time

import pytest

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import client as couch

try:
    from . import fake_couchdb3 as fake
except ImportError:
    import fake_couchdb3 as fake

ADMIN = ('os_admin', 's3cret-Admin')


def _server(version, **kwargs):
    server = fake.FakeCouchDB(version, **kwargs)
    server.set_admin(*ADMIN)
    server.start()
    return server


@pytest.fixture
def couch3():
    server = _server('3')
    yield server
    server.stop()


@pytest.fixture
def couch1():
    server = _server('1')
    yield server
    server.stop()


def _client(server, credentials=ADMIN, **kwargs):
    kwargs.setdefault('timeout', 5)
    return couch.CouchDBClient(server.url, *credentials, **kwargs)


def _free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


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


def test_segments_reach_couchdb_under_their_exact_names(couch3):
    client = _client(couch3)
    client.request('PUT', ['a/b'])
    client.request('PUT', ['a$(id)'])
    assert {'a/b', 'a$(id)'} <= set(client.all_dbs())
    assert ('PUT', '/a%2Fb') in [(m, p) for m, p, _a in couch3.requests_seen]


def test_all_docs_selects_a_key_range(couch3):
    client = _client(couch3)
    client.request('PUT', ['_users'])
    for name in ('ann', 'bob'):
        client.request('PUT', ['_users', 'org.couchdb.user:' + name],
                       json={'name': name, 'type': 'user', 'roles': [],
                             'password': 'pw'})
    client.request('PUT', ['_users', 'other'], json={
        'name': 'x', 'type': 'user', 'roles': []}, expected=403)
    rows = client.all_docs('_users', startkey='org.couchdb.user:',
                           endkey='org.couchdb.user:\ufff0')['rows']
    assert [row['id'] for row in rows] == ['org.couchdb.user:ann',
                                           'org.couchdb.user:bob']


# -- credentials ----------------------------------------------------------

def test_credentials_travel_only_in_the_authorization_header(couch3):
    client = _client(couch3)
    client.all_dbs()
    client.request('GET', '/', auth=False)
    (m1, p1, auth1), (m2, p2, auth2) = couch3.requests_seen[-2:]
    expected = 'Basic ' + base64.b64encode(
        ('%s:%s' % ADMIN).encode()).decode()
    assert (m1, p1, auth1) == ('GET', '/_all_dbs', expected)
    assert (m2, p2, auth2) == ('GET', '/', None)
    assert all(ADMIN[1] not in path for _m, path, _a in couch3.requests_seen)
    assert ADMIN[1] not in repr(client) and couch3.url in repr(client)


def test_credentials_in_the_url_are_refused():
    with pytest.raises(ValueError):
        couch.CouchDBClient('http://os_admin:pw@127.0.0.1:5984')


def test_no_credentials_in_log_lines_or_errors(couch3, caplog):
    caplog.set_level(logging.DEBUG)
    client = _client(couch3, credentials=('os_admin', 'wrong-Pass-123'))
    with pytest.raises(exception.CouchDBAuthError) as err:
        client.all_dbs()
    client.health()
    assert 'wrong-Pass-123' not in str(err.value)
    assert all('wrong-Pass-123' not in r.getMessage() for r in caplog.records)
    assert any('/_all_dbs' in r.getMessage() for r in caplog.records)


def test_with_credentials_acts_as_another_user(couch3):
    admin = _client(couch3)
    admin.request('PUT', ['_users'])
    admin.request('PUT', ['_users', 'org.couchdb.user:tenant'], json={
        'name': 'tenant', 'type': 'user', 'roles': [], 'password': 'pw1'})
    tenant = admin.with_credentials('tenant', 'pw1')
    assert tenant.session_info()['userCtx'] == {'name': 'tenant',
                                                'roles': []}
    assert tenant.api_version == '3'
    with pytest.raises(exception.CouchDBAuthError) as err:
        tenant.all_dbs()
    assert err.value.status == 401       # as CouchDB 3.5 answers a user
    assert admin.session_info()['userCtx']['roles'] == ['_admin']


# -- errors ---------------------------------------------------------------

def test_http_errors_become_typed_exceptions_with_context(couch3):
    client = _client(couch3)
    with pytest.raises(exception.CouchDBError) as err:
        client.request('GET', ['missing db'])
    assert type(err.value) is exception.CouchDBError
    assert (err.value.method, err.value.path, err.value.status,
            err.value.error) == ('GET', '/missing%20db', 404, 'not_found')
    assert 'HTTP 404' in str(err.value)

    anonymous = couch.CouchDBClient(couch3.url, timeout=5)
    with pytest.raises(exception.CouchDBAuthError) as err:
        anonymous.all_dbs()
    assert (err.value.status, err.value.error) == (401, 'unauthorized')


def test_stale_revision_is_a_conflict(couch3):
    client = _client(couch3)
    client.request('PUT', ['db'])
    rev = client.request('PUT', ['db', 'doc'], json={'v': 1})['rev']
    client.request('PUT', ['db', 'doc'], json={'v': 2, '_rev': rev})
    with pytest.raises(exception.CouchDBConflict) as err:
        client.request('PUT', ['db', 'doc'], json={'v': 3, '_rev': rev})
    assert (err.value.status, err.value.error) == (409, 'conflict')


def test_unexpected_status_raises_even_when_2xx(couch3):
    client = _client(couch3)
    with pytest.raises(exception.CouchDBError) as err:
        client.request('PUT', ['db'], expected=200)
    assert err.value.status == 201


def test_refused_connection_is_unavailable():
    client = couch.CouchDBClient('http://127.0.0.1:%d' % _free_port(),
                                 *ADMIN, timeout=2)
    with pytest.raises(exception.CouchDBUnavailable) as err:
        client.request('GET', '/_all_dbs')
    assert (err.value.method, err.value.path) == ('GET', '/_all_dbs')
    assert client.health() is couch.Health.DOWN


def test_timeout_is_unavailable():
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(1)
    try:
        client = couch.CouchDBClient(
            'http://127.0.0.1:%d' % listener.getsockname()[1], timeout=0.3,
            api_version='3')
        started = time.monotonic()
        with pytest.raises(exception.CouchDBUnavailable):
            client.server_info()
        assert time.monotonic() - started < 3
    finally:
        listener.close()


def test_get_or_none_and_exists(couch3):
    client = _client(couch3)
    assert client.get_or_none(['nodb']) is None
    assert client.exists(['nodb']) is False
    client.request('PUT', ['db'])
    assert client.exists(['db']) is True
    assert client.get_or_none(['db'])['db_name'] == 'db'
    with pytest.raises(exception.CouchDBAuthError):
        client.with_credentials('nobody', 'x').exists(['db'])


# -- API version and health -----------------------------------------------

def test_detects_3x_from_up(couch3):
    assert _client(couch3).api_version == '3'


@pytest.mark.parametrize('mode', ['true', 'nolb'])
def test_detects_3x_in_maintenance_and_reports_not_ready(couch3, mode):
    couch3.set_maintenance(mode)
    client = _client(couch3)
    assert client.api_version == '3'
    assert client.health() is couch.Health.NOT_READY
    couch3.set_maintenance(None)
    assert client.health() is couch.Health.UP


def test_detects_1x_from_root(couch1):
    client = _client(couch1)
    assert client.api_version == '1'
    assert client.health() is couch.Health.UP


def test_detection_works_with_credentials_couchdb_refuses(couch1):
    client = _client(couch1, credentials=('os_admin', 'stale'))
    assert client.api_version == '1'
    assert client.health() is couch.Health.UP


def test_explicit_api_version_is_not_probed(couch3):
    client = _client(couch3, api_version='1')
    assert client.api_version == '1'
    assert couch3.requests_seen == []
    with pytest.raises(ValueError):
        _client(couch3, api_version='2')


def test_redetects_after_the_server_was_unreachable():
    port = _free_port()
    old = _server('1', port=port)
    client = couch.CouchDBClient(old.url, *ADMIN, timeout=2)
    assert client.api_version == '1'
    old.stop()
    assert client.health() is couch.Health.DOWN
    new = _server('3', port=port)
    try:
        assert client.health() is couch.Health.UP
        assert client.api_version == '3'
    finally:
        new.stop()


def test_health_3x_other_answers_are_not_ready(couch3):
    client = _client(couch3)
    assert client.health() is couch.Health.UP
    couch3.fail_status = 500
    assert client.health() is couch.Health.NOT_READY
    couch3.fail_status = None
    couch3.stop()
    assert client.health() is couch.Health.DOWN


def test_health_1x_server_errors_are_not_ready(couch1):
    client = _client(couch1)
    assert client.health() is couch.Health.UP
    couch1.fail_status = 503
    assert client.health() is couch.Health.NOT_READY


def test_health_needs_no_valid_credentials(couch3):
    client = _client(couch3, credentials=('os_admin', 'stale'))
    assert client.health() is couch.Health.UP
    assert all(auth is None for _m, path, auth in couch3.requests_seen
               if path == '/_up')


# -- configuration and server ---------------------------------------------

@pytest.mark.parametrize('version, prefix', [
    ('3', '/_node/_local/_config'), ('1', '/_config')])
def test_config_round_trip(version, prefix):
    server = _server(version)
    try:
        client = _client(server)
        assert client.config_set('log', 'level', 'debug') == ''
        assert client.config_set('log', 'level', 'info') == 'debug'
        assert client.config_get('log', 'level') == 'info'
        assert client.config_get('log') == {'level': 'info'}
        assert 'log' in client.config_get()
        assert client.config_delete('log', 'level') == 'info'
        assert client.config_delete('log', 'level', missing_ok=True) is None
        with pytest.raises(exception.CouchDBError) as err:
            client.config_delete('log', 'level')
        assert err.value.status == 404
        paths = [p for _m, p, _a in server.requests_seen]
        assert prefix + '/log/level' in paths
    finally:
        server.stop()


def test_admins_are_stored_hashed(couch3):
    client = _client(couch3)
    client.config_set('admins', 'root', 'Root-Pass-1')
    stored = client.config_get('admins', 'root')
    assert stored.startswith('-pbkdf2-') and 'Root-Pass-1' not in stored
    root = client.with_credentials('root', 'Root-Pass-1')
    assert '_admin' in root.session_info()['userCtx']['roles']


def test_config_values_must_be_strings(couch3):
    with pytest.raises(TypeError):
        _client(couch3).config_set('log', 'level', 3)


def test_config_needs_a_section_for_a_key(couch3):
    with pytest.raises(ValueError):
        _client(couch3).config_get(key='level')


def test_bind_address_with_a_dropped_reply_is_read_back(couch3):
    couch3.drop_reply_to.add(
        ('PUT', '/_node/_local/_config/chttpd/bind_address'))
    client = _client(couch3)
    assert client.all_dbs() is not None       # a pooled connection exists
    assert client.config_set('chttpd', 'bind_address', '0.0.0.0') == \
        '127.0.0.1'
    assert couch3.config['chttpd']['bind_address'] == '0.0.0.0'
    assert client.config_get('chttpd', 'bind_address') == '0.0.0.0'


def test_bind_address_with_a_reply_returns_the_old_value(couch1):
    client = _client(couch1)
    assert client.config_set('httpd', 'bind_address', '0.0.0.0') == \
        '127.0.0.1'
    assert client.config_set('httpd', 'bind_address', '0.0.0.0') == \
        '0.0.0.0'


@pytest.mark.parametrize('version', ['3', '1'])
def test_restart_server_uses_the_versions_endpoint(version):
    server = _server(version)
    try:
        client = _client(server)
        assert client.restart_server() == {'ok': True}
        assert server.restarts == 1
        assert client.server_info()['couchdb'] == 'Welcome'
    finally:
        server.stop()


def test_all_dbs_is_admin_only_on_3x_but_open_on_1x(couch3, couch1):
    with pytest.raises(exception.CouchDBAuthError):
        couch.CouchDBClient(couch3.url, timeout=5).all_dbs()
    assert '_users' in couch.CouchDBClient(couch1.url, timeout=5).all_dbs()


def test_one_client_serves_threads(couch3):
    client = _client(couch3)
    errors = []

    def work(n):
        try:
            client.request('PUT', ['db%d' % n])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {'db%d' % n for n in range(8)} <= set(client.all_dbs())


# -- polling loop ---------------------------------------------------------

def test_polling_loop_is_bounded():
    started = time.monotonic()
    attempts = list(couch.polling_loop(0.3, 0.1))
    elapsed = time.monotonic() - started
    assert 3 <= len(attempts) <= 6
    assert 0.25 <= elapsed < 1.0


def test_polling_loop_tries_at_least_once():
    assert list(couch.polling_loop(0, 1)) == [0]
