"""Install the operating system packages that a prepare call asks for.

Debian/Ubuntu (``dpkg-query`` + ``apt-get``) and Fedora/RHEL (``rpm`` +
``dnf``) are supported.  Package names are validated before any command
runs; packages already installed are skipped.
"""

import re

from oslo_log import log as logging

from trove.common import exception, process

LOG = logging.getLogger(__name__)

_NAME = r'[a-z0-9][a-z0-9+.:~_-]*'
_VERSION = r'[A-Za-z0-9][A-Za-z0-9+.:~_-]*'
_PACKAGE_RE = re.compile(rf'({_NAME})(?:=({_VERSION}))?')

# Seconds apt-get waits for the dpkg lock held by another apt/dpkg process.
APT_LOCK_TIMEOUT = 120

_APT_ENV = {'DEBIAN_FRONTEND': 'noninteractive'}


def install_if_needed(packages):
    """Install those of ``packages`` that are not installed yet.

    Each entry is ``name`` or ``name=version``.

    :raises BadRequest: an entry that is not a valid package name.
    :raises ConfigurationError: no supported package manager on this host.
    :raises ProcessExecutionError: the package manager failed.
    """
    wanted = [_parse(entry) for entry in packages or []]
    if not wanted:
        return []
    backend = _backend()
    missing = [pkg for pkg in wanted if not backend.is_installed(*pkg)]
    LOG.debug("Packages requested: %s; to install: %s", packages, missing)
    if missing:
        LOG.info("Installing packages %s", missing)
        backend.install(missing)
    return [_join(name, version) for name, version in missing]


def _parse(entry):
    match = _PACKAGE_RE.fullmatch(entry) if isinstance(entry, str) else None
    if not match:
        raise exception.BadRequest(
            f"Invalid package name {entry!r}: expected a lower-case name "
            "made of a-z 0-9 + . : ~ _ - (optionally =version)")
    return match.group(1), match.group(2)


def _join(name, version, separator='='):
    return name if version is None else name + separator + version


def _backend():
    if process.program_exists('dpkg-query'):
        return _Apt()
    if process.program_exists('rpm') and process.program_exists('dnf'):
        return _Dnf()
    raise exception.ConfigurationError(
        reason="no supported package manager found (need dpkg-query and "
               "apt-get, or rpm and dnf)")


class _Apt:

    def is_installed(self, name, version):
        result = process.execute(
            ['dpkg-query', '-W', r'--showformat=${Status}\t${Version}\n',
             name],
            check=False)
        if result.exit_code != 0:
            return False
        # One line per architecture the package is known for.
        for line in result.stdout.splitlines():
            status, _, installed = line.partition('\t')
            if (status.split()[-1:] == ['installed']
                    and version in (None, installed)):
                return True
        return False

    def install(self, packages):
        names = [_join(name, version) for name, version in packages]
        try:
            self._apt_get_install(names)
        except exception.ProcessExecutionError as err:
            if 'Unable to locate package' not in (err.stderr or ''):
                raise
            LOG.debug("apt-get cannot find %s; updating the package lists",
                      names)
            self._apt_get(['update'])
            self._apt_get_install(names)

    def _apt_get_install(self, names):
        self._apt_get(['install', '-y', '--no-install-recommends'] + names)

    def _apt_get(self, args):
        process.execute(
            ['apt-get', '-o', f'DPkg::Lock::Timeout={APT_LOCK_TIMEOUT}',
             *args],
            run_as_root=True, env=_APT_ENV)


class _Dnf:

    def is_installed(self, name, version):
        result = process.execute(['rpm', '-q', _join(name, version, '-')],
                                 check=False)
        return result.exit_code == 0

    def install(self, packages):
        names = [_join(name, version, '-') for name, version in packages]
        process.execute(['dnf', 'install', '-y'] + names, run_as_root=True)
