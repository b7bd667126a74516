"""The data volume: format, mount, migrate data onto it, resize, unmount.

ext2, ext3, ext4 and xfs are formatted, checked and grown; other file
systems are formatted and mounted only.

Every command goes through ``trove.common.process`` as root (through the
root helper when the agent is not root).  Mount state is read from
``/proc/self/mountinfo``; the fstab entry that remounts the volume at boot
names it by UUID and is rewritten atomically in ``[DEFAULT] fstab_path``,
read at call time.
"""

import collections
import os
import shlex
import stat
import tempfile
import time

from oslo_log import log as logging

from trove.common import cfg, exception, files, process

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

MOUNTINFO_PATH = '/proc/self/mountinfo'

# Seconds between two looks for a device node that has not appeared yet.
DEVICE_POLL_INTERVAL = 0.5
# Seconds an unmount waits for a process that just stopped to let go.
UMOUNT_BUSY_TIMEOUT = 15

EXT_FSTYPES = ('ext2', 'ext3', 'ext4')
XFS = 'xfs'
# The file systems resize_fs can grow.
RESIZABLE_FSTYPES = EXT_FSTYPES + (XFS,)

# mkfs options used when [couchdb] format_options is unset: 5 % of an ext
# file system's blocks reserved for root; mkfs.xfs's -m is something else.
_DEFAULT_FORMAT_OPTIONS = {fstype: '-m 5' for fstype in EXT_FSTYPES}

# e2fsck exit codes that mean "the file system is now clean".
_E2FSCK_OK = (0, 1)

MountEntry = collections.namedtuple(
    'MountEntry', ['mount_point', 'devno', 'fstype', 'source'])


def processes_using(path):
    """'<pid> (<command>)' for each process with a file, its working or root
    directory, or a mapping under ``path``: what ``fuser -m`` would name,
    to say why an unmount is refused."""
    path = os.path.realpath(path)
    prefix = path.rstrip('/') + '/'

    def under(target):
        target = target.removesuffix(' (deleted)')
        return target == path or target.startswith(prefix)

    found = []
    for entry in os.scandir('/proc'):
        if not entry.name.isdigit():
            continue
        links = [f'{entry.path}/cwd', f'{entry.path}/root']
        try:
            links += [f'{entry.path}/fd/{fd}'
                      for fd in os.listdir(f'{entry.path}/fd')]
            with open(f'{entry.path}/maps') as maps:
                mapped = [line.split(None, 5)[-1].strip() for line in maps]
            with open(f'{entry.path}/comm') as comm:
                name = comm.read().strip()
        except OSError:
            continue
        targets = []
        for link in links:
            try:
                targets.append(os.readlink(link))
            except OSError:
                continue
        if any(under(t) for t in targets + mapped):
            found.append(f'{entry.name} ({name})')
    return found


class VolumeDevice:
    """One block device that holds (or will hold) the datastore's data."""

    def __init__(self, device_path, fstype=None):
        self.device_path = device_path
        self._fstype = fstype

    @property
    def fstype(self):
        """The file system this device is formatted with or will be."""
        return self._fstype or CONF.couchdb.volume_fstype

    def format(self, fstype=None, options=None, timeout=None):
        """Make a new file system on the device (all data on it is lost).

        :param fstype: defaults to this device's ``fstype``.
        :param options: mkfs options, a str (split like a shell would) or
            a list; defaults to ``[couchdb] format_options`` or, when that
            is unset, to the file system's own (``default_format_options``).
        :param timeout: seconds for waiting for the device node and
            formatting; defaults to ``[couchdb] volume_format_timeout``.
        """
        fstype = fstype or self.fstype
        if options is None:
            options = CONF.couchdb.format_options
        if options is None:  # unset: the file system's own default
            options = default_format_options(fstype)
        if isinstance(options, str):
            options = shlex.split(options)
        deadline = time.monotonic() + (
            timeout or CONF.couchdb.volume_format_timeout)
        self._wait_for_device(deadline)
        self._check_block_device()
        LOG.info("Formatting %s as %s", self.device_path, fstype)
        self._run(['mkfs', '-t', fstype] + list(options) + [self.device_path],
                  'format', timeout=max(deadline - time.monotonic(), 1))
        self._check_format(fstype)

    def mount(self, mount_point, options=None, write_to_fstab=True):
        """Mount the device on ``mount_point`` (created if missing).

        Mounting it where it is already mounted does nothing; a mount point
        where another file system is mounted is refused.  With
        ``write_to_fstab`` the fstab entry (by UUID) is added or updated.
        """
        options = options or CONF.couchdb.mount_options
        probe = self._probe()
        fstype = probe.get('TYPE') or self.fstype
        if self._mounted_here(mount_point):
            LOG.debug("%s is already mounted on %s", self.device_path,
                      mount_point)
        else:
            self._mount(mount_point, fstype, options)
        if write_to_fstab:
            spec = (f"UUID={probe['UUID']}" if probe.get('UUID')
                    else self.device_path)
            add_fstab_entry(spec, mount_point, fstype, options)

    def unmount(self, mount_point):
        """Unmount ``mount_point`` and remove its fstab entry.

        A mount point where nothing is mounted is not an error.
        """
        if is_mounted(mount_point):
            LOG.info("Unmounting %s", mount_point)
            self._umount(mount_point)
        else:
            LOG.debug("%s is not mounted, nothing to unmount", mount_point)
        remove_fstab_entry(mount_point)

    def _umount(self, mount_point, timeout=UMOUNT_BUSY_TIMEOUT):
        """umount, waiting a little while a process just stopped lets go."""
        deadline = time.monotonic() + timeout
        for _ in _polling_loop(deadline, interval=0.5):
            try:
                self._run(['umount', mount_point], 'unmount')
                return
            except exception.VolumeError as exc:
                if 'busy' not in str(exc):
                    raise
                last = exc
                LOG.warning("%s is busy; trying to unmount it again",
                            mount_point)
        holders = processes_using(mount_point)
        raise exception.VolumeError(
            reason=f"{mount_point} is still busy after {timeout} s; "
                   "processes using it: "
                   + (', '.join(holders) or 'none found')) from last

    def migrate_data(self, source_dir):
        """Copy what ``source_dir`` holds onto the volume's root.

        Ownership, modes, links and times are kept (``cp -a``).  The volume
        is mounted on a temporary directory for the copy only.  A missing or
        empty ``source_dir`` is left alone.
        """
        if not os.path.isdir(source_dir) or not os.listdir(source_dir):
            LOG.debug("Nothing to migrate from %s", source_dir)
            return
        fstype = self._probe().get('TYPE') or self.fstype
        tmp_dir = tempfile.mkdtemp(prefix='trove-volume-')
        try:
            self._mount(tmp_dir, fstype, CONF.couchdb.mount_options)
            try:
                LOG.info("Copying %s onto %s", source_dir, self.device_path)
                self._run(['cp', '-a', os.path.join(source_dir, '.'),
                           tmp_dir + os.sep], 'copy data onto')
            finally:
                self._run(['umount', tmp_dir], 'unmount')
        finally:
            if not is_mounted(tmp_dir):
                os.rmdir(tmp_dir)

    def resize_fs(self, mount_point, online=False):
        """Grow the file system to the size of the (grown) device.

        ``online``: grow it while mounted on ``mount_point``.  Offline:
        unmount, check (``e2fsck -f -y``; ``xfs_repair -n`` for xfs, which
        only reports), grow and mount again with the options of its fstab
        entry (or ``[couchdb] mount_options``); xfs grows only while
        mounted, so it is mounted before it grows.
        """
        fstype = self._probe().get('TYPE')
        if fstype not in RESIZABLE_FSTYPES:
            raise exception.VolumeError(
                reason=f"cannot resize {self.device_path}: file system "
                       f"{fstype or '(none found)'} is not one of "
                       f"{', '.join(RESIZABLE_FSTYPES)}")
        if online:
            if not self._mounted_here(mount_point):
                raise exception.VolumeError(
                    reason=f"cannot resize {self.device_path} online: it is "
                           f"not mounted on {mount_point}")
            LOG.info("Resizing %s online", self.device_path)
            self._grow(fstype, mount_point)
            return
        options = _fstab_options(mount_point) or CONF.couchdb.mount_options
        if self._mounted_here(mount_point):
            self._run(['umount', mount_point], 'unmount')
        LOG.info("Resizing %s offline", self.device_path)
        self._check_fs(fstype)
        if fstype == XFS:
            self._mount(mount_point, fstype, options)
            self._grow(fstype, mount_point)
        else:
            self._grow(fstype, mount_point)
            self._mount(mount_point, fstype, options)

    def _grow(self, fstype, mount_point):
        """resize2fs the device, or xfs_growfs the (mounted) file system."""
        if fstype == XFS:
            self._run(['xfs_growfs', mount_point], 'resize')
        else:
            self._run(['resize2fs', self.device_path], 'resize')

    def _wait_for_device(self, deadline):
        for _ in _polling_loop(deadline):
            if os.path.exists(self.device_path):
                return
        raise exception.VolumeError(
            reason=f"device {self.device_path} did not appear")

    def _check_block_device(self):
        try:
            mode = os.stat(self.device_path).st_mode
        except OSError as err:
            raise exception.VolumeError(
                reason=f"cannot stat {self.device_path}: {err}") from err
        if not stat.S_ISBLK(mode):
            raise exception.VolumeError(
                reason=f"{self.device_path} is not a block device")

    def _check_format(self, fstype):
        found = self._probe().get('TYPE')
        if found != fstype:
            raise exception.VolumeError(
                reason=f"{self.device_path} holds {found or 'no file system'}"
                       f" after formatting it as {fstype}")
        if fstype in EXT_FSTYPES:
            self._run(['dumpe2fs', '-h', self.device_path], 'check')

    def _check_fs(self, fstype):
        """Check the unmounted file system.  e2fsck repairs what it can;
        ``xfs_repair -n`` only looks (exit 0: clean), leaving a damaged
        xfs, or one whose log needs replaying, to the operator."""
        if fstype == XFS:
            argv, clean = ['xfs_repair', '-n', self.device_path], (0,)
        else:
            argv, clean = ['e2fsck', '-f', '-y', self.device_path], _E2FSCK_OK
        result = self._run(argv, 'check', check=False)
        if result.exit_code not in clean:
            output = _findings(result.stdout + result.stderr)
            raise exception.VolumeError(
                reason=f"{argv[0]} of {self.device_path} exited with "
                       f"{result.exit_code}: {output[-500:]}")

    def _probe(self):
        """TYPE, UUID, ... of the device's file system, read from disk."""
        result = self._run(['blkid', '-p', '-o', 'export', self.device_path],
                           'probe', check=False)
        if result.exit_code not in (0, 2):  # 2: nothing recognised
            raise exception.VolumeError(
                reason=f"blkid cannot probe {self.device_path} (exit "
                       f"{result.exit_code}): {result.stderr.strip()[-500:]}")
        return dict(line.split('=', 1) for line in result.stdout.splitlines()
                    if '=' in line)

    def _mount(self, mount_point, fstype, options):
        self._run(['mkdir', '-p', mount_point], 'create the mount point for')
        LOG.info("Mounting %s on %s (%s, %s)", self.device_path,
                  mount_point, fstype, options)
        self._run(['mount', '-t', fstype, '-o', options, self.device_path,
                   mount_point], 'mount')

    def _mounted_here(self, mount_point):
        """Whether this device is mounted on ``mount_point``.

        :raises VolumeError: another file system is mounted there.
        """
        entry = find_mount(mount_point)
        if entry is None:
            return False
        if _same_device(entry, self.device_path):
            return True
        raise exception.VolumeError(
            reason=f"{entry.source} is mounted on {mount_point}, not "
                   f"{self.device_path}")

    def _run(self, argv, action, check=True, timeout=None):
        try:
            return process.execute(argv, run_as_root=True, check=check,
                                   timeout=timeout)
        except exception.ProcessExecutionError as err:
            raise exception.VolumeError(
                reason=f"cannot {action} {self.device_path}: {err}") from err


def default_format_options(fstype):
    """The mkfs options for ``fstype`` when ``format_options`` is unset."""
    return _DEFAULT_FORMAT_OPTIONS.get(fstype, '')


def _findings(output):
    """A checker's output without xfs_repair's progress lines ("Phase 3
    - for each AG...", "        - agno = 0"), which would push what it
    found out of the tail of an error message."""
    lines = [line for line in output.splitlines()
             if not line.startswith(('Phase ', '        - '))]
    return '\n'.join(lines).strip()


def get_filesystem_stats(fs_path):
    """Size of the file system holding ``fs_path``, as Trove reports it.

    The shape of upstream Trove's ``get_filesystem_volume_stats``:
    ``total`` and ``used`` in GB (rounded to 2 places), ``free`` in bytes,
    and ``avail_blocks`` (blocks free for unprivileged users), which Trove
    26 needs to show the volume's used percentage.
    """
    try:
        stats = os.statvfs(fs_path)
    except OSError as err:
        raise exception.VolumeError(
            reason=f"Filesystem not found ({fs_path}): {err.strerror}"
        ) from err
    total = stats.f_blocks * stats.f_bsize
    free = stats.f_bfree * stats.f_bsize
    return {
        'block_size': stats.f_bsize,
        'total_blocks': stats.f_blocks,
        'free_blocks': stats.f_bfree,
        'avail_blocks': stats.f_bavail,
        'total': _to_gb(total),
        'free': free,
        'used': _to_gb(total - free),
    }


def _to_gb(size):
    return round(size / 1024.0 ** 3, 2)


def is_mounted(mount_point):
    """Whether a file system is mounted on ``mount_point``."""
    return find_mount(mount_point) is not None


def find_mount(mount_point):
    """The ``MountEntry`` visible on ``mount_point``, or None."""
    wanted = os.path.realpath(mount_point)
    found = None
    with open(MOUNTINFO_PATH, encoding='utf-8', errors='replace') as info:
        for line in info:
            entry = _parse_mountinfo(line)
            if entry and entry.mount_point == wanted:
                found = entry  # the last one is on top of the others
    return found


def _parse_mountinfo(line):
    fields = line.split()
    try:
        separator = fields.index('-', 6)
        return MountEntry(mount_point=_unescape(fields[4]), devno=fields[2],
                          fstype=fields[separator + 1],
                          source=_unescape(fields[separator + 2]))
    except (ValueError, IndexError):
        return None


def _same_device(entry, device_path):
    try:
        rdev = os.stat(device_path).st_rdev
    except OSError:
        return False
    return (entry.devno == f'{os.major(rdev)}:{os.minor(rdev)}'
            or os.path.realpath(entry.source) ==
            os.path.realpath(device_path))


def _polling_loop(deadline, interval=None):
    """Yield once at once, then every ``interval`` s until ``deadline``."""
    interval = interval or DEVICE_POLL_INTERVAL
    yield
    while time.monotonic() < deadline:
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        yield


# fstab (and mountinfo) write a space in a path as \040: see fstab(5).
_ESCAPES = (('\\', '\\134'), (' ', '\\040'), ('\t', '\\011'),
            ('\n', '\\012'))


def _escape(path):
    for char, code in _ESCAPES:
        path = path.replace(char, code)
    return path


def _unescape(text):
    for char, code in reversed(_ESCAPES):
        text = text.replace(code, char)
    return text


def add_fstab_entry(spec, mount_point, fstype, options, fstab=None):
    """Make ``spec`` the one fstab entry for ``mount_point``.

    Other entries for the same mount point are replaced; the file is left
    untouched when the entry is already there.
    """
    line = '\t'.join([spec, _escape(os.path.normpath(mount_point)), fstype,
                      options, '0', '0'])
    lines = _read_fstab(fstab)
    kept = [old for old in lines if _fstab_mount_point(old) !=
            os.path.normpath(mount_point)]
    if kept + [line] != lines:
        LOG.debug("fstab: %s", line)
        _write_fstab(kept + [line], fstab)


def remove_fstab_entry(mount_point, fstab=None):
    """Remove every fstab entry for ``mount_point`` (none is fine)."""
    lines = _read_fstab(fstab)
    kept = [line for line in lines if _fstab_mount_point(line) !=
            os.path.normpath(mount_point)]
    if kept != lines:
        LOG.debug("fstab: removing the entry for %s", mount_point)
        _write_fstab(kept, fstab)


def _fstab_options(mount_point, fstab=None):
    for line in _read_fstab(fstab):
        if _fstab_mount_point(line) == os.path.normpath(mount_point):
            fields = line.split()
            return fields[3] if len(fields) > 3 else None
    return None


def _fstab_mount_point(line):
    fields = line.split()
    if len(fields) < 2 or fields[0].startswith('#'):
        return None
    return os.path.normpath(_unescape(fields[1]))


def _read_fstab(fstab=None):
    try:
        with open(fstab or CONF.fstab_path, encoding='utf-8') as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        return []


def _write_fstab(lines, fstab=None):
    """Replace the fstab atomically (write a new file, then rename it)."""
    path = fstab or CONF.fstab_path
    text = ''.join(line + '\n' for line in lines)
    if os.geteuid() == 0:
        files.write_atomically(path, text.encode('utf-8'), 0o644)
        return
    # Not root: write a scratch copy, then let root move it into place.
    with tempfile.NamedTemporaryFile('w', prefix='trove-fstab-',
                                     encoding='utf-8') as scratch:
        scratch.write(text)
        scratch.flush()
        staged = path + '.trove-new'
        process.execute(['cp', scratch.name, staged], run_as_root=True)
        process.execute(['chmod', '0644', staged], run_as_root=True)
        process.execute(['mv', '-f', staged, path], run_as_root=True)
