"""The diskimage-builder elements in elements/, checked without a network.

The dependency graph is resolved by diskimage-builder's own code (from
PyPI).  The elements' scripts run for real against a scratch root
(TROVE_ELEMENT_ROOT), with the real gpg on keys made here and stubs for
the commands that would touch the network or the host (curl, apt-get,
dnf, systemctl, debconf-set-selections, user and owner changes, python3's
venv), each stub recording its argv.  The [couchdb] configuration file
the image ships is loaded with the agent's options through oslo.config,
as trove-guestagent --config-dir loads it.
"""

import hashlib
import os
import pathlib
import shutil
import stat
import subprocess

import pytest
import yaml
from diskimage_builder import element_dependencies

REPO = pathlib.Path(__file__).resolve().parents[2]
ELEMENTS = REPO / 'elements'
DIB_ELEMENTS = pathlib.Path(element_dependencies.__file__).parent / 'elements'
GUEST = ELEMENTS / 'trove-guest-couchdb'
ENVIRONMENT = GUEST / 'environment.d' / '10-trove-guest-couchdb'
KEYRING = 'usr/share/keyrings/couchdb-archive-keyring.gpg'

_RECORD = '#!/bin/bash\nprintf "%s\\n" "$(basename "$0") $*" >>"$STUB_LOG"\n'
STUBS = {
    name: _RECORD for name in (
        'apt-get', 'dnf', 'systemctl', 'groupadd', 'chown')
}
STUBS.update({
    # Serves the key files of $KEY_DIR by the URL's last component.
    'curl': _RECORD + (
        'while [ $# -gt 0 ]; do case $1 in -o) out=$2; shift 2;;\n'
        '  *) url=$1; shift;; esac; done\n'
        'cp "$KEY_DIR/${url##*/}" "$out"\n'),
    'debconf-set-selections': _RECORD + 'cat >>"$STUB_LOG"\n',
    'useradd': _RECORD + 'echo "${*: -1}" >>"$STUB_DIR/users"\n',
    'getent': ('#!/bin/bash\n[ "$1" = group ] && grep -qx "$2" '
               '"$STUB_DIR/users" 2>/dev/null && exit 0\n'
               'grep -qx "$2" "$STUB_DIR/users" 2>/dev/null\n'),
    # python3 -m venv DIR makes DIR/bin/python, itself a recording stub.
    'python3': _RECORD + (
        'mkdir -p "$3/bin"\ncp "$STUB_DIR/venv-python" "$3/bin/python"\n'),
    'venv-python': _RECORD,
})


def _scripts():
    found = []
    for path in sorted(ELEMENTS.glob('*/*')):
        if path.is_dir() and (path.name.endswith('.d') or path.name == 'bin'):
            found += [p for p in sorted(path.iterdir())
                      if os.access(p, os.X_OK)]
    return found


def _fingerprint(gnupghome, key_file):
    out = subprocess.run(
        ['gpg', '--batch', '--with-colons', '--show-keys', str(key_file)],
        env={**os.environ, 'GNUPGHOME': str(gnupghome)}, check=True,
        capture_output=True, text=True).stdout
    return [line.split(':')[9] for line in out.splitlines()
            if line.startswith('fpr:')]


@pytest.fixture(scope='module')
def keys(tmp_path_factory):
    """Three fresh keys: the repository's, the rpm packages', a stranger's.

    keys.asc holds the repository key and the stranger's, as a key file
    can hold several; only the pinned one may end up trusted.
    """
    home = tmp_path_factory.mktemp('gnupg')
    home.chmod(0o700)
    served = tmp_path_factory.mktemp('served')
    env = {**os.environ, 'GNUPGHOME': str(home)}
    fingerprints = {}
    for name in ('repo', 'rpm', 'stranger'):
        subprocess.run(
            ['gpg', '--batch', '--passphrase', '', '--quick-gen-key',
             f'{name} <{name}@example.invalid>', 'ed25519', 'sign', 'never'],
            env=env, check=True, capture_output=True)
        out = subprocess.run(
            ['gpg', '--batch', '--armor', '--export',
             f'{name}@example.invalid'],
            env=env, check=True, capture_output=True).stdout
        (served / f'{name}.asc').write_bytes(out)
        fingerprints[name] = _fingerprint(home, served / f'{name}.asc')[0]
    (served / 'keys.asc').write_bytes(
        (served / 'repo.asc').read_bytes()
        + (served / 'stranger.asc').read_bytes())
    (served / 'rpm-package-key.asc').write_bytes(
        (served / 'rpm.asc').read_bytes())
    return served, fingerprints, home


@pytest.fixture
def stage(tmp_path, keys):
    """A scratch root, recording stubs, and a runner for element scripts."""
    served, fingerprints, _ = keys
    root = tmp_path / 'root'
    root.mkdir()
    stubs = tmp_path / 'stubs'
    stubs.mkdir()
    for name, text in STUBS.items():
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    log = tmp_path / 'argv.log'
    base_env = {
        'PATH': f'{stubs}:{GUEST / "bin"}:/usr/sbin:/usr/bin:/sbin:/bin',
        'HOME': str(tmp_path), 'LC_ALL': 'C',
        'TROVE_ELEMENT_ROOT': str(root), 'STUB_LOG': str(log),
        'STUB_DIR': str(stubs), 'KEY_DIR': str(served),
        'GNUPGHOME': str(tmp_path / 'no-such-gnupghome'),
        'DIB_COUCHDB_KEY_FINGERPRINT': fingerprints['repo'],
    }

    def run(script, **env):
        merged = {**base_env, **{k: v for k, v in env.items()
                                 if v is not None}}
        for key in [k for k, v in env.items() if v is None]:
            merged.pop(key, None)
        # As diskimage-builder does: environment.d sourced, then the hook.
        return subprocess.run(
            ['bash', '-c', '. "$1" && exec "$2"', 'hook', str(ENVIRONMENT),
             str(script)], env=merged, capture_output=True, text=True,
            timeout=60)

    run.root = root
    run.log = log
    run.fingerprints = fingerprints
    return run


def _snapshot(root):
    """Every path under root with its mode and content digest."""
    state = {}
    for path in sorted(root.rglob('*')):
        st = path.lstat()
        digest = (hashlib.sha256(path.read_bytes()).hexdigest()
                  if path.is_file() else None)
        state[str(path.relative_to(root))] = (
            stat.S_IMODE(st.st_mode), stat.S_IFMT(st.st_mode), digest)
    return state


def _ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------- static checks

def test_every_script_passes_shellcheck():
    shellcheck = shutil.which('shellcheck')
    assert shellcheck, 'shellcheck is missing: run tools/bootstrap'
    files = _scripts() + sorted(ELEMENTS.glob('*/environment.d/*'))
    result = subprocess.run([shellcheck, '-x', *map(str, files)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_script_is_strict():
    scripts = _scripts()
    assert len(scripts) == 7
    for script in scripts:
        text = script.read_text()
        assert text.startswith('#!/bin/bash\n'), script
        assert '\nset -eu -o pipefail\n' in text, script


def test_sudoers_parses_and_names_commands_only():
    sudoers = GUEST / 'install.d' / 'trove-guestagent.sudoers'
    visudo = shutil.which('visudo') or '/usr/sbin/visudo'
    assert os.path.exists(visudo), 'visudo is missing: run tools/bootstrap'
    _ok(subprocess.run([visudo, '-cf', str(sudoers)], capture_output=True,
                       text=True))
    text = sudoers.read_text()
    assert 'NOPASSWD: ALL' not in text and '(ALL' not in text
    # Every program the agent runs with run_as_root=True.
    for program in ('/usr/bin/systemctl start couchdb', '/usr/sbin/mkfs -t',
                    '/usr/sbin/blkid', '/usr/sbin/dumpe2fs',
                    '/usr/sbin/e2fsck',
                    '/usr/sbin/resize2fs', '/usr/sbin/xfs_repair -n /dev/*',
                    '/usr/sbin/xfs_growfs /*', '/usr/bin/mount -t',
                    '/usr/bin/umount', '/usr/bin/mkdir -p', '/usr/bin/cp -a',
                    '/usr/bin/chmod 0644 /etc/fstab.trove-new',
                    '/usr/bin/mv -f /etc/fstab.trove-new /etc/fstab',
                    '/usr/bin/chown -R couchdb', 'apt-get', '/usr/bin/dnf'):
        assert program in text, program


def test_package_installs_names_the_volume_programs_packages():
    wanted = yaml.safe_load((GUEST / 'package-installs.yaml').read_text())
    # util-linux: mkfs, blkid, mount, umount; e2fsprogs: dumpe2fs, e2fsck,
    # resize2fs; xfsprogs: mkfs.xfs, xfs_repair, xfs_growfs.
    assert {'sudo', 'util-linux', 'e2fsprogs', 'xfsprogs'} <= set(wanted)


# ------------------------------------------------- dependency graph (DIB)

@pytest.mark.parametrize('distro,expected', [
    ('ubuntu', {'ubuntu', 'ubuntu-common', 'dpkg'}),
    ('fedora', {'fedora', 'redhat-common', 'rpm-distro'}),
])
def test_dependency_graph_resolves_with_diskimage_builder(distro, expected):
    elements = element_dependencies.get_elements(
        [distro, f'{distro}-couchdb'], f'{ELEMENTS}:{DIB_ELEMENTS}')
    paths = dict(elements)
    assert {f'{distro}-couchdb', 'trove-guest-couchdb', 'package-installs',
            'install-bin'} | expected <= set(paths)
    assert paths['trove-guest-couchdb'] == str(GUEST)
    assert 'ubuntu-couchdb' not in paths or distro == 'ubuntu'
    assert 'fedora-couchdb' not in paths or distro == 'fedora'


# ---------------------------------------------------------- ubuntu-couchdb

UBUNTU_REPO = ELEMENTS / 'ubuntu-couchdb' / 'pre-install.d' / \
    '60-couchdb-apt-repository'


def test_ubuntu_repository_is_signed_by_the_pinned_key_only(stage, keys):
    _, fingerprints, home = keys
    _ok(stage(UBUNTU_REPO, DIB_RELEASE='noble'))
    listing = stage.root / 'etc/apt/sources.list.d/couchdb.list'
    assert listing.read_text() == (
        f'deb [signed-by=/{KEYRING}] '
        'https://apache.jfrog.io/artifactory/couchdb-deb/ noble main\n')
    assert _mode(listing) == 0o644
    keyring = stage.root / KEYRING
    assert _mode(keyring) == 0o644
    assert not keyring.read_bytes().startswith(b'-----BEGIN')  # dearmored
    assert _fingerprint(home, keyring) == [fingerprints['repo']]
    log = stage.log.read_text()
    assert 'curl -fsSL --proto =https' in log
    assert 'couchdb couchdb/mode select standalone' in log
    assert 'couchdb couchdb/bindaddress string 127.0.0.1' in log
    assert 'couchdb couchdb/adminpass password\n' in log


def test_ubuntu_release_from_os_release(stage):
    (stage.root / 'etc').mkdir()
    (stage.root / 'etc/os-release').write_text('VERSION_CODENAME=jammy\n')
    _ok(stage(UBUNTU_REPO, DIB_RELEASE=None))
    assert ' jammy main' in (
        stage.root / 'etc/apt/sources.list.d/couchdb.list').read_text()


@pytest.mark.parametrize('pinned', ['stranger-not-served', 'malformed'])
def test_ubuntu_repository_fails_closed_on_another_key(stage, pinned):
    fingerprint = ('0' * 40 if pinned == 'stranger-not-served'
                   else 'not-a-fingerprint')
    result = stage(UBUNTU_REPO, DIB_RELEASE='noble',
                   DIB_COUCHDB_KEY_FINGERPRINT=fingerprint)
    assert result.returncode != 0
    assert 'couchdb-verified-key' in result.stderr
    assert _snapshot(stage.root) == {}


def test_ubuntu_repository_is_idempotent(stage):
    _ok(stage(UBUNTU_REPO, DIB_RELEASE='noble'))
    first = _snapshot(stage.root)
    _ok(stage(UBUNTU_REPO, DIB_RELEASE='noble'))
    assert _snapshot(stage.root) == first


def test_ubuntu_install_installs_couchdb_and_leaves_it_disabled(stage):
    script = ELEMENTS / 'ubuntu-couchdb' / 'install.d' / '60-couchdb'
    _ok(stage(script))
    assert stage.log.read_text().splitlines() == [
        'apt-get update',
        'apt-get install -y --no-install-recommends couchdb',
        'systemctl disable couchdb.service']
    stage.log.unlink()
    _ok(stage(script, DIB_COUCHDB_VERSION='3.4.2-1~noble'))
    assert ('apt-get install -y --no-install-recommends '
            'couchdb=3.4.2-1~noble') in stage.log.read_text()


# ---------------------------------------------------------- fedora-couchdb

FEDORA_REPO = ELEMENTS / 'fedora-couchdb' / 'pre-install.d' / \
    '60-couchdb-rpm-repository'


def test_fedora_repository_checks_signatures_with_pinned_keys(stage, keys):
    _, fingerprints, home = keys
    _ok(stage(FEDORA_REPO,
              DIB_COUCHDB_RPM_KEY_FINGERPRINT=fingerprints['rpm']))
    repo = (stage.root / 'etc/yum.repos.d/couchdb.repo').read_text()
    lines = repo.splitlines()
    assert 'gpgcheck=1' in lines and 'repo_gpgcheck=1' in lines
    assert ('baseurl=https://apache.jfrog.io/artifactory/couchdb-rpm/'
            'el9/$basearch/') in lines
    assert ('gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-couchdb '
            'file:///etc/pki/rpm-gpg/RPM-GPG-KEY-couchdb-rpm') in lines
    keydir = stage.root / 'etc/pki/rpm-gpg'
    assert _fingerprint(home, keydir / 'RPM-GPG-KEY-couchdb') == [
        fingerprints['repo']]
    assert _fingerprint(home, keydir / 'RPM-GPG-KEY-couchdb-rpm') == [
        fingerprints['rpm']]
    first = _snapshot(stage.root)
    _ok(stage(FEDORA_REPO,
              DIB_COUCHDB_RPM_KEY_FINGERPRINT=fingerprints['rpm']))
    assert _snapshot(stage.root) == first


def test_fedora_repository_needs_the_rpm_key_fingerprint(stage, keys):
    result = stage(FEDORA_REPO)
    assert result.returncode != 0
    assert 'DIB_COUCHDB_RPM_KEY_FINGERPRINT' in result.stderr
    assert _snapshot(stage.root) == {}
    wrong = stage(FEDORA_REPO,
                  DIB_COUCHDB_RPM_KEY_FINGERPRINT=keys[1]['stranger'])
    assert wrong.returncode != 0
    assert not (stage.root / 'etc/yum.repos.d/couchdb.repo').exists()


def test_fedora_install_installs_couchdb_and_leaves_it_disabled(stage):
    _ok(stage(ELEMENTS / 'fedora-couchdb' / 'install.d' / '60-couchdb'))
    assert stage.log.read_text().splitlines() == [
        'dnf install -y couchdb', 'systemctl disable couchdb.service']


# ------------------------------------------------------ trove-guest-couchdb

def test_agent_source_is_copied_without_local_state(stage, tmp_path):
    hooks = tmp_path / 'hooks'
    _ok(stage(GUEST / 'extra-data.d' / '50-trove-guestagent-source',
              TMP_HOOKS_PATH=str(hooks),
              DIB_TROVE_GUESTAGENT_SOURCE=str(REPO)))
    staged = hooks / 'trove-guestagent'
    assert (staged / 'setup.cfg').read_bytes() == (
        REPO / 'setup.cfg').read_bytes()
    assert (staged / 'trove' / 'cmd' / 'guest.py').is_file()
    for local in ('.git', '.venv', '.cache'):
        assert not (staged / local).exists(), local
    wheel = tmp_path / 'trove_guestagent_couchdb-0.1.0-py3-none-any.whl'
    wheel.write_bytes(b'PK')
    _ok(stage(GUEST / 'extra-data.d' / '50-trove-guestagent-source',
              TMP_HOOKS_PATH=str(hooks),
              DIB_TROVE_GUESTAGENT_SOURCE=str(wheel)))
    assert sorted(p.name for p in staged.iterdir()) == [wheel.name]
    bad = stage(GUEST / 'extra-data.d' / '50-trove-guestagent-source',
                TMP_HOOKS_PATH=str(hooks),
                DIB_TROVE_GUESTAGENT_SOURCE=str(tmp_path / 'nothing'))
    assert bad.returncode != 0


def test_agent_install_lays_out_unit_sudoers_and_directories(stage, tmp_path):
    source = tmp_path / 'staged'
    source.mkdir()
    script = GUEST / 'install.d' / '75-trove-guestagent'
    _ok(stage(script, TROVE_GUESTAGENT_STAGED=str(source)))
    root = stage.root
    unit = root / 'etc/systemd/system/trove-guestagent.service'
    assert _mode(unit) == 0o644
    assert ('ExecStart=/opt/trove-guestagent/bin/trove-guestagent '
            '--config-dir=/etc/trove/conf.d') in unit.read_text().splitlines()
    assert 'User=trove' in unit.read_text().splitlines()
    sudoers = root / 'etc/sudoers.d/trove-guestagent'
    assert _mode(sudoers) == 0o440
    assert sudoers.read_bytes() == (
        GUEST / 'install.d' / 'trove-guestagent.sudoers').read_bytes()
    assert {d: _mode(root / d) for d in (
        'etc/trove/conf.d', 'var/lib/trove-guestagent', 'var/log/trove')} == {
        'etc/trove/conf.d': 0o750, 'var/lib/trove-guestagent': 0o700,
        'var/log/trove': 0o750}
    log = stage.log.read_text().splitlines()
    venv = root / 'opt/trove-guestagent'
    assert f'python3 -m venv {venv}' in log
    assert (f'python -m pip install --no-cache-dir --upgrade {source}'
            in log)
    assert 'chown trove:trove ' + str(root / 'var/lib/trove-guestagent') in log
    assert 'chown root:trove ' + str(root / 'etc/trove/conf.d') in log
    assert log[-1] == 'systemctl enable trove-guestagent.service'
    assert sum(line.startswith('useradd --system') for line in log) == 1

    first = _snapshot(root)
    stage.log.unlink()
    _ok(stage(script, TROVE_GUESTAGENT_STAGED=str(source)))
    assert _snapshot(root) == first
    again = stage.log.read_text()
    assert 'useradd' not in again and 'python3 -m venv' not in again


def test_agent_install_prefers_a_staged_wheel(stage, tmp_path):
    source = tmp_path / 'staged'
    source.mkdir()
    wheel = source / 'trove_guestagent_couchdb-0.1.0-py3-none-any.whl'
    wheel.write_bytes(b'PK')
    _ok(stage(GUEST / 'install.d' / '75-trove-guestagent',
              TROVE_GUESTAGENT_STAGED=str(source)))
    assert (f'python -m pip install --no-cache-dir --upgrade {wheel}'
            in stage.log.read_text())


# ------------------------------------ [couchdb] options of the package layout

FRAGMENT_SOURCE = GUEST / 'install.d' / 'couchdb-package.conf'
FRAGMENT = 'etc/trove/conf.d/00-couchdb-package.conf'
# Where the Apache CouchDB 3.x packages (deb and rpm alike) put CouchDB.
# Their /opt/couchdb/data is a symbolic link to /var/lib/couchdb: the
# volume is mounted on the directory, since `chown -R` (the agent's
# set_data_ownership) and os.path.ismount do not follow a link.
PACKAGE_LAYOUT = {
    'config_dir': '/opt/couchdb/etc',
    'mount_point': '/var/lib/couchdb',
    'couchdb_user': 'couchdb',
    'couchdb_group': 'couchdb',
    'service_manager': 'systemd',
    'service_name': 'couchdb',
    'server_log_file': '/var/log/couchdb/couchdb.log',
}


def _agent_conf(conf_dir):
    """The agent's options loaded as trove-guestagent loads them.

    A fresh ConfigOpts with every option of trove.common.cfg, read from
    ``--config-dir`` only (no default files, no environment).
    """
    from oslo_config import cfg

    from trove.common import cfg as trove_cfg
    conf = cfg.ConfigOpts()
    trove_cfg.register_opts(conf)
    conf(['--config-dir', str(conf_dir)], project='trove',
         prog='trove-guestagent', default_config_files=[],
         default_config_dirs=[], use_env=False)
    return conf


@pytest.fixture
def installed(stage, tmp_path):
    """The scratch root after install.d/75-trove-guestagent ran."""
    source = tmp_path / 'staged'
    source.mkdir()
    script = GUEST / 'install.d' / '75-trove-guestagent'

    def run():
        return _ok(stage(script, TROVE_GUESTAGENT_STAGED=str(source)))

    run()
    stage.rerun = run
    return stage


def test_package_fragment_is_installed_root_trove_0640(installed):
    fragment = installed.root / FRAGMENT
    assert fragment.read_bytes() == FRAGMENT_SOURCE.read_bytes()
    assert _mode(fragment) == 0o640
    # The same group and no wider mode than the directory Trove writes to.
    assert f'chown root:trove {fragment}' in installed.log.read_text()
    assert _mode(fragment.parent) == 0o750
    # Data for the script, not a hook dib-run-parts would run.
    assert not os.access(FRAGMENT_SOURCE, os.X_OK)
    # oslo.config reads *.conf in name order and the last value wins: the
    # files Trove injects must come after this one.
    assert sorted([fragment.name, 'guest_info.conf',
                   'trove-guestagent.conf'])[0] == fragment.name


def test_package_fragment_is_rewritten_only_when_it_changes(installed):
    fragment = installed.root / FRAGMENT
    inode = fragment.stat().st_ino
    installed.rerun()
    assert fragment.stat().st_ino == inode
    assert not fragment.with_name(fragment.name + '.new').exists()

    fragment.write_text('[couchdb]\nconfig_dir = /etc/couchdb\n')
    fragment.chmod(0o644)
    installed.rerun()
    assert fragment.read_bytes() == FRAGMENT_SOURCE.read_bytes()
    assert _mode(fragment) == 0o640


def test_package_fragment_sets_registered_couchdb_options_only():
    import configparser

    from trove.common import cfg as trove_cfg
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(FRAGMENT_SOURCE.read_text())
    assert parser.sections() == ['couchdb']
    assert dict(parser.defaults()) == {}
    registered = {opt.dest for opt in trove_cfg.couchdb_opts}
    assert set(parser['couchdb']) <= registered
    # The same options on the agent's global CONF, [couchdb] group.
    assert set(parser['couchdb']) <= set(trove_cfg.CONF.couchdb)
    assert dict(parser['couchdb']) == PACKAGE_LAYOUT


def test_package_fragment_gives_the_agent_the_3x_layout(installed):
    conf_dir = installed.root / 'etc/trove/conf.d'
    (conf_dir / 'guest_info.conf').write_text(
        '[DEFAULT]\nguest_id = 1f2e3d4c-0000-4000-8000-000000000001\n'
        'datastore_manager = couchdb\n')
    conf = _agent_conf(conf_dir)
    assert {name: conf.couchdb[name] for name in PACKAGE_LAYOUT} == \
        PACKAGE_LAYOUT
    assert conf.datastore_manager == 'couchdb'
    # Without the fragment the agent would look in the 1.6 layout.
    (conf_dir / '00-couchdb-package.conf').unlink()
    assert _agent_conf(conf_dir).couchdb.config_dir == '/etc/couchdb'


def test_operator_trove_guestagent_conf_overrides_the_fragment(installed):
    conf_dir = installed.root / 'etc/trove/conf.d'
    (conf_dir / 'guest_info.conf').write_text(
        '[DEFAULT]\ndatastore_manager = couchdb\n')
    (conf_dir / 'trove-guestagent.conf').write_text(
        '[DEFAULT]\nreport_interval = 10\n\n'
        '[couchdb]\nmount_point = /srv/couchdb\n'
        'service_name = couchdb-custom\n')
    conf = _agent_conf(conf_dir)
    assert conf.couchdb.mount_point == '/srv/couchdb'
    assert conf.couchdb.service_name == 'couchdb-custom'
    assert conf.report_interval == 10
    # What the operator did not set still comes from the fragment.
    assert conf.couchdb.config_dir == '/opt/couchdb/etc'
    assert conf.couchdb.couchdb_user == 'couchdb'
