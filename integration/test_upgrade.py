"""An upgrade as Trove drives it: pre_upgrade, a new root disk, post_upgrade.

The "root disk" of a simulated guest is everything outside the data
directory: the agent's state directory, CouchDB's configuration directory
(3.x: ``vm.args`` with the node name, ``local.ini``, ``local.d/``) and, for
pouchdb-server, its own config file (where it keeps the server admins, as
CouchDB 1.6 keeps them in local.ini).  Between the two calls the agent is
stopped and all of that is deleted, as a rebuild from a new image would.
"""

import shutil

import pytest

from integration.scenario import control_plane

_db = control_plane.database


@pytest.fixture
def upgradable(guest_factory, tmp_path, server_kind):
    preserved = ['local.ini', 'local.d', 'vm.args']
    if server_kind == 'pouchdb':
        # guest_factory keeps a guest's server under tmp_path/<name>.
        preserved.append(str(tmp_path / 'upgraded' / 'couchdb' / 'etc' /
                             'config.json'))
    guest = guest_factory('upgraded', options={
        'couchdb': {'upgrade_preserved_files': ', '.join(preserved)}})
    return guest


def _root_disk(guest):
    """What a rebuild from a new image loses."""
    paths = [guest.agent.state_dir, guest.agent.couchdb_config_dir]
    if guest.couchdb.kind == 'pouchdb':
        paths.append(guest.couchdb.config_file)
    return paths


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
    if guest.couchdb.kind == 'pouchdb':
        assert str(guest.couchdb.config_file) in info['saved_files']
    else:
        assert str(guest.agent.couchdb_config_dir / 'vm.args') in \
            info['saved_files']

    # The new image: the agent and everything outside the data volume go.
    guest.agent.stop()
    guest.couchdb.stop()
    for path in _root_disk(guest):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
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
