"""An upgrade as Trove drives it: pre_upgrade, a new root disk, post_upgrade.

The "root disk" of a simulated guest is everything outside the data
directory: the agent's state directory, CouchDB's configuration directory
and pouchdb-server's own config file (where it keeps the server admins, as
CouchDB 1.6 keeps them in local.ini).  Between the two calls the agent is
stopped and all of that is deleted, as a rebuild from a new image would.
"""

import shutil

import pytest

from integration.scenario import control_plane

_db = control_plane.database


@pytest.fixture
def upgradable(guest_factory, tmp_path):
    # guest_factory keeps a guest's pouchdb-server under tmp_path/<name>.
    pouchdb_config = tmp_path / 'upgraded' / 'couchdb' / 'etc' / 'config.json'
    preserved = ['local.ini', 'local.d', 'vm.args', str(pouchdb_config)]
    guest = guest_factory('upgraded', options={
        'couchdb': {'upgrade_preserved_files': ', '.join(preserved)}})
    assert guest.couchdb.config_file == pouchdb_config
    return guest


def test_an_upgrade_keeps_users_data_root_and_the_uuid(upgradable):
    guest = upgradable
    message = guest.prepare_and_wait(
        databases=[_db('shop')], root_password='root-pw',
        users=[{'_name': 'alice', '_password': 'alice-pw', '_host': '%',
                '_databases': [_db('shop')]}])
    assert message.kwargs['payload']['service_status'] == 'running'
    alice = guest.session('alice', 'alice-pw')
    assert alice.put(guest.url('shop', 'doc-1'), json={'v': 1},
                     timeout=10).status_code == 201
    uuid_before = alice.get(guest.url(), timeout=10).json()['uuid']

    info = guest.api.pre_upgrade()
    assert info['uuid'] == uuid_before
    assert str(guest.couchdb.config_file) in info['saved_files']

    # The new image: the agent and everything outside the data volume go.
    guest.agent.stop()
    guest.couchdb.stop()
    for path in (guest.agent.state_dir, guest.agent.workdir / 'couchdb-etc'):
        shutil.rmtree(path, ignore_errors=True)
    guest.couchdb.config_file.unlink()
    guest.agent.start()

    guest.api.post_upgrade(info)
    guest.conductor.wait_for_status(guest.id, 'running')
    assert alice.get(guest.url('shop', 'doc-1'), timeout=10).ok
    assert alice.get(guest.url(), timeout=10).json()['uuid'] == uuid_before
    assert [u['_name'] for u in guest.api.list_users()[0]] == ['alice']
    assert guest.api.is_root_enabled()
    assert guest.api.get_root_password() == 'root-pw'
    assert not (guest.couchdb.data_dir / '.trove-upgrade').exists()


def test_post_upgrade_without_pre_upgrade_is_a_clear_error(prepared_guest):
    with pytest.raises(Exception) as raised:
        prepared_guest.api.post_upgrade(
            {'mount_point': str(prepared_guest.couchdb.data_dir)})
    assert 'was pre_upgrade run' in str(raised.value)
