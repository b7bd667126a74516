"""The CouchDB control layer against a real pouchdb-server (CouchDB 1.6 API).

Each test gets a fresh server (the ``pouchdb`` fixture of the root
conftest.py) and drives it only through service.py.  Where pouchdb-server
differs from CouchDB (integration notes in test-services.md) the tests
tolerate both answers; the product code knows nothing of pouchdb-server.
"""

import json
import os
import stat

import pytest

from trove.common import cfg
from trove.common import exception
from trove.common.db import models
from trove.common.instance import ServiceStatus
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import (
    admin as couch_admin)
from trove.guestagent.datastore.experimental.couchdb import service

CONF = cfg.CONF


class PouchDBServiceManager:
    """Starts and stops the test's pouchdb-server like systemd would."""

    def __init__(self, server):
        self.server = server
        self.enabled = None

    def start(self):
        if not self.server.is_running():
            self.server.start()

    def stop(self):
        self.server.stop()

    def enable_on_boot(self):
        self.enabled = True

    def disable_on_boot(self):
        self.enabled = False


@pytest.fixture
def conf(tmp_path, pouchdb):
    overrides = {
        None: {'guest_state_dir': str(tmp_path / 'state'),
               'state_change_wait_time': 60},
        'couchdb': {'host': '127.0.0.1', 'port': pouchdb.port,
                    'config_dir': str(tmp_path / 'etc'),
                    'http_timeout': 15.0},
    }
    for group, options in overrides.items():
        for name, value in options.items():
            CONF.set_override(name, value, group=group)
    yield CONF
    CONF.reset()


@pytest.fixture
def manager(pouchdb):
    return PouchDBServiceManager(pouchdb)


@pytest.fixture
def app(conf, manager):
    app = service.CouchDBApp(service_manager=manager)
    app.poll_interval = 0.1
    return app


@pytest.fixture
def admin(app):
    assert app.secure() is True
    return couch_admin.CouchDBAdmin(app)


def _user(name, password='Pass-word-1', databases=()):
    return models.User(name=name, password=password,
                       databases=list(databases))


def _as(app, name, password):
    return app.client.with_credentials(name, password)


# -- the server -----------------------------------------------------------

def test_secure_ends_admin_party_once(app, pouchdb):
    anonymous = couch.CouchDBClient(pouchdb.url, timeout=15)
    assert anonymous.api_version == '1'
    assert app.get_actual_status() is ServiceStatus.RUNNING   # admin party
    assert app.secure() is True
    user, password = app.credentials.load()
    assert user == 'os_admin'
    assert stat.S_IMODE(os.stat(app.credentials.path).st_mode) == 0o600
    with pytest.raises(exception.CouchDBAuthError):
        anonymous.config_get('admins')
    stored = app.client.config_get('admins', 'os_admin')
    assert stored.startswith('-pbkdf2-') and password not in stored
    assert password not in pouchdb.config_file.read_text()
    assert app.secure() is False
    assert app.credentials.load() == (user, password)
    assert app.get_actual_status() is ServiceStatus.RUNNING


def test_secure_refuses_a_server_with_unknown_admins(app, pouchdb):
    anonymous = couch.CouchDBClient(pouchdb.url, timeout=15)
    anonymous.config_set('admins', 'someone', 'Someone-pw-1')
    with pytest.raises(exception.CouchDBAuthError) as err:
        app.secure()
    assert 'already has server admins' in str(err.value)
    assert app.get_actual_status() is ServiceStatus.BLOCKED


def test_status_shutdown_on_purpose_crashed_otherwise(admin, app, manager,
                                                      pouchdb):
    app.stop_db(do_not_start_on_reboot=True)
    assert manager.enabled is False
    assert app.get_actual_status() is ServiceStatus.SHUTDOWN
    app.start_db()
    assert manager.enabled is True
    assert app.get_actual_status() is ServiceStatus.RUNNING
    pouchdb.kill()
    assert app.get_actual_status() is ServiceStatus.CRASHED
    app.restart()
    assert app.get_actual_status() is ServiceStatus.RUNNING
    assert app.secure() is False            # the admin survived restarts


def test_bind_address_change_survives_the_dropped_reply(admin, app):
    client = app.client
    assert app.configure_bind_address('127.0.0.1') is False   # already set
    # pouchdb-server restarts its listener and may drop this reply.
    assert client.config_set('httpd', 'bind_address', '127.0.0.1') == \
        '127.0.0.1'
    assert client.config_get('httpd', 'bind_address') == '127.0.0.1'
    assert app.get_actual_status() is ServiceStatus.RUNNING


def test_ensure_system_databases_is_a_no_op_on_1x(admin, app):
    assert app.ensure_system_databases() == []


# -- databases ------------------------------------------------------------

def test_databases_create_list_page_delete(admin, app):
    admin.create_database(['db3', 'db1', 'db2', 'a$(id)'])
    assert 'a$(id)' in app.client.all_dbs()
    assert admin.list_databases() == (['a$(id)', 'db1', 'db2', 'db3'], None)
    assert admin.list_databases(limit=2) == (['a$(id)', 'db1'], 'db1')
    assert admin.list_databases(limit=2, marker='db1') == (['db2', 'db3'],
                                                            None)
    assert admin.list_databases(limit=1, marker='db2',
                                include_marker=True) == (['db2'], 'db2')
    admin.delete_database('db2')
    assert admin.list_databases()[0] == ['a$(id)', 'db1', 'db3']
    with pytest.raises(exception.DatabaseNotFound):
        admin.delete_database('db2')       # pouchdb-server would say 200
    with pytest.raises(exception.DatabaseAlreadyExists):
        admin.create_database(['db1'])


@pytest.mark.parametrize('bad', ['Bad', '_x', 'a b', 'db;rm -rf /',
                                 'x' * 239])
def test_invalid_database_names_create_nothing(admin, app, bad):
    before = app.client.all_dbs()
    with pytest.raises(exception.InvalidName):
        admin.create_database(['fine', bad])
    assert app.client.all_dbs() == before


# -- users ----------------------------------------------------------------

def test_users_create_get_list_delete(admin):
    admin.create_database(['db1'])
    admin.create_user([_user('alice', databases=['db1']), _user('bob')])
    assert admin.get_user('nobody') is None
    alice = admin.get_user('alice')
    assert (alice.name, alice.databases) == ('alice', ['db1'])
    users, marker = admin.list_users()
    assert [(u.name, u.databases) for u in users] == [('alice', ['db1']),
                                                      ('bob', [])]
    assert marker is None
    assert [u.name for u in admin.list_users(limit=1)[0]] == ['alice']
    with pytest.raises(exception.UserAlreadyExists):
        admin.create_user([_user('bob')])
    admin.delete_user('alice')
    assert admin.get_user('alice') is None
    assert [u.name for u in admin.list_users()[0]] == ['bob']
    assert admin.list_access('bob') == []


def test_invalid_user_in_a_batch_creates_nothing(admin):
    with pytest.raises(exception.InvalidName):
        admin.create_user([_user('good'), _user('bad user')])
    assert admin.get_user('good') is None


def test_changed_password_authenticates(admin, app):
    admin.create_database(['db1'])
    admin.create_user([_user('carol', 'Old-pass-1', ['db1'])])
    admin.change_passwords([_user('carol', 'New-pass-2')])
    carol = _as(app, 'carol', 'New-pass-2')
    assert carol.request('GET', ['db1'])['db_name'] == 'db1'
    with pytest.raises(exception.CouchDBAuthError):
        _as(app, 'carol', 'Old-pass-1').request('GET', ['db1'])


def test_rename_keeps_the_password_and_access(admin, app):
    admin.create_database(['db1'])
    admin.create_user([_user('dave', 'Dave-pass-1', ['db1'])])
    admin.update_attributes('dave', {'name': 'dave2', 'host': '%'})
    assert admin.get_user('dave') is None
    assert admin.get_user('dave2').databases == ['db1']
    dave2 = _as(app, 'dave2', 'Dave-pass-1')
    assert dave2.request('GET', ['db1'])['db_name'] == 'db1'


def test_grant_keeps_others_and_revoke_removes_one(admin, app):
    admin.create_database(['shared'])
    admin.create_user([_user('u1', 'U1-pass-1'), _user('u2', 'U2-pass-1'),
                       _user('u3', 'U3-pass-1')])
    app.client.request('PUT', ['shared', '_security'], json={
        'admins': {'names': [], 'roles': ['dba']},
        'members': {'names': [], 'roles': []}})
    admin.grant_access('u1', ['shared'])
    admin.grant_access('u2', ['shared'])
    security = app.client.request('GET', ['shared', '_security'])
    assert security['members']['names'] == ['u1', 'u2']
    assert security['admins'] == {'names': [], 'roles': ['dba']}
    assert admin.list_access('u1') == ['shared']
    with pytest.raises(exception.CouchDBAuthError):   # 401 here, 403 CouchDB
        _as(app, 'u3', 'U3-pass-1').request('GET', ['shared'])
    admin.revoke_access('u1', 'shared')
    security = app.client.request('GET', ['shared', '_security'])
    assert security['members']['names'] == ['u2']
    assert security['admins'] == {'names': [], 'roles': ['dba']}
    assert admin.list_access('u1') == []
    assert _as(app, 'u2', 'U2-pass-1').request('GET', ['shared'])
    with pytest.raises(exception.CouchDBAuthError):
        _as(app, 'u1', 'U1-pass-1').request('GET', ['shared'])


# -- root -----------------------------------------------------------------

def test_root_enable_disable(admin, app, pouchdb):
    assert admin.is_root_enabled() is False
    assert admin.get_root_password() is None
    root = admin.enable_root()
    assert root.is_root and root.name == 'root'
    assert root.password not in (None, 'None', '')
    assert admin.is_root_enabled() is True
    assert admin.get_root_password() == root.password
    session = _as(app, 'root', root.password).session_info()
    assert '_admin' in session['userCtx']['roles']
    creds = json.loads(open(app.credentials.path).read())
    assert creds['root_password'] == root.password
    assert 'root' in json.loads(pouchdb.config_file.read_text())['admins']
    admin.disable_root()
    assert admin.is_root_enabled() is False
    assert admin.get_root_password() is None
    admin.disable_root()                      # twice is fine
    assert 'root' not in json.loads(pouchdb.config_file.read_text()).get(
        'admins', {})
