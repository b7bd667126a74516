"""The control layer (service.py) against a fake CouchDB 3.x over HTTP.

The fake server is started and stopped by a fake service manager, like a
real CouchDB by systemd; everything else is real: HTTP, files, modes.
"""

import json
import os

import pytest

from trove.common import cfg
from trove.common import exception
from trove.common.db import models
from trove.common.instance import ServiceStatus
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import (
    admin as couch_admin)
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system

try:
    from . import fake_couchdb3 as fake
except ImportError:
    import fake_couchdb3 as fake

IMAGE_ADMIN = ('admin', 'image-Admin-1')


@pytest.fixture
def etc(tmp_path):
    return tmp_path / 'etc'


@pytest.fixture
def couch3(conf, etc):
    """A running 3.x node with the admin its image was built with."""
    server = fake.FakeCouchDB('3')
    server.set_admin(*IMAGE_ADMIN)
    server.start()
    conf.config(group='couchdb', host='127.0.0.1', port=server.port,
                config_dir=str(etc), http_timeout=5.0)
    conf.config(state_change_wait_time=5)
    yield server
    server.stop()


@pytest.fixture
def manager(couch3, etc):
    return fake.FakeServiceManager(couch3, config_dir=str(etc))


@pytest.fixture
def app(manager):
    app = service.CouchDBApp(service_manager=manager)
    app.poll_interval = 0.02
    return app


@pytest.fixture
def admin(app):
    app.secure()
    app.ensure_system_databases()
    return couch_admin.CouchDBAdmin(app)


def _as(app, name, password):
    return app.client.with_credentials(name, password)


# -- the internal admin ---------------------------------------------------

def test_secure_creates_os_admin_through_local_d_and_a_restart(
        app, manager, couch3, etc, conf):
    assert app.get_actual_status() is ServiceStatus.BLOCKED   # no creds
    assert app.secure() is True
    ini = etc / 'local.d' / service.RUNTIME_INI_FILE
    user, password = app.credentials.load()
    assert user == 'os_admin' and len(password) == 36
    assert ini.read_text().endswith('[admins]\nos_admin = %s\n' % password)
    assert fake.file_mode(ini) == 0o600
    assert (manager.stops, manager.starts) == (1, 1)
    assert app.client.session_info()['userCtx'] == {
        'name': 'os_admin', 'roles': ['_admin']}
    assert app.get_actual_status() is ServiceStatus.RUNNING


def test_secure_is_idempotent(app, manager):
    app.secure()
    first = app.credentials.load()
    assert app.secure() is False
    assert app.credentials.load() == first
    assert (manager.stops, manager.starts) == (1, 1)


def test_secure_starts_a_3x_that_refused_to_start_without_admin(conf, etc):
    server = fake.FakeCouchDB('3', port=fake.free_port())
    assert server.start() is False                  # no admin: no start
    conf.config(group='couchdb', port=server.port, config_dir=str(etc),
                http_timeout=5.0)
    conf.config(state_change_wait_time=5)
    manager = fake.FakeServiceManager(server, config_dir=str(etc))
    app = service.CouchDBApp(service_manager=manager)
    app.poll_interval = 0.02
    try:
        assert app.get_actual_status() is ServiceStatus.CRASHED
        assert app.secure() is True
        assert app.get_actual_status() is ServiceStatus.RUNNING
        assert app.client.api_version == '3'
        assert manager.enabled is None           # boot setting untouched
    finally:
        server.stop()


def test_credentials_file_is_0600_in_a_0700_dir(app, conf):
    app.secure()
    path = app.credentials.path
    assert os.path.dirname(path) == cfg.CONF.guest_state_dir
    assert fake.file_mode(path) == 0o600
    assert fake.file_mode(os.path.dirname(path)) == 0o700
    assert json.load(open(path))['user'] == 'os_admin'
    assert [n for n in os.listdir(os.path.dirname(path))
            if n.endswith('.tmp')] == []


def test_admin_credentials_keep_root_password(tmp_path):
    creds = service.AdminCredentials(str(tmp_path / 'creds.json'))
    assert creds.load() is None and creds.root_password() is None
    creds.save('pw-1')
    creds.save_root_password('root-pw')
    creds.save('pw-2')
    assert creds.load() == ('os_admin', 'pw-2')
    assert creds.root_password() == 'root-pw'
    creds.clear_root_password()
    assert creds.root_password() is None
    assert creds.load() == ('os_admin', 'pw-2')


def test_corrupt_credentials_file_is_a_clear_error(tmp_path):
    path = tmp_path / 'creds.json'
    path.write_text('{not json')
    with pytest.raises(exception.GuestStateError) as err:
        service.AdminCredentials(str(path)).load()
    assert str(path) in str(err.value)


# -- status ---------------------------------------------------------------

def test_status_follows_couchdb_not_a_cache(app, couch3):
    app.secure()
    assert app.get_actual_status() is ServiceStatus.RUNNING
    couch3.set_maintenance('true')
    assert app.get_actual_status() is ServiceStatus.BLOCKED
    couch3.set_maintenance('nolb')
    assert app.get_actual_status() is ServiceStatus.BLOCKED
    couch3.set_maintenance(None)
    couch3.fail_status = 500
    assert app.get_actual_status() is ServiceStatus.BLOCKED
    couch3.fail_status = None
    assert app.get_actual_status() is ServiceStatus.RUNNING


def test_status_blocked_when_credentials_are_refused(app, couch3):
    app.secure()
    couch3.set_admin('os_admin', 'changed-behind-our-back')
    assert app.get_actual_status() is ServiceStatus.BLOCKED


def test_stop_on_purpose_is_shutdown_and_a_crash_is_crashed(
        app, couch3, manager):
    app.secure()
    app.stop_db(do_not_start_on_reboot=True)
    assert manager.enabled is False
    assert app.get_actual_status() is ServiceStatus.SHUTDOWN
    app.start_db()
    assert manager.enabled is True
    assert app.get_actual_status() is ServiceStatus.RUNNING
    couch3.stop()                                   # nobody asked for it
    assert app.get_actual_status() is ServiceStatus.CRASHED


def test_restart_keeps_boot_setting(app, manager):
    app.restart()
    assert (manager.stops, manager.starts, manager.enabled) == (1, 1, None)
    assert app.client.health() is couch.Health.UP


def test_start_that_never_comes_up_fails_within_the_wait(app, couch3, conf):
    conf.config(state_change_wait_time=1)
    app.stop_db()
    couch3.require_admin = True
    couch3.config['admins'].clear()                 # 3.x will not start
    with pytest.raises(exception.GuestStateError) as err:
        app.start_db()
    assert 'start' in str(err.value)
    assert app.get_actual_status() is ServiceStatus.CRASHED


def test_wait_for_health_is_bounded(app):
    assert app.wait_for_health(couch.Health.UP, 1) is True
    assert app.wait_for_health(couch.Health.DOWN, 0.2) is False


# -- configuration --------------------------------------------------------

def test_ensure_system_databases(admin, app, couch3):
    assert set(system.SYSTEM_DBS_3X) <= set(couch3.dbs)
    assert app.ensure_system_databases() == []


def test_configure_bind_address_uses_chttpd_and_skips_when_set(app, couch3):
    app.secure()
    couch3.drop_reply_to.add(
        ('PUT', '/_node/_local/_config/chttpd/bind_address'))
    assert app.configure_bind_address('0.0.0.0') is True
    assert couch3.config['chttpd']['bind_address'] == '0.0.0.0'
    puts = len(couch3.requests_seen)
    assert app.configure_bind_address('0.0.0.0') is False
    assert all(m != 'PUT' for m, _p, _a in couch3.requests_seen[puts:])


def test_write_config_contents(app, etc):
    app.write_config_contents(None)
    app.write_config_contents('')
    assert not (etc / 'local.d' / service.CONFIG_INI_FILE).exists()
    app.write_config_contents('[couchdb]\nmax_dbs_open = 500\n')
    path = etc / 'local.d' / service.CONFIG_INI_FILE
    assert path.read_text() == '[couchdb]\nmax_dbs_open = 500\n'
    assert fake.file_mode(path) == 0o640
    app.write_config_contents('[log]\nlevel = info\n')
    assert path.read_text() == '[log]\nlevel = info\n'
    assert sorted(os.listdir(etc / 'local.d')) == [
        service.CONFIG_INI_FILE, service.RUNTIME_INI_FILE]


def test_config_api_changes_land_in_a_file_the_agent_never_rewrites(
        app, etc):
    """CouchDB saves API changes in the last ini file of local.d."""
    app.write_config_contents('[log]\nlevel = info\n')
    app.secure()
    files = sorted(os.listdir(etc / 'local.d'))
    assert files[-1] == service.RUNTIME_INI_FILE
    runtime = etc / 'local.d' / service.RUNTIME_INI_FILE
    assert fake.file_mode(runtime) == 0o600
    before = runtime.read_text()
    app.write_config_contents('[log]\nlevel = debug\n')
    assert runtime.read_text() == before


def test_set_data_ownership_chowns_the_tree(app, conf, tmp_path):
    if os.geteuid() != 0:
        pytest.skip('changing file owners needs root')
    data = tmp_path / 'data'
    (data / 'shards').mkdir(parents=True)
    (data / 'shards' / 'db.couch').write_text('x')
    for path in (data, data / 'shards', data / 'shards' / 'db.couch'):
        os.chown(path, 65534, 65534)
    conf.config(group='couchdb', couchdb_user='root', couchdb_group='root',
                mount_point=str(data))
    app.set_data_ownership()
    assert {os.stat(p).st_uid for p in (data, data / 'shards' / 'db.couch')
            } == {0}


def test_set_data_ownership_failure_is_raised(app, conf, tmp_path):
    conf.config(group='couchdb', couchdb_user='root', couchdb_group='root',
                mount_point=str(tmp_path / 'missing'))
    with pytest.raises(exception.ProcessExecutionError):
        app.set_data_ownership()


def test_install_if_needed_delegates_only_a_non_empty_list(app,
                                                          monkeypatch):
    from trove.guestagent.common import packages
    asked = []
    monkeypatch.setattr(packages, 'install_if_needed',
                        lambda wanted: asked.append(wanted) or wanted[:1])
    assert app.install_if_needed([]) == []
    assert app.install_if_needed(None) == []
    assert app.install_if_needed(('couchdb', 'curl')) == ['couchdb']
    assert asked == [['couchdb', 'curl']]


# -- databases ------------------------------------------------------------

def test_create_list_delete_databases(admin, couch3):
    admin.create_database(['db1', 'a$(id)', 'a/b'])
    assert {'db1', 'a$(id)', 'a/b'} <= set(couch3.dbs)
    assert admin.list_databases() == (['a$(id)', 'a/b', 'db1'], None)
    admin.delete_database('a$(id)')
    assert 'a$(id)' not in couch3.dbs
    with pytest.raises(exception.DatabaseNotFound):
        admin.delete_database('a$(id)')


@pytest.mark.parametrize('bad', [
    'Bad', '_x', 'a b', 'db;rm -rf /', 'x' * 239, '', '_users'])
def test_invalid_database_names_change_nothing(admin, couch3, bad):
    before = set(couch3.dbs)
    with pytest.raises(exception.InvalidName):
        admin.create_database(['good', bad])
    assert set(couch3.dbs) == before


def test_existing_database_in_a_batch_changes_nothing(admin, couch3):
    admin.create_database(['old'])
    with pytest.raises(exception.DatabaseAlreadyExists):
        admin.create_database(['new', 'old'])
    assert 'new' not in couch3.dbs
    with pytest.raises(exception.BadRequest):
        admin.create_database(['twice', 'twice'])
    assert 'twice' not in couch3.dbs


def test_list_databases_pages(admin, conf):
    admin.create_database(['d%d' % n for n in range(5)] + ['hidden'])
    conf.config(group='couchdb', ignore_dbs=['_users', 'hidden'])
    assert admin.list_databases(limit=2) == (['d0', 'd1'], 'd1')
    assert admin.list_databases(limit=2, marker='d1') == (['d2', 'd3'], 'd3')
    assert admin.list_databases(limit=2, marker='d3',
                                include_marker=True) == (['d3', 'd4'], None)
    assert admin.list_databases(marker='d4') == ([], None)


# -- users ----------------------------------------------------------------

def _user(name, password='pw-' + 'x' * 8, databases=()):
    return models.User(name=name, password=password,
                       databases=list(databases))


def test_create_user_hashes_and_grants(admin, app, couch3):
    admin.create_database(['db1'])
    admin.create_user([_user('alice', 'Alice-pw-1', ['db1'])])
    doc = couch3.user_doc('alice')
    assert 'password' not in doc and doc['password_scheme'] == 'pbkdf2'
    assert (doc['type'], doc['roles']) == ('user', [])
    security = couch3.security('db1')
    assert security['members'] == {'roles': ['_admin'], 'names': ['alice']}
    assert security['admins'] == {'roles': ['_admin']}
    alice = _as(app, 'alice', 'Alice-pw-1')
    assert alice.request('GET', ['db1'])['db_name'] == 'db1'


def test_ungranted_user_is_refused_on_3x(admin, app):
    admin.create_database(['private'])
    admin.create_user([_user('bob', 'Bob-pw-123')])
    with pytest.raises(exception.CouchDBAuthError):
        _as(app, 'bob', 'Bob-pw-123').request('GET', ['private'])


def test_create_user_validates_everything_first(admin, couch3):
    admin.create_database(['db1'])
    with pytest.raises(exception.InvalidName):
        admin.create_user([_user('ok1'), _user('bad name')])
    with pytest.raises(exception.ReservedName):
        admin.create_user([_user('ok1'), _user('root')])
    with pytest.raises(exception.BadRequest):
        admin.create_user([_user('ok1'), _user('ok2', password='')])
    with pytest.raises(exception.DatabaseNotFound):
        admin.create_user([_user('ok1', databases=['db1']),
                           _user('ok2', databases=['nodb'])])
    assert couch3.dbs['_users']['docs'] == {}
    assert 'names' not in couch3.security('db1')['members']


def test_existing_user_is_refused(admin):
    admin.create_user([_user('carol')])
    with pytest.raises(exception.UserAlreadyExists):
        admin.create_user([_user('carol')])


def test_get_list_delete_users(admin, couch3, conf):
    admin.create_database(['db1', 'db2'])
    admin.create_user([_user('u1', databases=['db2', 'db1']), _user('u2'),
                       _user('u3'), _user('ignored')])
    conf.config(group='couchdb', ignore_users=['os_admin', 'root',
                                               'ignored'])
    assert admin.get_user('missing') is None
    u1 = admin.get_user('u1')
    assert (u1.name, u1.databases, u1.password) == ('u1', ['db1', 'db2'],
                                                     None)
    page, marker = admin.list_users(limit=2)
    assert [u.name for u in page] == ['u1', 'u2'] and marker == 'u2'
    assert page[0].databases == ['db1', 'db2'] and page[1].databases == []
    page, marker = admin.list_users(marker='u2')
    assert [u.name for u in page] == ['u3'] and marker is None
    admin.delete_user('u1')
    assert admin.get_user('u1') is None
    assert 'u1' not in couch3.security('db1')['members']['names']
    with pytest.raises(exception.UserNotFound):
        admin.delete_user('u1')


def test_change_passwords(admin, app):
    admin.create_user([_user('dave', 'old-Pass-1')])
    admin.change_passwords([_user('dave', 'new-Pass-2')])
    assert _as(app, 'dave', 'new-Pass-2').session_info()['userCtx'][
        'name'] == 'dave'
    with pytest.raises(exception.CouchDBAuthError):
        _as(app, 'dave', 'old-Pass-1').session_info()
    with pytest.raises(exception.UserNotFound):
        admin.change_passwords([_user('dave', 'x' * 9), _user('nobody')])
    assert _as(app, 'dave', 'new-Pass-2').session_info()


def test_rename_keeps_password_and_access(admin, app, couch3):
    admin.create_database(['db1'])
    admin.create_user([_user('erin', 'Erin-pw-1', ['db1'])])
    admin.update_attributes('erin', {'name': 'erin2', 'host': '10.0.0.1'})
    assert admin.get_user('erin') is None
    assert couch3.security('db1')['members']['names'] == ['erin2']
    erin2 = _as(app, 'erin2', 'Erin-pw-1')
    assert erin2.request('GET', ['db1'])['db_name'] == 'db1'


def test_rename_with_new_password_and_password_only(admin, app):
    admin.create_user([_user('fay', 'Fay-pw-1'), _user('gus')])
    admin.update_attributes('fay', {'name': 'fay2', 'password': 'Fay-pw-2'})
    assert _as(app, 'fay2', 'Fay-pw-2').session_info()
    admin.update_attributes('fay2', {'password': 'Fay-pw-3'})
    assert _as(app, 'fay2', 'Fay-pw-3').session_info()
    with pytest.raises(exception.UserAlreadyExists):
        admin.update_attributes('fay2', {'name': 'gus'})
    with pytest.raises(exception.InvalidName):
        admin.update_attributes('fay2', {'name': 'bad name'})
    assert admin.get_user('fay2') is not None


# -- access ---------------------------------------------------------------

def test_grant_keeps_other_members_and_admins(admin, couch3):
    admin.create_database(['shared'])
    admin.create_user([_user('u1'), _user('u2')])
    couch3.dbs['shared']['security']['admins'] = {
        'names': ['owner'], 'roles': ['_admin', 'dba']}
    admin.grant_access('u1', ['shared'])
    admin.grant_access('u2', ['shared'])
    admin.grant_access('u2', ['shared'])
    security = couch3.security('shared')
    assert security['members'] == {'roles': ['_admin'],
                                   'names': ['u1', 'u2']}
    assert security['admins'] == {'names': ['owner'],
                                  'roles': ['_admin', 'dba']}
    admin.revoke_access('u1', 'shared')
    assert couch3.security('shared')['members']['names'] == ['u2']
    assert couch3.security('shared')['admins']['names'] == ['owner']
    assert admin.list_access('u2') == ['shared']
    assert admin.list_access('u1') == []


def test_grant_checks_user_and_every_database_first(admin, couch3):
    admin.create_database(['db1'])
    admin.create_user([_user('u1')])
    with pytest.raises(exception.DatabaseNotFound):
        admin.grant_access('u1', ['db1', 'nodb'])
    with pytest.raises(exception.UserNotFound):
        admin.grant_access('nobody', ['db1'])
    with pytest.raises(exception.InvalidName):
        admin.grant_access('u1', ['db1', 'Bad'])
    assert 'names' not in couch3.security('db1')['members']


def test_list_access_counts_db_admin_names(admin, couch3):
    admin.create_database(['db1', 'db2'])
    admin.create_user([_user('u1')])
    couch3.dbs['db2']['security']['admins'] = {'names': ['u1'],
                                               'roles': []}
    admin.grant_access('u1', ['db1'])
    assert admin.list_access('u1') == ['db1', 'db2']


# -- root -----------------------------------------------------------------

def test_root_lifecycle(admin, app, couch3):
    assert admin.is_root_enabled() is False
    assert admin.get_root_password() is None
    root = admin.enable_root()
    assert (root.name, root.is_root) == ('root', True)
    assert root.password and root.password != 'None'
    assert len(root.password) == 36
    assert couch3.config['admins']['root'].startswith('-pbkdf2-')
    assert admin.is_root_enabled() is True
    assert admin.get_root_password() == root.password
    assert '_admin' in _as(app, 'root', root.password).session_info()[
        'userCtx']['roles']
    again = admin.enable_root('Given-Root-1')
    assert again.password == admin.get_root_password() == 'Given-Root-1'
    admin.disable_root()
    assert admin.is_root_enabled() is False
    assert admin.get_root_password() is None
    admin.disable_root()
    with pytest.raises(exception.CouchDBAuthError):
        _as(app, 'root', 'Given-Root-1').session_info()


def test_enable_root_refuses_a_bad_password(admin):
    with pytest.raises(exception.BadRequest):
        admin.enable_root('')
    assert admin.is_root_enabled() is False
