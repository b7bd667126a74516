"""Package installs: real dpkg-query, fake apt-get/rpm/dnf that record argv.

Nothing is ever installed: apt-get and dnf are scripts in a scratch
directory put first on PATH.
"""

import os
import subprocess

import pytest

from trove.common import exception, process
from trove.guestagent.common import packages

FAKE_APT_GET = '''#!/bin/sh
echo "apt-get $* DEBIAN_FRONTEND=$DEBIAN_FRONTEND LC_ALL=$LC_ALL" >> {record}
case "$*" in
  *" update") touch {updated} ;;
  *" install "*)
    if [ ! -e {updated} ] && [ -e {needs_update} ]; then
      echo "E: Unable to locate package $6" >&2; exit 100
    fi
    if [ -e {broken} ]; then
      echo "E: Sub-process dpkg failed" >&2; exit 100
    fi
    ;;
esac
'''


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    files = {name: tmp_path / name
             for name in ('record', 'updated', 'needs_update', 'broken')}
    script = bin_dir / 'apt-get'
    script.write_text(FAKE_APT_GET.format(**files))
    script.chmod(0o755)
    monkeypatch.setenv('PATH', f"{bin_dir}:{os.environ['PATH']}")
    return files


def _recorded(record):
    return record.read_text().splitlines() if record.exists() else []


def _installed_version(name):
    return subprocess.run(
        ['dpkg-query', '-W', '--showformat=${Version}', name],
        check=True, capture_output=True, text=True).stdout


APT_PREFIX = 'apt-get -o DPkg::Lock::Timeout=120'
APT_ENV = 'DEBIAN_FRONTEND=noninteractive LC_ALL=C'


def test_installed_packages_are_skipped(fake_apt):
    version = _installed_version('coreutils')
    assert packages.install_if_needed(
        ['coreutils', f'coreutils={version}', 'dpkg']) == []
    assert _recorded(fake_apt['record']) == []


def test_missing_packages_are_installed(fake_apt):
    installed = packages.install_if_needed(
        ['coreutils', 'trove-test-no-such-package', 'coreutils=0.0-bogus'])
    assert installed == ['trove-test-no-such-package', 'coreutils=0.0-bogus']
    assert _recorded(fake_apt['record']) == [
        f'{APT_PREFIX} install -y --no-install-recommends '
        f'trove-test-no-such-package coreutils=0.0-bogus {APT_ENV}']


def test_package_lists_are_updated_once_when_a_package_is_unknown(fake_apt):
    fake_apt['needs_update'].touch()
    packages.install_if_needed(['trove-test-pkg'])
    install = (f'{APT_PREFIX} install -y --no-install-recommends '
               f'trove-test-pkg {APT_ENV}')
    assert _recorded(fake_apt['record']) == [
        install, f'{APT_PREFIX} update {APT_ENV}', install]


def test_apt_get_failure_is_raised(fake_apt):
    fake_apt['broken'].touch()
    with pytest.raises(exception.ProcessExecutionError) as caught:
        packages.install_if_needed(['trove-test-pkg'])
    assert 'dpkg failed' in str(caught.value)
    assert caught.value.exit_code == 100
    assert len(_recorded(fake_apt['record'])) == 1


@pytest.mark.parametrize('name', [
    'CouchDB', '-oAPT::Get::Foo=1', 'couchdb; rm -rf /', 'couch db',
    '../couchdb', 'couchdb/stable', '', 'couchdb=', 'couchdb=-1',
    'couchdb=1 2', '$(id)', 'couchdb\n', None, 7])
def test_invalid_names_are_refused_before_anything_runs(fake_apt, name):
    with pytest.raises(exception.BadRequest) as caught:
        packages.install_if_needed(['coreutils', name])
    assert repr(name) in str(caught.value)
    assert _recorded(fake_apt['record']) == []


@pytest.mark.parametrize('name', [
    'couchdb', 'libc6:amd64', 'g++', 'python3.11', 'couchdb=3.3.3~bookworm',
    'couchdb=1:2.3.1-1+deb12u1', 'lib_x-y'])
def test_valid_names(name):
    assert packages._parse(name)[0] == name.split('=')[0]


def test_nothing_requested(fake_apt):
    assert packages.install_if_needed([]) == []
    assert packages.install_if_needed(None) == []


@pytest.fixture
def only(tmp_path, monkeypatch):
    """PATH holds only the fake programs written with the returned function.
    """
    bin_dir = tmp_path / 'only-bin'
    bin_dir.mkdir()
    monkeypatch.setenv('PATH', str(bin_dir))
    monkeypatch.setattr(process, 'EXTRA_PROGRAM_DIRS', ())

    def add(name, body):
        path = bin_dir / name
        path.write_text('#!/bin/sh\n' + body)
        path.chmod(0o755)
    return add


def test_no_package_manager(only):
    with pytest.raises(exception.ConfigurationError) as caught:
        packages.install_if_needed(['couchdb'])
    assert 'package manager' in str(caught.value)


def test_dnf(only, tmp_path):
    record = tmp_path / 'record'
    only('rpm', f'echo "rpm $*" >> {record}\n'
                '[ "$2" = installed-pkg ]\n')
    only('dnf', f'echo "dnf $*" >> {record}\n')
    installed = packages.install_if_needed(
        ['installed-pkg', 'couchdb=3.3.3', 'other'])
    assert installed == ['couchdb=3.3.3', 'other']
    assert _recorded(record) == [
        'rpm -q installed-pkg', 'rpm -q couchdb-3.3.3', 'rpm -q other',
        'dnf install -y couchdb-3.3.3 other']
