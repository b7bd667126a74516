"""trove.guestagent.volume against real loop devices.

Needs root, loop devices, e2fsprogs and xfsprogs; without them these tests
FAIL (they never skip).  Each test runs on ext3, ext4 and xfs unless it
narrows ``fstype``; xfs images are 320 MiB sparse files (mkfs.xfs refuses
less than 300 MB).  Every test uses its own image file, loop device and
fstab (a scratch file: /etc/fstab is never touched); teardown unmounts what
the test mounted, detaches the loop device and removes the image.

On a loop device the agent runs as user trove, as on a guest: every command
it runs as root goes through a stand-in for "sudo -n" that runs it only if
the guest image's sudoers allows it (tests/sudoers.py), and a test fails if
the rule refused any.
"""

import os
import shutil
import subprocess
import sys
import threading

import pytest
from oslo_config import cfg

from tests import sudoers
from trove.common import exception
from trove.guestagent import volume

MIB = 1024 * 1024
EXT_FSTYPES = ['ext3', 'ext4']
FSTYPES = EXT_FSTYPES + ['xfs']
# Size of each file system's image (a sparse file): mkfs.xfs refuses one
# under 300 MB (xfsprogs 5.19 and later).
SIZE_MIB = {'ext3': 64, 'ext4': 64, 'xfs': 320}
# What the root of a new file system holds.
EMPTY_ROOT = {'ext3': ['lost+found'], 'ext4': ['lost+found'], 'xfs': []}
FSTAB_HEAD = ['# /etc/fstab: static file system information.',
              'UUID=1111-2222\t/\text4\terrors=remount-ro\t0\t1',
              '/dev/sr0\t/media/cdrom0\tudf,iso9660\tuser,noauto\t0\t0']


def _run(*argv):
    return subprocess.run(argv, check=True, capture_output=True,
                          text=True).stdout.strip()


def _mounts():
    """(mount point, source, options) of every mount, from mountinfo."""
    with open('/proc/self/mountinfo', encoding='utf-8') as info:
        for line in info:
            entry = volume._parse_mountinfo(line)
            yield entry.mount_point, entry.source, line.split()[5]


@pytest.fixture(autouse=True)
def _clean_conf():
    yield
    cfg.CONF.reset()


@pytest.fixture
def fstab(tmp_path, monkeypatch):
    path = tmp_path / 'fstab'
    path.write_text('\n'.join(FSTAB_HEAD) + '\n')
    cfg.CONF.set_override('fstab_path', str(path))
    return path


def _require_root_and_loop():
    # The real uid: the agent's effective one is made trove's (``sudo``).
    assert os.getuid() == 0, 'volume tests must run as root'
    assert os.path.exists('/dev/loop-control'), 'no loop device support'
    for tool in ('losetup', 'mkfs', 'blkid', 'resize2fs', 'e2fsck',
                 'mkfs.xfs', 'xfs_growfs', 'xfs_repair'):
        assert shutil.which(tool), f'{tool} is not installed'


class Loop:
    """A loop device over an image file in the test's scratch directory."""

    def __init__(self, tmp_path, size_mib=64):
        _require_root_and_loop()
        self.tmp_path = tmp_path
        self.size_mib = size_mib
        self.image = tmp_path / 'volume.img'
        _run('truncate', '-s', f'{size_mib}M', str(self.image))
        self.device = _run('losetup', '-f', '--show', str(self.image))

    def grow(self, size_mib):
        self.size_mib = size_mib
        _run('truncate', '-s', f'{size_mib}M', str(self.image))
        _run('losetup', '-c', self.device)

    def cleanup(self):
        mine = [point for point, source, _ in _mounts()
                if source == self.device
                or point.startswith(str(self.tmp_path))]
        for point in reversed(mine):
            subprocess.run(['umount', point], check=False)
        _run('losetup', '-d', self.device)
        # mkfs.xfs writes a 64 MiB log: free the space at once.
        self.image.unlink()


@pytest.fixture(params=FSTYPES)
def fstype(request):
    """Each file system in turn; a test narrows the list by parametrizing
    ``fstype`` itself."""
    return request.param


@pytest.fixture
def sudo(tmp_path, fstab, monkeypatch):
    """The agent runs as user trove; its root helper runs only what the
    guest image's sudoers allows.  The scratch fstab stands for
    /etc/fstab."""
    rule = sudoers.Rule.install(tmp_path / 'sudoers')
    rule.stands_for(fstab, '/etc/fstab')
    cfg.CONF.set_override('root_helper', f'{rule.stand_in()} -n')
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    yield rule
    assert rule.refused() == [], "the guest image's sudoers refused these"


@pytest.fixture
def loop(tmp_path, fstab, fstype, sudo):
    device = Loop(tmp_path, SIZE_MIB[fstype])
    yield device
    device.cleanup()


@pytest.fixture
def formatted(fstype, loop):
    """A VolumeDevice formatted as ``[couchdb] volume_fstype = fstype``."""
    cfg.CONF.set_override('volume_fstype', fstype, group='couchdb')
    device = volume.VolumeDevice(loop.device)
    device.format()
    return device


def _fstab_lines(fstab):
    return fstab.read_text().splitlines()


def _blkid(device, tag):
    return _run('blkid', '-p', '-o', 'value', '-s', tag, device)


def _reserved_and_total_blocks(device):
    """An ext file system's blocks reserved for root, and all its blocks."""
    header = _run('dumpe2fs', '-h', device)
    fields = dict(line.split(':', 1) for line in header.splitlines()
                  if ':' in line)
    return int(fields['Reserved block count']), int(fields['Block count'])


def test_format_makes_the_configured_file_system(formatted, fstype):
    # [couchdb] format_options unset: the file system's own default (an
    # ext option such as -m 5 would make mkfs.xfs fail).
    assert cfg.CONF.couchdb.format_options is None
    assert _blkid(formatted.device_path, 'TYPE') == fstype


@pytest.mark.parametrize('fstype', EXT_FSTYPES)
def test_ext_format_reserves_5_percent_by_default(formatted):
    # format_options unset means "-m 5" for ext: 5 % of the blocks reserved.
    reserved, blocks = _reserved_and_total_blocks(formatted.device_path)
    assert reserved == pytest.approx(blocks * 0.05, abs=2)


@pytest.mark.parametrize('fstype, options', [
    ('ext4', "-m 1 -L 'couch data'"), ('xfs', "-L 'couch data'")])
def test_format_options_are_used_as_given(fstype, options, loop):
    cfg.CONF.set_override('format_options', options, group='couchdb')
    volume.VolumeDevice(loop.device, fstype).format()
    assert _blkid(loop.device, 'TYPE') == fstype
    assert _blkid(loop.device, 'LABEL') == 'couch data'
    if fstype == 'ext4':  # -m 1 instead of the default -m 5
        reserved, blocks = _reserved_and_total_blocks(loop.device)
        assert reserved == pytest.approx(blocks * 0.01, abs=2)


@pytest.mark.parametrize('fstype', ['xfs'])
def test_xfs_format_keeps_an_existing_file_system_unless_forced(
        formatted, tmp_path):
    mount_point = tmp_path / 'data'
    formatted.mount(str(mount_point), write_to_fstab=False)
    (mount_point / 'keep').write_text('kept')
    formatted.unmount(str(mount_point))
    uuid = _blkid(formatted.device_path, 'UUID')
    with pytest.raises(exception.VolumeError) as caught:
        formatted.format()
    assert 'appears to contain an existing filesystem' in str(caught.value)
    assert _blkid(formatted.device_path, 'UUID') == uuid

    formatted.format(options='-f')  # what format_options = -f would do
    assert _blkid(formatted.device_path, 'UUID') != uuid
    formatted.mount(str(mount_point), write_to_fstab=False)
    assert os.listdir(mount_point) == []


def test_mount_write_unmount_remount(formatted, tmp_path, fstab):
    mount_point = tmp_path / 'data dir'  # fstab writes the space as \040
    formatted.mount(str(mount_point))
    assert volume.is_mounted(str(mount_point))
    (mount_point / 'doc.json').write_text('{"a": 1}')
    uuid = _run('blkid', '-p', '-o', 'value', '-s', 'UUID',
                formatted.device_path)
    entry = (f'UUID={uuid}\t{str(mount_point).replace(" ", chr(92) + "040")}'
             f'\t{formatted.fstype}\tdefaults,noatime\t0\t0')
    assert _fstab_lines(fstab) == FSTAB_HEAD + [entry]

    formatted.mount(str(mount_point))  # idempotent: no second mount/entry
    assert [p for p, _, _ in _mounts()].count(str(mount_point)) == 1
    assert _fstab_lines(fstab) == FSTAB_HEAD + [entry]

    formatted.unmount(str(mount_point))
    assert not volume.is_mounted(str(mount_point))
    assert not (mount_point / 'doc.json').exists()
    assert _fstab_lines(fstab) == FSTAB_HEAD
    formatted.unmount(str(mount_point))  # not mounted: no error

    formatted.mount(str(mount_point), write_to_fstab=False)
    assert (mount_point / 'doc.json').read_text() == '{"a": 1}'
    assert _fstab_lines(fstab) == FSTAB_HEAD


def test_mount_options(formatted, tmp_path, fstab):
    mount_point = tmp_path / 'data'
    formatted.mount(str(mount_point), options='noexec,nodev')
    options = {point: opts for point, _, opts in _mounts()}[str(mount_point)]
    assert {'noexec', 'nodev'} <= set(options.split(','))
    assert _fstab_lines(fstab)[-1].split('\t')[3] == 'noexec,nodev'


def test_mount_refuses_a_busy_mount_point(formatted, tmp_path):
    mount_point = tmp_path / 'data'
    mount_point.mkdir()
    _run('mount', '-t', 'tmpfs', 'tmpfs', str(mount_point))
    with pytest.raises(exception.VolumeError) as caught:
        formatted.mount(str(mount_point))
    assert 'tmpfs is mounted on' in str(caught.value)


def test_unmount_names_the_process_that_keeps_it_busy(formatted, tmp_path):
    mount_point = tmp_path / 'data'
    formatted.mount(str(mount_point), write_to_fstab=False)
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time; f = open(sys.argv[1], "w");'
         ' print("open", flush=True); time.sleep(60)',
         str(mount_point / 'held.log')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'open\n'
        with pytest.raises(exception.VolumeError) as caught:
            formatted._umount(str(mount_point), timeout=1)
        assert f'{holder.pid} (python' in str(caught.value)
        assert volume.is_mounted(str(mount_point))
    finally:
        holder.kill()
        holder.wait()
    formatted.unmount(str(mount_point))
    assert not volume.is_mounted(str(mount_point))


def _make_tree(source):
    (source / 'shards').mkdir(parents=True)
    (source / 'shards' / 'db.couch').write_bytes(os.urandom(100_000))
    (source / '_users.couch').write_text('users')
    (source / 'latest').symlink_to('shards/db.couch')
    os.chmod(source / 'shards', 0o750)
    os.chmod(source / 'shards' / 'db.couch', 0o640)
    os.chmod(source / '_users.couch', 0o600)
    for path in (source / 'shards', source / 'shards' / 'db.couch',
                 source / '_users.couch'):
        os.chown(path, 4321, 4322)
    os.chown(source / 'latest', 4321, 4322, follow_symlinks=False)


def _snapshot(root):
    """Relative path -> (uid, gid, mode, content or link target)."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            if os.path.islink(path):
                payload = os.readlink(path)
            elif os.path.isdir(path):
                payload = None
            else:
                with open(path, 'rb') as handle:
                    payload = handle.read()
            found[os.path.relpath(path, root)] = (
                info.st_uid, info.st_gid, info.st_mode, payload)
    return found


def test_migrate_data_keeps_owners_and_modes(formatted, fstype, tmp_path):
    source = tmp_path / 'couchdb'
    _make_tree(source)
    before = _snapshot(source)
    formatted.migrate_data(str(source))
    assert not [p for p, _, _ in _mounts() if 'trove-volume-' in p]
    assert _snapshot(source) == before  # the source is left as it was

    mount_point = tmp_path / 'data'
    formatted.mount(str(mount_point), write_to_fstab=False)
    copied = _snapshot(mount_point)
    for name in EMPTY_ROOT[fstype]:
        copied.pop(name)
    assert copied == before
    assert copied['shards/db.couch'][:3] == (4321, 4322, 0o100640)


@pytest.mark.parametrize('make_source', [
    lambda path: None, lambda path: path.mkdir()],
    ids=['missing', 'empty'])
def test_migrate_nothing_is_a_noop(formatted, fstype, tmp_path,
                                   make_source):
    source = tmp_path / 'couchdb'
    make_source(source)
    formatted.migrate_data(str(source))
    mount_point = tmp_path / 'data'
    formatted.mount(str(mount_point), write_to_fstab=False)
    assert os.listdir(mount_point) == EMPTY_ROOT[fstype]


def test_filesystem_stats_match_statvfs(formatted, loop, tmp_path):
    mount_point = tmp_path / 'data'
    formatted.mount(str(mount_point), write_to_fstab=False)
    (mount_point / 'blob').write_bytes(os.urandom(8 * MIB))
    os.sync()
    stats = volume.get_filesystem_stats(str(mount_point))
    raw = os.statvfs(mount_point)
    assert stats['block_size'] == raw.f_bsize
    assert stats['total_blocks'] == raw.f_blocks
    assert stats['free_blocks'] == raw.f_bfree
    assert stats['avail_blocks'] == raw.f_bavail
    total = raw.f_blocks * raw.f_bsize
    free = raw.f_bfree * raw.f_bsize
    assert stats['total'] == round(total / 1024 ** 3, 2)
    assert stats['free'] == free  # bytes, as upstream Trove reports it
    assert stats['used'] == round((total - free) / 1024 ** 3, 2)
    # The device minus journal and metadata (xfs: a 64 MiB log).
    assert 0.75 * loop.size_mib * MIB <= total <= loop.size_mib * MIB
    assert free < total - 8 * MIB
    assert set(stats) == {'block_size', 'total_blocks', 'free_blocks',
                          'avail_blocks', 'total', 'free', 'used'}


def test_filesystem_stats_of_a_missing_path(tmp_path):
    missing = str(tmp_path / 'nowhere')
    with pytest.raises(exception.VolumeError) as caught:
        volume.get_filesystem_stats(missing)
    assert missing in str(caught.value)


def _has_cap_sys_resource():
    """Online ext resize (EXT4_IOC_RESIZE_FS) needs CAP_SYS_RESOURCE."""
    with open('/proc/self/status', encoding='utf-8') as status:
        for line in status:
            if line.startswith('CapEff:'):
                return bool(int(line.split()[1], 16) & (1 << 24))
    return False


# Some containers drop CAP_SYS_RESOURCE even for root: the kernel then
# refuses online resizing and resize2fs says "Permission denied".  The
# test is then expected to fail with exactly that VolumeError (strict: it
# must pass wherever the capability is there).
@pytest.mark.xfail(condition=not _has_cap_sys_resource(), strict=True,
                   raises=exception.VolumeError,
                   reason='no CAP_SYS_RESOURCE: online resize is refused')
@pytest.mark.parametrize('fstype', EXT_FSTYPES)
def test_resize_online(formatted, loop, tmp_path, fstab):
    mount_point = tmp_path / 'data'
    formatted.mount(str(mount_point))
    (mount_point / 'keep').write_text('kept')
    before = os.statvfs(mount_point).f_blocks
    loop.grow(128)
    try:
        formatted.resize_fs(str(mount_point), online=True)
    except exception.VolumeError as err:
        assert 'Permission denied to resize' in str(err)
        assert (mount_point / 'keep').read_text() == 'kept'
        raise
    after = os.statvfs(mount_point).f_blocks
    assert after > 1.9 * before
    assert (mount_point / 'keep').read_text() == 'kept'


# xfs_growfs needs CAP_SYS_ADMIN only: a mounted xfs grows for real here.
@pytest.mark.parametrize('fstype', ['xfs'])
def test_resize_online_grows_a_mounted_xfs(formatted, loop, tmp_path,
                                           fstab):
    mount_point = tmp_path / 'data'
    formatted.mount(str(mount_point))
    entries = _fstab_lines(fstab)
    before = os.statvfs(mount_point)
    with open(mount_point / 'open.log', 'w') as held:  # in use throughout
        held.write('before\n')
        loop.grow(2 * loop.size_mib)
        formatted.resize_fs(str(mount_point), online=True)
        held.write('after\n')
    after = os.statvfs(mount_point)
    assert after.f_blocks > 1.9 * before.f_blocks
    assert after.f_bavail * after.f_bsize > before.f_blocks * before.f_bsize
    assert (mount_point / 'open.log').read_text() == 'before\nafter\n'
    assert _fstab_lines(fstab) == entries


def test_resize_offline(formatted, loop, tmp_path, fstab):
    mount_point = tmp_path / 'data'
    formatted.mount(str(mount_point), options='noatime,nodev')
    (mount_point / 'keep').write_text('kept')
    entries = _fstab_lines(fstab)
    before = os.statvfs(mount_point).f_blocks
    loop.grow(2 * loop.size_mib)
    formatted.resize_fs(str(mount_point), online=False)
    assert volume.is_mounted(str(mount_point))
    assert os.statvfs(mount_point).f_blocks > 1.9 * before
    assert (mount_point / 'keep').read_text() == 'kept'
    assert _fstab_lines(fstab) == entries
    options = {point: opts for point, _, opts in _mounts()}[str(mount_point)]
    assert 'nodev' in options.split(',')  # remounted with its fstab options


def test_resize_online_needs_the_volume_mounted(formatted, tmp_path):
    with pytest.raises(exception.VolumeError) as caught:
        formatted.resize_fs(str(tmp_path / 'data'), online=True)
    assert 'not mounted' in str(caught.value)


def _damage_xfs_agi(device):
    """Overwrite the first allocation group's inode header (AGI, the
    third 512-byte sector); the superblock in front of it is kept."""
    fd = os.open(device, os.O_WRONLY)
    try:
        os.pwrite(fd, b'\xff' * 512, 2 * 512)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize('fstype', ['xfs'])
def test_resize_offline_refuses_a_damaged_xfs(formatted, loop, tmp_path):
    mount_point = tmp_path / 'data'
    formatted.mount(str(mount_point))
    (mount_point / 'keep').write_text('kept')
    formatted.unmount(str(mount_point))
    _damage_xfs_agi(formatted.device_path)
    loop.grow(2 * loop.size_mib)
    with pytest.raises(exception.VolumeError) as caught:
        formatted.resize_fs(str(mount_point), online=False)
    message = str(caught.value)
    assert f'xfs_repair of {formatted.device_path} exited with 1' in message
    assert 'bad magic # 0xffffffff for agi 0' in message
    assert not volume.is_mounted(str(mount_point))  # left for an operator


@pytest.mark.parametrize('fstype', ['ext4'])
def test_resize_refuses_a_device_without_a_known_file_system(loop, tmp_path):
    with pytest.raises(exception.VolumeError) as caught:
        volume.VolumeDevice(loop.device).resize_fs(str(tmp_path / 'data'))
    assert str(caught.value).endswith(
        f'cannot resize {loop.device}: file system (none found) is not one '
        'of ext2, ext3, ext4, xfs')


def test_format_refuses_a_regular_file(tmp_path):
    image = tmp_path / 'plain.img'
    image.write_bytes(b'\0' * MIB)
    with pytest.raises(exception.VolumeError) as caught:
        volume.VolumeDevice(str(image)).format(fstype='ext4')
    assert 'not a block device' in str(caught.value)
    assert image.read_bytes() == b'\0' * MIB


class _Clock:
    """The volume module's clock in a test: a sleep passes at once, and
    sleeping ``limit`` times fails the test (a wait that would not end)."""

    def __init__(self, limit):
        self.now = 0.0
        self.limit = limit
        self.slept = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        assert len(self.slept) < self.limit, (
            f'still waiting after {self.now} s and {self.limit} sleeps')
        self.slept.append(seconds)
        self.now += seconds


def test_format_gives_up_on_a_device_that_never_appears(tmp_path,
                                                        monkeypatch):
    clock = _Clock(limit=100)
    monkeypatch.setattr(volume, 'time', clock)
    monkeypatch.setattr(volume, 'DEVICE_POLL_INTERVAL', 0.5)
    missing = str(tmp_path / 'vdz')
    with pytest.raises(exception.VolumeError) as caught:
        volume.VolumeDevice(missing).format(timeout=3)
    assert f'device {missing} did not appear' in str(caught.value)
    # Looked for it every 0.5 s until its 3 s were over, then gave up.
    assert clock.slept == [0.5] * 6


@pytest.mark.parametrize('fstype', ['ext4'])
def test_format_waits_for_a_device_that_appears_late(loop, tmp_path, sudo):
    late = tmp_path / 'vdb'  # a symlink to the loop device, made later
    sudo.stands_for(late, '/dev/vdb')
    timer = threading.Timer(1.0, os.symlink, (loop.device, late))
    timer.start()
    try:
        volume.VolumeDevice(str(late)).format(fstype='ext4', timeout=20)
    finally:
        timer.cancel()
    assert _run('blkid', '-p', '-o', 'value', '-s', 'TYPE',
                loop.device) == 'ext4'


def test_is_mounted(tmp_path):
    assert volume.is_mounted('/')
    assert volume.is_mounted('/proc/')
    assert not volume.is_mounted(str(tmp_path))
    assert not volume.is_mounted(str(tmp_path / 'missing'))


# --- fstab ---------------------------------------------------------------

def test_fstab_entries_replace_and_remove(fstab):
    volume.add_fstab_entry('UUID=a', '/var/lib/couchdb/', 'ext3', 'defaults')
    volume.add_fstab_entry('UUID=a', '/var/lib/couchdb', 'ext3', 'defaults')
    assert _fstab_lines(fstab) == FSTAB_HEAD + [
        'UUID=a\t/var/lib/couchdb\text3\tdefaults\t0\t0']
    mtime = os.stat(fstab).st_mtime_ns
    volume.add_fstab_entry('UUID=a', '/var/lib/couchdb', 'ext3', 'defaults')
    assert os.stat(fstab).st_mtime_ns == mtime  # unchanged: not rewritten
    volume.add_fstab_entry('UUID=b', '/var/lib/couchdb', 'ext4', 'noatime')
    assert _fstab_lines(fstab) == FSTAB_HEAD + [
        'UUID=b\t/var/lib/couchdb\text4\tnoatime\t0\t0']
    volume.remove_fstab_entry('/var/lib/couchdb')
    assert _fstab_lines(fstab) == FSTAB_HEAD
    volume.remove_fstab_entry('/var/lib/couchdb')
    assert _fstab_lines(fstab) == FSTAB_HEAD
    assert oct(os.stat(fstab).st_mode & 0o777) == '0o644'
    assert sorted(os.listdir(fstab.parent)) == ['fstab']  # no scratch left


def test_fstab_is_created_when_missing(tmp_path, monkeypatch):
    path = tmp_path / 'etc' / 'fstab'
    path.parent.mkdir()
    cfg.CONF.set_override('fstab_path', str(path))
    volume.add_fstab_entry('/dev/vdb', '/mnt/a b', 'ext4', 'defaults')
    assert path.read_text() == '/dev/vdb\t/mnt/a\\040b\text4\tdefaults\t0\t0\n'


def test_fstab_through_the_root_helper_when_not_root(fstab, sudo):
    volume.add_fstab_entry('UUID=c', '/srv/db', 'ext4', 'defaults')
    assert _fstab_lines(fstab) == FSTAB_HEAD + [
        'UUID=c\t/srv/db\text4\tdefaults\t0\t0']
    programs = [argv[0] for argv, allowed in sudo.asked() if allowed]
    assert programs == ['cp', 'chmod', 'mv']
    assert oct(os.stat(fstab).st_mode & 0o777) == '0o644'
