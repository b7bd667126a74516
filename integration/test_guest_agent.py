"""The agent driven as Trove drives it: real broker, real agent, real server.

Every action goes through ``trove/guestagent/api.py`` with RPC encryption
on; every assertion is about an outcome (documents, users, heartbeats seen
by the conductor), never about how the agent got there.
"""

import json
import os
import secrets
import subprocess
import time

import pytest
import requests

from integration.scenario import control_plane
from integration.services import servers
from trove.common import exception, process

NOTIFICATION = {'notification_classname': 'trove.common.notification.Test',
                'server_type': 'api', 'request_id': 'req-x'}

_db = control_plane.database
_user = control_plane.user


def _names(listing):
    page, _marker = listing
    return [item['_name'] for item in page]


def _wait(predicate, timeout=20.0, what='condition'):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError('timed out waiting for %s' % what)


def test_prepare_reports_building_then_running(guest):
    since = time.time()
    message = guest.prepare_and_wait(
        databases=[_db('orders')],
        users=[_user('alice', 'alice-pw-1', ['orders'])],
        root_password='root-pw-1')
    assert message.kwargs['payload']['service_status'] == 'running'
    statuses = guest.conductor.statuses(guest.id, since)
    assert statuses[0] == 'building'
    assert _names(guest.api.list_databases()) == ['orders']
    alice = guest.session('alice', 'alice-pw-1')
    doc = alice.put(guest.url('orders', 'o1'), json={'qty': 3})
    assert doc.status_code == 201, doc.text
    assert guest.api.is_root_enabled() is True
    root = guest.session('root', 'root-pw-1')
    assert root.get(guest.config_url('admins')).status_code == 200
    assert guest.conductor.select('report_root', guest.id)
    # Heartbeats keep coming after prepare, each one observed afresh.
    guest.conductor.wait_for_status(guest.id, 'running', timeout=10)


@servers.only_on('couchdb3')
@pytest.mark.parametrize('start_waits', [False, True],
                         ids=['start-returns-at-once', 'start-waits'])
def test_a_fresh_couchdb3_with_no_admin_prepares(guest_factory, start_waits):
    # As the package leaves it: no admin, so CouchDB 3.x refuses to start;
    # api_version is the default (auto); systemd's start returns before
    # the server is up (or has refused), a start script may wait and fail.
    g = guest_factory(start_waits=start_waits)
    local_d = g.agent.couchdb_config_dir / 'local.d'
    assert not list(local_d.glob('*.ini'))
    # Far below state_change_wait_time (60 s): no wait ran out.
    message = g.prepare_and_wait(timeout=30, databases=[_db('first')])
    assert message.kwargs['payload']['service_status'] == 'running', (
        g.agent.log_text()[-3000:])
    admin = g.admin_session()
    for db in ('_users', '_replicator', 'first'):
        assert admin.get(g.url(db), timeout=10).status_code == 200, db
    # The agent's admin is in the last file of the ini chain, where
    # CouchDB replaced the clear password with its hash; no file of the
    # configuration keeps the clear one.
    runtime = (local_d / '99-trove-runtime.ini').read_text()
    assert 'os_admin = -pbkdf2:sha256-' in runtime
    password = g.admin_credentials()[1]
    assert not [path for path in g.agent.couchdb_config_dir.rglob('*')
                if path.is_file() and password in path.read_text()]
    # A single node: system databases made by CouchDB, one copy of each
    # shard, no "N=3 but only 1 node" error per database.
    assert admin.get(g.url('first'), timeout=10).json()['cluster']['n'] == 1
    log = g.couchdb.log.read_text()
    assert 'No Admin Account Found' not in log
    assert 'Request to create N=3 DB' not in log


def test_database_round_trip_with_pagination(prepared_guest):
    api = prepared_guest.api
    api.create_database([_db(n) for n in ('b1', 'a1', 'c1', 'd1')])
    _wait(lambda: len(_names(api.list_databases())) == 4, what='databases')
    page, marker = api.list_databases(limit=2)
    assert [d['_name'] for d in page] == ['a1', 'b1'] and marker == 'b1'
    page, marker = api.list_databases(limit=2, marker=marker)
    assert [d['_name'] for d in page] == ['c1', 'd1'] and marker is None
    page, _ = api.list_databases(limit=1, marker='b1', include_marker=True)
    assert [d['_name'] for d in page] == ['b1']
    api.delete_database(_db('c1'))
    _wait(lambda: _names(api.list_databases()) == ['a1', 'b1', 'd1'],
          what='c1 deleted')


def test_user_access_and_password_round_trip(prepared_guest):
    g = prepared_guest
    g.api.create_database([_db('shop'), _db('logs')])
    # Casts run concurrently on the guest, as in Trove: wait for the
    # databases before creating users that are granted them.
    _wait(lambda: len(_names(g.api.list_databases())) == 2, what='dbs')
    g.api.create_user([_user('bob', 'bob-pw-1', ['shop']),
                       _user('carol', 'carol-pw-1')])
    _wait(lambda: len(_names(g.api.list_users())) == 2, what='users')
    bob = g.api.get_user('bob', '%')
    assert bob['_name'] == 'bob' and bob['_password'] is None
    assert [d['_name'] for d in bob['_databases']] == ['shop']
    assert g.api.get_user('nobody', '%') is None

    g.api.grant_access('carol', '%', ['shop', 'logs'])
    assert sorted(d['_name'] for d in g.api.list_access('carol', '%')) == [
        'logs', 'shop']
    assert [d['_name'] for d in g.api.list_access('bob', '%')] == ['shop']
    g.api.revoke_access('carol', '%', 'shop')
    assert [d['_name'] for d in g.api.list_access('carol', '%')] == ['logs']
    assert [d['_name'] for d in g.api.list_access('bob', '%')] == ['shop']

    g.api.change_passwords([{'_name': 'bob', '_password': 'bob-pw-2'}])
    _wait(lambda: g.session('bob', 'bob-pw-2').get(
        g.url('shop')).status_code == 200, what='new password')
    assert g.session('bob', 'bob-pw-1').get(g.url('shop')).status_code in (
        401, 403)

    g.api.update_attributes('bob', '%', {'name': 'robert'})
    _wait(lambda: g.api.get_user('robert', '%') is not None, what='rename')
    assert g.api.get_user('bob', '%') is None
    assert [d['_name'] for d in g.api.list_access('robert', '%')] == ['shop']
    assert g.session('robert', 'bob-pw-2').get(
        g.url('shop')).status_code == 200

    g.api.delete_user({'_name': 'carol'})
    _wait(lambda: g.api.get_user('carol', '%') is None, what='delete')


def test_grant_to_two_users_keeps_both(prepared_guest):
    g = prepared_guest
    g.api.create_database([_db('team')])
    g.api.create_user([_user('u1', 'pw-u1'), _user('u2', 'pw-u2')])
    _wait(lambda: len(_names(g.api.list_users())) == 2, what='users')
    _wait(lambda: _names(g.api.list_databases()) == ['team'], what='team')
    g.api.grant_access('u1', '%', ['team'])
    g.api.grant_access('u2', '%', ['team'])
    for name, password in (('u1', 'pw-u1'), ('u2', 'pw-u2')):
        assert [d['_name'] for d in g.api.list_access(name, '%')] == ['team']
        answer = g.session(name, password).put(g.url('team', name),
                                               json={'by': name})
        assert answer.status_code == 201, answer.text


def test_root_enable_disable(prepared_guest):
    api = prepared_guest.api
    assert api.is_root_enabled() is False
    assert api.get_root_password() is None
    root = api.enable_root()
    assert root['_name'] == 'root' and root['_password'] not in (None,
                                                                  'None')
    assert len(root['_password']) >= 16
    assert api.is_root_enabled() is True
    assert api.get_root_password() == root['_password']
    session = prepared_guest.session('root', root['_password'])
    assert session.get(prepared_guest.config_url('admins')).ok
    api.enable_root_with_password('chosen-root-pw')
    assert prepared_guest.session('root', 'chosen-root-pw').get(
        prepared_guest.config_url('admins')).ok
    api.disable_root()
    assert api.is_root_enabled() is False


@pytest.mark.parametrize('bad', ['Upper', '_system', 'has space',
                                 'db;rm -rf /', 'x`reboot`', '../etc',
                                 'a' * 239])
def test_invalid_database_names_get_clear_errors(prepared_guest, bad):
    g = prepared_guest
    api = g.api.__class__(g.context(NOTIFICATION), g.id, key=g.agent.key)
    since = time.time()
    api.create_database([_db('fine'), _db(bad)])
    failure = g.conductor.wait_for('notify_exc_info', g.id, since=since)
    assert bad[:30] in failure.kwargs['message']
    assert _names(g.api.list_databases()) == []
    with pytest.raises(exception.TroveError) as err:
        g.api.grant_access('nobody', '%', [bad])
    assert 'Traceback' not in str(err.value).splitlines()[0]


def test_shell_metacharacters_are_plain_characters(prepared_guest):
    # '$', '(' and ')' are legal in CouchDB database names: the agent passes
    # them to CouchDB as data (URL-quoted), never through a shell.
    g = prepared_guest
    name = 'a$(id)+b'
    g.api.create_database([_db(name)])
    _wait(lambda: _names(g.api.list_databases()) == [name], what=name)
    assert requests.get(g.couchdb.url + '/a%24%28id%29%2Bb',
                        timeout=5).status_code in (200, 401)
    since = time.time()
    api = g.api.__class__(g.context(NOTIFICATION), g.id, key=g.agent.key)
    api.create_user([_user('eve;id', 'pw-eve')])
    failure = g.conductor.wait_for('notify_exc_info', g.id, since=since)
    assert 'eve;id' in failure.kwargs['message']
    assert g.api.list_users()[0] == []


def test_successful_cast_sends_notify_end(prepared_guest):
    g = prepared_guest
    api = g.api.__class__(g.context(NOTIFICATION), g.id, key=g.agent.key)
    since = time.time()
    api.create_database([_db('notified')])
    end = g.conductor.wait_for('notify_end', g.id, since=since)
    assert end.kwargs['serialized_notification']['request_id'] == 'req-x'


def test_killed_couchdb_is_reported_then_restart_recovers(prepared_guest):
    g = prepared_guest
    pid = int((g.agent.workdir / 'couchdb.pid').read_text())
    os.kill(pid, 9)
    g.conductor.wait_for_status(g.id, 'crashed', timeout=20)
    g.api.restart()
    g.conductor.wait_for_status(g.id, 'running', timeout=20)
    assert requests.get(g.couchdb.url + '/', timeout=5).ok


def test_stop_and_start_report_the_new_status_at_once(guest_factory):
    # Heartbeats every 10 minutes: only the agent's immediate report (as
    # upstream's update_db=True) can tell the conductor in time, and
    # Trove's resize and delete flows wait for it.
    g = guest_factory(report_interval=600)
    assert g.prepare_and_wait().kwargs['payload'][
        'service_status'] == 'running'
    for call, status in (
            (lambda: g.api.stop_db(do_not_start_on_reboot=True), 'shutdown'),
            (lambda: g.api.start_db_with_conf_changes(None), 'running'),
            (g.api.restart, 'running')):
        since = time.time()
        call()
        g.conductor.wait_for_status(g.id, status, timeout=5, since=since)


def test_filesystem_stats_shape(prepared_guest):
    stats = prepared_guest.api.get_filesystem_stats()
    for key in ('block_size', 'total_blocks', 'free_blocks', 'total',
                'free', 'used'):
        assert key in stats
    assert stats['total'] > 0


def _shop_for_alice(api):
    """Database 'shop' and its user 'alice' (casts: one after the
    other)."""
    api.create_database([_db('shop')])
    _wait(lambda: _names(api.list_databases()) == ['shop'],
          what='the database')
    api.create_user([_user('alice', 'alice-pw', ['shop'])])
    _wait(lambda: api.get_user('alice', '%'), what='the user')


def test_diagnostics_are_real_numbers(prepared_guest):
    api = prepared_guest.api
    _shop_for_alice(api)
    answer = prepared_guest.session('alice', 'alice-pw').post(
        prepared_guest.url('shop', '_bulk_docs'),
        json={'docs': [{'n': i} for i in range(25)]}, timeout=10)
    assert answer.status_code == 201, answer.text
    found = api.get_diagnostics()
    # What Trove's `trove diagnostics` view reads: the agent process.
    assert found['version'] and found['threads'] > 1
    assert 0 < found['vm_rss'] <= found['vm_hwm'] <= found['vm_peak']
    assert found['fd_size'] > 0
    # CouchDB's own numbers.
    assert found['couchdb_version']
    assert found['databases'] >= 3             # shop, _users, _replicator
    assert found['documents'] >= 25
    assert found['disk_used_bytes'] > 0
    assert found['compactions_running'] == 0
    assert found['replication_jobs'] == 0
    if prepared_guest.couchdb.kind == 'couchdb3':
        # From the server's own statistics (pouchdb-server keeps none).
        assert found['couchdb_open_databases'] >= 1
        assert found['couchdb_database_writes'] >= 1
        assert found['couchdb_request_time_ms'] > 0


def test_compaction_can_be_requested_and_observed(prepared_guest):
    api = prepared_guest.api
    _shop_for_alice(api)
    alice = prepared_guest.session('alice', 'alice-pw')
    rev = None
    for n in range(50):                    # old revisions to compact away
        body = {'n': n, '_rev': rev} if rev else {'n': n}
        rev = alice.put(prepared_guest.url('shop', 'counter'), json=body,
                        timeout=10).json()['rev']
    api.compact_database(_db('shop'))
    _wait(lambda: api.get_diagnostics()['compactions_running'] == 0,
          what='the compaction to end')
    assert alice.get(prepared_guest.url('shop', 'counter'),
                     timeout=10).json()['n'] == 49
    with pytest.raises(exception.DatabaseNotFound):
        api.compact_database(_db('nothere'))


def test_no_secret_in_argv_or_log(guest_factory, tmp_path, monkeypatch):
    # Every command line the agent runs, short-lived ones included: the
    # agent inherits the variable from this process when it starts.
    argv_record = tmp_path / 'agent-argv.jsonl'
    monkeypatch.setenv(process.ARGV_RECORD_ENV, str(argv_record))
    backup_key = 'backup-key-' + secrets.token_hex(8)
    g = guest_factory(options={'DEFAULT': {'backup_aes_cbc_key': backup_key}})
    message = g.prepare_and_wait(
        users=[_user('carol', 'carol-secret-pw')],
        root_password='root-secret-pw')
    assert message.kwargs['payload']['service_status'] == 'running', (
        g.agent.log_text()[-3000:])
    g.api.create_user([_user('dave', 'dave-secret-pw')])
    _wait(lambda: g.api.get_user('dave', '%'), what='dave')
    root = g.api.enable_root()
    g.api.restart()
    g.conductor.wait_for_status(g.id, 'running', timeout=60)
    _admin, admin_password = g.admin_credentials()
    known = {'carol': 'carol-secret-pw', 'root at prepare': 'root-secret-pw',
             'dave': 'dave-secret-pw', 'enable_root': root['_password'],
             'the agent\'s admin': admin_password,
             'the backup key': backup_key, 'the RPC key': g.agent.key}
    argvs = [json.loads(line)
             for line in argv_record.read_text().splitlines()]
    assert argvs, 'the agent ran no command'
    for argv in argvs:
        for whose, secret in known.items():
            assert not any(secret in arg for arg in argv), (
                f'{whose} in the argv of {argv[0]}')
    log = g.agent.log_text()
    assert 'Serving topic' in log
    for whose, secret in known.items():
        assert secret not in log, f'{whose} in the agent\'s log'


@pytest.mark.parametrize('config,named', [
    ('datastore_manager = couchdb\n', 'guest_id'),
    ('guest_id = g\ndatastore_manager = nosuch\n', 'nosuch')])
def test_agent_refuses_to_start_with_a_clear_line(tmp_path, config, named):
    conf = tmp_path / 'guest.conf'
    conf.write_text('[DEFAULT]\n' + config)
    result = subprocess.run(
        [_program(), '--config-file', str(conf)], capture_output=True,
        text=True, timeout=60)
    assert result.returncode != 0
    assert named in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _program():
    from integration import guest
    return guest.agent_program()


def test_agent_restart_resumes_heartbeats_without_prepare(prepared_guest):
    # The end marker survives the agent: after a reboot of the agent the
    # conductor keeps hearing the real status, and the guest still serves.
    g = prepared_guest
    g.api.create_database([_db('kept')])
    _wait(lambda: _names(g.api.list_databases()) == ['kept'], what='kept')
    g.agent.stop()
    g.agent.start()
    g.conductor.wait_for_status(g.id, 'running', timeout=20)
    assert _names(g.api.list_databases()) == ['kept']
