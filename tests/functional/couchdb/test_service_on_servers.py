"""CouchDBApp (service.py) on the real servers: the internal admin, status,
start and stop, configuration files and the listener.

The real server is the ground truth: what the tests assert is what the
real CouchDB 3.5 and pouchdb-server (the 1.6 API) did.
"""

import configparser
import grp
import json
import os
import pwd
import stat

import pytest

from trove.common import cfg
from trove.common import exception
from trove.common.instance import ServiceStatus
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system

CONF = cfg.CONF

only_couchdb3 = pytest.mark.servers('couchdb3')
only_pouchdb = pytest.mark.servers('pouchdb')


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _ini_admins(path):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    return dict(parser['admins']) if parser.has_section('admins') else {}


def _is_admin(client):
    try:
        return '_admin' in client.session_info()['userCtx']['roles']
    except exception.CouchDBAuthError:
        return False


def _start_like_the_image(agent):
    """The server as the image's init starts it, before the agent ran."""
    agent.manager.start()
    assert agent.app.wait_for_health(couch.Health.UP, 60)


# -- the internal admin ---------------------------------------------------

@only_couchdb3
def test_secure_puts_os_admin_in_the_runtime_ini_and_restarts(fresh):
    fresh.server.give_admin('admin', 'image-Admin-1')    # the image's
    _start_like_the_image(fresh)
    first_pid = fresh.server_pid()
    app = fresh.app
    assert app.get_actual_status() is ServiceStatus.BLOCKED   # no creds

    assert app.secure() is True

    user, password = app.credentials.load()
    assert user == 'os_admin' and len(password) == 36
    runtime = fresh.local_d() / service.RUNTIME_INI_FILE
    assert sorted(os.listdir(fresh.local_d()))[-1] == runtime.name
    assert _mode(runtime) == 0o600
    # CouchDB replaced the clear password with its hash when it started.
    stored = _ini_admins(runtime)['os_admin']
    assert stored.startswith('-pbkdf2') and password not in stored
    assert password not in runtime.read_text()
    assert fresh.server_pid() != first_pid                   # restarted
    assert app.client.session_info()['userCtx'] == {
        'name': 'os_admin', 'roles': ['_admin']}
    assert app.get_actual_status() is ServiceStatus.RUNNING


@only_couchdb3
def test_secure_starts_a_3x_that_refused_to_start_without_admin(fresh):
    app = fresh.app
    fresh.manager.start()                     # no admin: CouchDB exits
    assert app.wait_for_health(couch.Health.UP, 5) is False
    assert 'No Admin Account Found' in fresh.server_log()
    assert app.get_actual_status() is ServiceStatus.CRASHED

    assert app.secure() is True

    assert app.get_actual_status() is ServiceStatus.RUNNING
    assert app.client.api_version == '3'
    assert fresh.manager.enabled is None           # boot setting untouched


@only_pouchdb
def test_secure_ends_admin_party_once(fresh):
    _start_like_the_image(fresh)
    app = fresh.app
    anonymous = fresh.anonymous()
    assert anonymous.api_version == '1'
    assert app.get_actual_status() is ServiceStatus.RUNNING   # admin party

    assert app.secure() is True

    user, password = app.credentials.load()
    assert user == 'os_admin'
    with pytest.raises(exception.CouchDBAuthError):
        anonymous.config_get('admins')
    stored = app.client.config_get('admins', 'os_admin')
    assert stored.startswith('-pbkdf2-') and password not in stored
    assert password not in fresh.server.config_file.read_text()
    assert app.secure() is False
    assert app.credentials.load() == (user, password)
    assert app.get_actual_status() is ServiceStatus.RUNNING


@only_pouchdb
def test_secure_refuses_a_server_with_unknown_admins(fresh):
    _start_like_the_image(fresh)
    fresh.anonymous().config_set('admins', 'someone', 'Someone-pw-1')

    with pytest.raises(exception.CouchDBAuthError) as err:
        fresh.app.secure()

    assert 'already has server admins' in str(err.value)
    assert fresh.app.credentials.load() is None
    assert fresh.app.get_actual_status() is ServiceStatus.BLOCKED


def test_secure_is_idempotent(agent):
    first = agent.app.credentials.load()
    pid = agent.server_pid()
    assert agent.app.secure() is False
    assert agent.app.credentials.load() == first
    assert agent.server_pid() == pid                         # no restart


def test_credentials_file_is_0600_in_a_0700_dir(agent):
    path = agent.app.credentials.path
    directory = os.path.dirname(path)
    assert directory == str(agent.workdir / 'state')
    assert _mode(path) == 0o600
    assert _mode(directory) == 0o700
    with open(path) as stream:
        assert json.load(stream)['user'] == 'os_admin'
    assert [n for n in os.listdir(directory) if n.endswith('.tmp')] == []


# -- status ---------------------------------------------------------------

@only_couchdb3
@pytest.mark.parametrize('mode', ['true', 'nolb'])
def test_maintenance_mode_is_blocked_not_down(agent, mode):
    app = agent.app
    assert app.get_actual_status() is ServiceStatus.RUNNING
    app.client.config_set('couchdb', 'maintenance_mode', mode)
    assert app.client.health() is couch.Health.NOT_READY
    assert app.get_actual_status() is ServiceStatus.BLOCKED
    app.client.config_delete('couchdb', 'maintenance_mode')
    assert app.get_actual_status() is ServiceStatus.RUNNING


def test_status_blocked_when_credentials_are_refused(fresh):
    fresh.boot()
    app = fresh.app
    app.client.config_set('admins', 'os_admin', 'Changed-behind-our-back')
    changed = fresh.client_as('os_admin', 'Changed-behind-our-back')
    # CouchDB 3.x hashes the password after it answered the PUT; only
    # then does the new one log in.
    for _attempt in couch.polling_loop(10, 0.1):
        if _is_admin(changed):
            break
    assert _is_admin(changed)
    assert app.get_actual_status() is ServiceStatus.BLOCKED


def test_stop_on_purpose_is_shutdown_and_a_crash_is_crashed(fresh):
    fresh.boot()
    app, manager = fresh.app, fresh.manager
    app.stop_db(do_not_start_on_reboot=True)
    assert manager.enabled is False
    assert app.get_actual_status() is ServiceStatus.SHUTDOWN
    app.start_db()
    assert manager.enabled is True
    assert app.get_actual_status() is ServiceStatus.RUNNING
    fresh.crash()                                   # nobody asked for it
    assert app.get_actual_status() is ServiceStatus.CRASHED
    app.restart()
    assert app.get_actual_status() is ServiceStatus.RUNNING
    assert app.secure() is False            # the admin survived restarts


def test_restart_keeps_boot_setting(agent):
    before, pid = agent.manager.enabled, agent.server_pid()
    agent.app.restart()
    assert agent.manager.enabled == before
    assert agent.server_pid() != pid
    assert agent.app.client.health() is couch.Health.UP


@only_couchdb3
def test_start_that_never_comes_up_fails_within_the_wait(fresh):
    fresh.boot()
    app = fresh.app
    app.stop_db()
    runtime = fresh.local_d() / service.RUNTIME_INI_FILE
    runtime.write_text(runtime.read_text().replace('[admins]', '[gone]'))
    fresh.set(state_change_wait_time=3)
    with pytest.raises(exception.GuestStateError) as err:
        app.start_db()
    assert 'did not start within 3 seconds' in str(err.value)
    assert 'No Admin Account Found' in fresh.server_log()
    assert app.get_actual_status() is ServiceStatus.CRASHED


def test_wait_for_health_is_bounded(agent):
    assert agent.app.wait_for_health(couch.Health.UP, 1) is True
    assert agent.app.wait_for_health(couch.Health.DOWN, 0.3) is False


# -- configuration --------------------------------------------------------

def test_ensure_system_databases(agent):
    present = set(agent.app.client.all_dbs())
    if agent.api_version == '3':
        assert set(system.SYSTEM_DBS_3X) <= present
    else:
        assert {'_users', '_replicator'} <= present   # made by the server
    assert agent.app.ensure_system_databases() == []


@only_couchdb3
def test_bind_address_change_moves_the_listener_and_skips_when_set(fresh):
    fresh.boot()
    app = fresh.app
    assert app.configure_bind_address('127.0.0.1') is False   # already set

    assert app.configure_bind_address('127.0.0.2') is True

    moved = couch.CouchDBClient(
        'http://127.0.0.2:%d' % fresh.server.port,
        *app.credentials.load(), timeout=15)
    assert moved.health() is couch.Health.UP
    assert moved.config_get('chttpd', 'bind_address') == '127.0.0.2'
    assert fresh.anonymous().health() is couch.Health.DOWN
    # CouchDB keeps the change in the agent's runtime ini, last of local.d.
    runtime = fresh.local_d() / service.RUNTIME_INI_FILE
    assert 'bind_address = 127.0.0.2' in runtime.read_text()
    fresh.set('couchdb', host='127.0.0.2')
    again = service.CouchDBApp(service_manager=fresh.manager)
    assert again.configure_bind_address('127.0.0.2') is False


@only_pouchdb
def test_bind_address_change_survives_the_dropped_reply(agent, caplog):
    caplog.set_level('DEBUG')
    app = agent.app
    assert app.configure_bind_address('127.0.0.1') is False   # already set
    # pouchdb-server restarts its listener and drops this reply.
    assert app.client.config_set('httpd', 'bind_address', '127.0.0.1') == \
        '127.0.0.1'
    assert any('No reply to PUT /_config/httpd/bind_address' in
               record.getMessage() for record in caplog.records)
    assert app.client.config_get('httpd', 'bind_address') == '127.0.0.1'
    assert app.get_actual_status() is ServiceStatus.RUNNING


@only_couchdb3
def test_config_api_changes_land_in_a_file_the_agent_never_rewrites(agent):
    """CouchDB saves API changes in the last ini file of its chain."""
    app = agent.app
    runtime = agent.local_d() / service.RUNTIME_INI_FILE
    assert sorted(os.listdir(agent.local_d()))[-1] == runtime.name
    assert _mode(runtime) == 0o600
    try:
        app.client.config_set('trove_functional', 'marker', 'set-by-api')
        assert 'marker = set-by-api' in runtime.read_text()
        before = runtime.read_text()
        assert app.write_config_contents('[log]\nlevel = debug\n') is True
        assert runtime.read_text() == before
        assert (agent.local_d() / service.CONFIG_INI_FILE).read_text() == \
            '[log]\nlevel = debug\n'
        assert sorted(os.listdir(agent.local_d()))[-1] == runtime.name
    finally:
        app.client.config_delete('trove_functional', 'marker',
                                 missing_ok=True)


def _owners(root):
    """{path: (uid, gid)} of ``root`` and everything below it."""
    found = {}
    for top, dirs, files in os.walk(root):
        for path in [top] + [os.path.join(top, name) for name in dirs + files]:
            st = os.lstat(path)
            found[path] = (st.st_uid, st.st_gid)
    return found


def test_set_data_ownership_gives_the_data_directory_to_couchdb(agent):
    assert os.geteuid() == 0, 'changing file owners needs root'
    data = agent.server.data_dir
    before = _owners(data)
    assert any(os.path.dirname(path) != str(data) for path in before), \
        'the data directory has no subdirectory with files in it'
    stranger = (4321, 8765)          # no user or group of this machine
    try:
        for path in before:
            os.lchown(path, *stranger)
        agent.app.set_data_ownership()
        couchdb = (pwd.getpwnam(CONF.couchdb.couchdb_user).pw_uid,
                   grp.getgrnam(CONF.couchdb.couchdb_group).gr_gid)
        assert set(_owners(data).values()) == {couchdb}
    finally:
        for path, owner in before.items():
            if os.path.lexists(path):
                os.lchown(path, *owner)
    assert agent.app.client.health() is couch.Health.UP
