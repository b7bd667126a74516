"""CouchDBClient (client.py) on the real servers: paths, credentials,
typed errors, API version, health and configuration.

What CouchDB answers is what the real CouchDB 3.5 and pouchdb-server (the
1.6 API) answered; the differences between the two are CouchDB's own
(``/_all_dbs`` admin-only on 3.x, ``/_up`` only on 2.x/3.x).
"""

import logging
import threading

import pytest

from integration.services import couchdb3
from integration.services import fixtures
from integration.services import pouchdb
from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import system

only_couchdb3 = pytest.mark.servers('couchdb3')


def _client(agent, credentials=None, **kwargs):
    kwargs.setdefault('timeout', 15)
    return couch.CouchDBClient(
        agent.url, *(credentials or agent.app.credentials.load()), **kwargs)


def _put_user(client, name, password):
    client.request('PUT', [system.USERS_DB, 'org.couchdb.user:' + name],
                   json={'name': name, 'type': 'user', 'roles': [],
                         'password': password})


# -- paths and parameters -------------------------------------------------

def test_segments_reach_couchdb_under_their_exact_names(agent):
    client = _client(agent)
    client.request('PUT', ['a$(id)'])
    client.request('PUT', ['b+c-d_e'])
    assert {'a$(id)', 'b+c-d_e'} <= set(client.all_dbs())
    assert client.request('GET', ['a$(id)'])['db_name'] == 'a$(id)'


@only_couchdb3
def test_a_slash_in_a_name_is_quoted(agent):
    """pouchdb-server drops a '/' of a name ('a/b' becomes 'ab')."""
    client = _client(agent)
    client.request('PUT', ['a/b'])
    assert 'a/b' in client.all_dbs()
    assert client.request('GET', ['a/b'])['db_name'] == 'a/b'


def test_all_docs_selects_a_key_range(agent):
    client = _client(agent)
    client.request('PUT', ['people'])
    for doc_id in ('org.couchdb.user:ann', 'org.couchdb.user:bob', 'other',
                   'org.couchdb.user'):
        client.request('PUT', ['people', doc_id], json={'n': 1})
    rows = client.all_docs('people', startkey='org.couchdb.user:',
                           endkey='org.couchdb.user:\ufff0')['rows']
    assert [row['id'] for row in rows] == ['org.couchdb.user:ann',
                                           'org.couchdb.user:bob']


# -- credentials ----------------------------------------------------------

def test_credentials_travel_only_in_the_authorization_header(agent):
    user, password = agent.app.credentials.load()
    client = _client(agent)
    assert client.session_info()['userCtx']['name'] == user
    anonymous = client.request('GET', '/_session', auth=False)
    assert anonymous['userCtx']['name'] is None
    assert client.all_dbs()
    assert password not in agent.server_log()
    assert password not in repr(client) and agent.url in repr(client)


def test_no_credentials_in_log_lines_or_errors(agent, caplog):
    caplog.set_level(logging.DEBUG)
    client = _client(agent, credentials=('os_admin', 'wrong-Pass-123'))
    with pytest.raises(exception.CouchDBAuthError) as err:
        client.all_dbs()
    assert (err.value.status, err.value.error) == (401, 'unauthorized')
    assert client.health() is couch.Health.UP
    assert 'wrong-Pass-123' not in str(err.value)
    assert all('wrong-Pass-123' not in r.getMessage() for r in caplog.records)
    assert any('/_all_dbs' in r.getMessage() for r in caplog.records)


def test_with_credentials_acts_as_another_user(agent):
    admin = _client(agent)
    _put_user(admin, 'tenant', 'Tenant-pw-1')
    tenant = admin.with_credentials('tenant', 'Tenant-pw-1')
    assert tenant.session_info()['userCtx'] == {'name': 'tenant',
                                                'roles': []}
    assert tenant.api_version == agent.api_version
    if agent.api_version == '3':
        # CouchDB 3.5 answers 401, not 403, to a user who is no admin.
        with pytest.raises(exception.CouchDBAuthError) as err:
            tenant.all_dbs()
        assert (err.value.status, err.value.error) == (401, 'unauthorized')
    else:
        assert system.USERS_DB in tenant.all_dbs()     # open on 1.6
    assert '_admin' in admin.session_info()['userCtx']['roles']


def test_all_dbs_is_admin_only_on_3x_but_open_on_1x(agent):
    anonymous = agent.anonymous()
    if agent.api_version == '3':
        with pytest.raises(exception.CouchDBAuthError) as err:
            anonymous.all_dbs()
        assert err.value.status == 401
    else:
        assert system.USERS_DB in anonymous.all_dbs()


# -- errors ---------------------------------------------------------------

def test_http_errors_become_typed_exceptions_with_context(agent):
    client = _client(agent)
    with pytest.raises(exception.CouchDBError) as err:
        client.request('GET', ['missing db'])
    assert type(err.value) is exception.CouchDBError
    assert (err.value.method, err.value.path, err.value.status,
            err.value.error) == ('GET', '/missing%20db', 404, 'not_found')
    assert 'HTTP 404' in str(err.value)

    with pytest.raises(exception.CouchDBAuthError) as err:
        agent.anonymous().config_get('admins')
    assert (err.value.status, err.value.error) == (401, 'unauthorized')


def test_stale_revision_is_a_conflict(agent):
    client = _client(agent)
    client.request('PUT', ['db'])
    rev = client.request('PUT', ['db', 'doc'], json={'v': 1})['rev']
    client.request('PUT', ['db', 'doc'], json={'v': 2, '_rev': rev})
    with pytest.raises(exception.CouchDBConflict) as err:
        client.request('PUT', ['db', 'doc'], json={'v': 3, '_rev': rev})
    assert (err.value.status, err.value.error) == (409, 'conflict')
    assert client.request('GET', ['db', 'doc'])['v'] == 2


def test_unexpected_status_raises_even_when_2xx(agent):
    client = _client(agent)
    with pytest.raises(exception.CouchDBError) as err:
        client.request('PUT', ['db'], expected=200)
    assert err.value.status == 201
    assert client.exists(['db'])                  # CouchDB did create it


def test_get_or_none_and_exists(agent):
    client = _client(agent)
    assert client.get_or_none(['nodb']) is None
    assert client.exists(['nodb']) is False
    client.request('PUT', ['db'])
    assert client.exists(['db']) is True
    assert client.get_or_none(['db'])['db_name'] == 'db'
    with pytest.raises(exception.CouchDBAuthError) as err:
        client.with_credentials('nobody', 'x').exists(['db'])
    assert err.value.status == 401


# -- API version and health -----------------------------------------------

def test_detects_the_api_version_even_with_refused_credentials(agent):
    assert _client(agent).api_version == agent.api_version
    stale = _client(agent, credentials=('os_admin', 'stale'))
    assert stale.api_version == agent.api_version
    # Health is asked anonymously: CouchDB refuses these credentials.
    assert stale.health() is couch.Health.UP


@only_couchdb3
@pytest.mark.parametrize('mode', ['true', 'nolb'])
def test_detects_3x_in_maintenance_and_reports_not_ready(agent, mode):
    admin = _client(agent)
    admin.config_set('couchdb', 'maintenance_mode', mode)
    try:
        client = _client(agent)                       # probes now
        assert client.api_version == '3'
        assert client.health() is couch.Health.NOT_READY
    finally:
        admin.config_delete('couchdb', 'maintenance_mode')
    assert client.health() is couch.Health.UP


def test_redetects_after_the_server_was_unreachable(tmp_path):
    """A 1.6 API on a port, gone, then a CouchDB 3.5 on the same port."""
    old = pouchdb.PouchDBServer(tmp_path / 'old')
    fixtures.start_or_fail(old)
    try:
        client = couch.CouchDBClient(old.url, timeout=5)
        assert client.api_version == '1'
    finally:
        old.stop()
    assert client.health() is couch.Health.DOWN
    new = couchdb3.CouchDB3Server(tmp_path / 'new', port=old.port)
    fixtures.start_or_fail(new)
    try:
        assert client.health() is couch.Health.UP
        assert client.api_version == '3'
    finally:
        new.stop()
    assert client.health() is couch.Health.DOWN


# -- configuration and server ---------------------------------------------

def test_config_round_trip(agent):
    client = _client(agent)
    assert client.config_set('trove_functional', 'level', 'debug') == ''
    assert client.config_set('trove_functional', 'level', 'info') == 'debug'
    assert client.config_get('trove_functional', 'level') == 'info'
    assert client.config_get('trove_functional') == {'level': 'info'}
    assert 'trove_functional' in client.config_get()
    assert client.config_delete('trove_functional', 'level') == 'info'
    assert client.config_delete('trove_functional', 'level',
                                missing_ok=True) is None
    with pytest.raises(exception.CouchDBError) as err:
        client.config_delete('trove_functional', 'level')
    assert err.value.status == 404
    assert client.config_get('trove_functional') == {}


def test_admins_are_stored_hashed(agent):
    client = _client(agent)
    client.config_set('admins', 'root', 'Root-Pass-1')
    # CouchDB 3.x hashes the password after it answered (1.6 at once).
    for _attempt in couch.polling_loop(10, 0.1):
        stored = client.config_get('admins', 'root')
        if stored != 'Root-Pass-1':
            break
    assert stored.startswith('-pbkdf2') and 'Root-Pass-1' not in stored
    root = client.with_credentials('root', 'Root-Pass-1')
    assert '_admin' in root.session_info()['userCtx']['roles']


@only_couchdb3
def test_restart_server_uses_the_versions_endpoint(agent):
    """pouchdb-server has no /_restart (404); CouchDB 3.5 answers, then
    goes down for about two seconds and comes back."""
    client = _client(agent)
    assert client.restart_server() == {'ok': True}
    assert agent.app.wait_for_health(couch.Health.DOWN, 10)
    assert agent.app.wait_for_health(couch.Health.UP, 60)
    assert client.server_info()['couchdb'] == 'Welcome'


def test_one_client_serves_threads(agent):
    client = _client(agent)
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
