"""The data volume through the guest API, on a real loop device.

prepare(device_path=...) formats the volume, moves CouchDB's data onto it
and mounts it on the data directory; resize_fs grows it; unmount_volume
takes it away.  The agent's fstab is a scratch file of the test.  The
volume is ext3 ([couchdb] volume_fstype's default) or xfs, which grows
while mounted without CAP_SYS_RESOURCE.
"""

import contextlib
import os
import subprocess
import time

import pytest
import requests

from integration.services import base
from trove.common import exception

MiB = 1024 * 1024


def _run(*argv):
    return subprocess.run(argv, check=True, capture_output=True,
                          text=True).stdout.strip()


def _has_cap_sys_resource():
    # Growing a mounted ext4 needs CAP_SYS_RESOURCE; some sandboxes drop it.
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('CapEff:'):
                return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def _mounted(path):
    with open('/proc/self/mountinfo') as info:
        return any(line.split()[4] == str(path) for line in info)


def _mounted_fstype(path):
    """The type of the file system mounted on ``path`` (the top one)."""
    found = None
    with open('/proc/self/mountinfo') as info:
        for line in info:
            fields = line.split()
            if fields[4] == str(path):
                found = fields[fields.index('-', 6) + 1]
    return found


def _user(name, password, databases):
    """A user as Trove's API serialises it for the guest."""
    return {'_name': name, '_password': password, '_host': '%',
            '_databases': [{'_name': db, '_collate': None,
                            '_character_set': None} for db in databases]}


@pytest.fixture
def loop_device(tmp_path, request):
    """A loop device over a sparse image of ``request.param`` MiB
    (default 64)."""
    assert os.geteuid() == 0, 'the volume tests must run as root'
    image = tmp_path / 'volume.img'
    image.write_bytes(b'')
    os.truncate(image, getattr(request, 'param', 64) * MiB)
    device = _run('losetup', '-f', '--show', str(image))
    yield device, image
    with contextlib.suppress(subprocess.CalledProcessError):
        for line in open('/proc/self/mountinfo'):
            fields = line.split()
            if fields[-2] == device:
                _run('umount', fields[4])
    _run('losetup', '-d', device)
    image.unlink()


@pytest.fixture
def volume_guest(guest_factory, tmp_path, request):
    """A guest with a scratch fstab and the ``[couchdb]`` options of
    ``request.param``, if any."""
    fstab = tmp_path / 'fstab'
    fstab.write_text('# scratch fstab of the test\n')
    guest = guest_factory(options={'DEFAULT': {'fstab_path': str(fstab)},
                                   'couchdb': getattr(request, 'param', {})})
    guest.fstab = fstab
    return guest


def test_volume_formatted_mounted_grown_and_unmounted(volume_guest,
                                                     loop_device):
    g = volume_guest
    device, image = loop_device
    data_dir = g.couchdb.data_dir
    message = g.prepare_and_wait(device_path=device,
                                 databases=[{'_name': 'onvolume'}])
    assert message.kwargs['payload']['service_status'] == 'running', (
        g.agent.log_text()[-3000:])
    assert _mounted(data_dir)
    assert str(data_dir) in g.fstab.read_text()
    admin = requests.get(g.couchdb.url + '/onvolume', timeout=5)
    assert admin.status_code in (200, 401)
    before = g.api.get_filesystem_stats(str(data_dir))
    assert 0.04 < before['total'] < 0.07

    os.truncate(image, 128 * MiB)
    _run('losetup', '-c', device)
    if _has_cap_sys_resource():
        g.api.resize_fs(device_path=device, mount_point=str(data_dir),
                        online=True)
    else:
        # Without CAP_SYS_RESOURCE the kernel refuses an online grow: the
        # agent must say so clearly and leave the volume as it was.
        with pytest.raises(exception.VolumeError) as err:
            g.api.resize_fs(device_path=device, mount_point=str(data_dir),
                            online=True)
        assert 'resize' in str(err.value).lower()
        assert _mounted(data_dir)
        g.api.stop_db()
        g.api.resize_fs(device_path=device, mount_point=str(data_dir),
                        online=False)
        g.api.start_db_with_conf_changes(None)
    after = g.api.get_filesystem_stats(str(data_dir))
    assert after['total_blocks'] > before['total_blocks'] * 1.8
    g.conductor.wait_for_status(g.id, 'running', timeout=base.scaled(20))

    g.api.stop_db()
    g.api.unmount_volume(device_path=device, mount_point=str(data_dir))
    assert not _mounted(data_dir)
    assert str(data_dir) not in g.fstab.read_text()


# mkfs.xfs refuses a file system under 300 MB: a 320 MiB sparse image.
@pytest.mark.parametrize('loop_device', [320], indirect=True)
@pytest.mark.parametrize('volume_guest', [{'volume_fstype': 'xfs'}],
                         indirect=True)
def test_xfs_volume_grows_online_while_couchdb_runs(volume_guest,
                                                    loop_device):
    g = volume_guest
    device, image = loop_device
    data_dir = g.couchdb.data_dir
    message = g.prepare_and_wait(
        device_path=device, databases=[{'_name': 'onvolume'}],
        users=[_user('alice', 'alice-pw-1', ['onvolume'])])
    assert message.kwargs['payload']['service_status'] == 'running', (
        g.agent.log_text()[-3000:])
    assert _mounted_fstype(data_dir) == 'xfs'
    uuid = _run('blkid', '-p', '-o', 'value', '-s', 'UUID', device)
    assert f'UUID={uuid}\t{data_dir}\txfs\t' in g.fstab.read_text()
    alice = g.session('alice', 'alice-pw-1')
    put = alice.put(g.url('onvolume', 'before'), json={'grown': False})
    assert put.status_code == 201, put.text
    before = g.api.get_filesystem_stats(str(data_dir))

    os.truncate(image, 640 * MiB)
    _run('losetup', '-c', device)
    since = time.time()
    g.api.resize_fs(device_path=device, mount_point=str(data_dir),
                    online=True)
    after = g.api.get_filesystem_stats(str(data_dir))
    assert after['total_blocks'] > before['total_blocks'] * 1.9
    # CouchDB kept running on the volume: no restart, the data is there.
    assert alice.get(g.url('onvolume', 'before')).json()['grown'] is False
    put = alice.put(g.url('onvolume', 'after'), json={'grown': True})
    assert put.status_code == 201, put.text
    g.conductor.wait_for_status(g.id, 'running', timeout=20, since=since)
    assert set(g.conductor.statuses(g.id, since)) == {'running'}

    g.api.stop_db()
    g.api.unmount_volume(device_path=device, mount_point=str(data_dir))
    assert not _mounted(data_dir)
    assert str(data_dir) not in g.fstab.read_text()
