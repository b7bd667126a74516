"""Our agent driven by the real upstream Trove 26 control plane.

``integration/trove26/drive.py`` runs with the python of
``.cache/trove26-venv``, where ``tools/bootstrap`` installs ``trove==26.0.0``
from PyPI, and uses Trove 26's own code over the same RabbitMQ broker:

* its database (sqlite, Trove's own migrations) holds the instance row and
  the per-instance RPC key Trove generated; the agent gets that key in
  guest_info.conf, as the taskmanager injects it;
* its taskmanager-side client ``trove.guestagent.api.API``, encrypting with
  that key, prepares the guest and calls it;
* its conductor manager, behind its ``ConductorHostSerializer``, decrypts
  what the agent sends and writes the status into Trove's database.

The agent's ``conductor_queue`` is a queue only that Trove 26 conductor
serves, so the ``ConductorListener`` of the other tests never takes its
messages.  A missing Trove 26 venv fails the test; it is never skipped.
"""

import json
import os
import subprocess
import uuid

import pytest

from integration.services import base

TROVE26_PYTHON = base.REPO_ROOT / '.cache' / 'trove26-venv' / 'bin' / 'python'
DRIVER = base.REPO_ROOT / 'integration' / 'trove26' / 'drive.py'


def _tail(path, chars=4000):
    try:
        return path.read_text(errors='replace')[-chars:]
    except OSError:
        return '(no %s)' % path


def _drive(step, request, workdir, timeout, agent=None):
    """Run one driver step; its JSON answer, or fail with the logs."""
    if not TROVE26_PYTHON.exists():
        pytest.fail("%s missing: run tools/bootstrap (it installs "
                    "trove==26.0.0 there)" % TROVE26_PYTHON, pytrace=False)
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'PYTHONHOME')}
    proc = subprocess.run(
        [str(TROVE26_PYTHON), str(DRIVER), step], input=json.dumps(request),
        capture_output=True, text=True, cwd=workdir, env=env,
        timeout=base.scaled(timeout))
    lines = proc.stdout.strip().splitlines()
    answer = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0 or not answer.get('ok'):
        pytest.fail("drive.py %s failed (exit %s)\nanswer: %s\nstderr: %s\n"
                    "--- Trove 26 log:\n%s\n--- agent log:\n%s" % (
                        step, proc.returncode,
                        json.dumps(answer, indent=1)[-6000:],
                        proc.stderr[-3000:],
                        _tail(workdir / 'trove26.log'),
                        agent.log_text()[-4000:] if agent else ''),
                    pytrace=False)
    return answer['result']


@pytest.fixture
def trove26_guest(tmp_path, rabbitmq, guest_factory):
    """An instance created by Trove 26 and its agent, not yet prepared."""
    workdir = tmp_path / 'trove26'
    workdir.mkdir()
    queue = 'trove-conductor-t26-%s' % uuid.uuid4().hex
    created = _drive('create', {'workdir': str(workdir),
                                'transport_url': rabbitmq.transport_url,
                                'conductor_queue': queue}, workdir, 60)
    guest = guest_factory('t26', guest_id=created['guest_id'],
                          key=created['key'],
                          options={'DEFAULT': {'conductor_queue': queue}})
    return workdir, guest


def _assert_guest_api(result):
    assert result['rpc_ping'] is True
    assert result['status_after_prepare'] == 'running'
    assert result['databases_after_prepare'] == ['orders']
    assert result['users_after_prepare'] == {'alice': ['orders']}
    assert result['list_databases_raw'] == [
        [{'_name': 'orders', '_collate': None, '_character_set': None}],
        None]
    assert result['databases_after_create'] == ['invoices', 'orders']
    alice = result['get_user_alice']
    assert alice['_name'] == 'alice' and alice['_host'] == '%'
    assert result['get_user_missing'] is None
    assert result['list_access_alice'] == ['invoices', 'orders']
    assert result['users_after_grant'] == {'alice': ['invoices', 'orders']}
    assert result['is_root_enabled_after_prepare'] is True
    assert result['enable_root']['name'] == 'root'
    assert len(result['enable_root']['password'] or '') >= 16
    assert result['is_root_enabled_after_enable'] is True
    volume = result['volume_info']
    assert volume['total_blocks'] > 0 and volume['block_size'] > 0
    assert 0 <= volume['used'] <= volume['total']
    shown = result['trove_show_volume']
    assert shown['volume_used'] == volume['used'], shown
    assert shown['volume_total'] == volume['total'], shown


def _assert_not_supported(result):
    """Trove's client wraps every remote error in its GuestError; what it
    wraps is Trove's own DatastoreOperationNotSupported, rebuilt by
    oslo.messaging from trove.common.exception, not a TypeError,
    AttributeError or a bare RemoteError."""
    for method, outcome in result['unsupported'].items():
        assert outcome['is_guest_error'], (method, outcome)
        assert outcome['cause_is_not_supported'], (method, outcome)
        assert 'not supported' in outcome['message'], (method, outcome)


def _assert_conductor(result):
    known = set(result['trove_status_descriptions'])
    heartbeats = sorted((c for c in result['conductor_calls']
                         if c['method'] == 'heartbeat'),
                        key=lambda c: c['sent'])
    assert heartbeats, result['conductor_calls']
    for call in result['conductor_calls']:
        assert 'error' not in call, call
    statuses = [c['payload']['service_status'] for c in heartbeats]
    assert set(statuses) <= known, statuses
    assert statuses[0] == 'building' and 'running' in statuses, statuses
    assert result['trove_service_status'] == 'running'
    # prepare had a root password: the agent's report_root made Trove's
    # conductor write the root history.
    assert [c for c in result['conductor_calls']
            if c['method'] == 'report_root'], result['conductor_calls']
    assert result['trove_root_history'] is True
    # The notification of each create_database cast came back through
    # Trove's conductor: "end" for the created one, "error" (an instance
    # fault in Trove's database) for the name CouchDB refuses.
    by_guest = [(e['event_type'], e['qualifier'])
                for e in result['notifications']
                if e['server_type'] == 'guest']
    assert ('database_create', 'end') in by_guest, result['notifications']
    assert ('database_create', 'error') in by_guest, result['notifications']
    assert any('BadName' in m for m in result['trove_instance_faults']), (
        result['trove_instance_faults'])


def _assert_couchdb(guest, result):
    alice = guest.session('alice', 'alice-pw-1')
    for db in ('orders', 'invoices'):
        answer = alice.put(guest.url(db, 'doc-1'), json={'by': 'alice'})
        assert answer.status_code == 201, (db, answer.text)
    root = guest.session('root', result['enable_root']['password'])
    assert root.get(guest.config_url('admins')).status_code == 200
    admin = guest.session('root', result['enable_root']['password'])
    assert admin.get(guest.url('BadName')).status_code in (400, 404)


def test_trove26_control_plane_drives_the_agent(trove26_guest):
    workdir, guest = trove26_guest
    result = _drive('run', {'workdir': str(workdir), 'guest_id': guest.id,
                            'mount_point': str(guest.couchdb.data_dir)},
                    workdir, 300, agent=guest.agent)
    _assert_guest_api(result)
    _assert_not_supported(result)
    # Trove's own client reads the replica context a replica is given.
    assert result['replica_context'] == {
        'replication_strategy': 'CouchDBReplication',
        'master_keys': ['api_version', 'databases', 'guest_id', 'password',
                        'url', 'user']}, result['replica_context']
    assert result['backup_required_for_replication'] is True
    shown = result['diagnostics_view']['diagnostics']
    assert shown['version'] and shown['threads'] > 1, shown
    assert 0 < shown['vmRss'] <= shown['vmHwm'], shown
    _assert_conductor(result)
    _assert_couchdb(guest, result)
    # Trove 26 computes `trove show`'s volume_used_percent from the
    # avail_blocks, free_blocks and total_blocks the guest reports.
    assert 'volume_used_percent' in result['trove_show_volume'], result
