# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.
"""How tools/bootstrap gets its CouchDB 3.5.0, or fails the run.

Three ways, in order: the release tarball of SHARED_DIR/couchdb (checked
against its SHA256SUMS), an installed /opt/couchdb, Apache's Debian
repository added as elements/ubuntu-couchdb adds it.  None: the run fails
naming all three, never a skip.

bootstrap is sourced (it then only defines) and its ensure_couchdb runs
against scratch folders: .cache, the package's /opt/couchdb and SHARED_DIR
point into tmp_path, and DIB_COUCHDB_APT_REPO at a closed loopback port or
at a loopback HTTP server standing in for the repository.  Nothing touches
the machine: as_root records its argv instead of running it (an
"apt-get install" makes the package's bin/couchdb, as the package would),
and verify_couchdb, which starts the server, records what it would start.
"""

import functools
import hashlib
import http.server
import io
import os
import pathlib
import socket
import subprocess
import tarfile
import threading

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / 'tools' / 'bootstrap'
ELEMENT_SCRIPT = (REPO / 'elements' / 'ubuntu-couchdb' / 'pre-install.d'
                  / '60-couchdb-apt-repository')
ELEMENT_ENV = (REPO / 'elements' / 'trove-guest-couchdb' / 'environment.d'
               / '10-trove-guest-couchdb')
TARBALL = f'couchdb-3.5.0-debian12-{os.uname().machine}.tar.gz'

RUNNER = r'''
source "$BOOTSTRAP"
CACHE=$WORK/cache
COUCHDB_HOME=$CACHE/couchdb
COUCHDB_PACKAGE_HOME=$WORK/opt-couchdb
mkdir -p "$CACHE"
as_root() {
    cat >/dev/null
    printf '%s\n' "$*" >>"$WORK/as_root.log"
    case "$*" in ${FAIL_AS_ROOT:-"-"}) return 1 ;; esac
    case "$*" in *"apt-get install"*)
        mkdir -p "$COUCHDB_PACKAGE_HOME/bin"
        install -m 0755 /dev/null "$COUCHDB_PACKAGE_HOME/bin/couchdb" ;;
    esac
}
erlang_pids() { :; }
verify_couchdb() { readlink -f "$COUCHDB_HOME" >>"$WORK/verified.log"; }
ensure_couchdb
'''


@pytest.fixture
def work(tmp_path):
    (tmp_path / 'shared' / 'couchdb').mkdir(parents=True)
    return tmp_path


@pytest.fixture
def closed_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture
def repository(tmp_path):
    """A loopback stand-in for Apache's repository: (url, paths asked)."""
    root = tmp_path / 'repository'
    (root / 'dists' / 'bookworm').mkdir(parents=True)
    (root / 'dists' / 'bookworm' / 'Release').write_text('Suite: bookworm\n')
    asked = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            asked.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_port}/', asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def ensure_couchdb(work, repo_url, **env):
    merged = {k: v for k, v in os.environ.items()
              if not k.startswith('DIB_') and k != 'SHARED_DIR'}
    merged.update(BOOTSTRAP=str(BOOTSTRAP), WORK=str(work),
                  SHARED_DIR=str(work / 'shared'),
                  DIB_COUCHDB_APT_REPO=repo_url, DIB_RELEASE='bookworm',
                  **env)
    return subprocess.run(['bash', '-c', RUNNER], env=merged,
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)


def root_commands(work):
    log = work / 'as_root.log'
    return log.read_text().splitlines() if log.exists() else []


def verified(work):
    log = work / 'verified.log'
    return log.read_text().splitlines() if log.exists() else []


def make_release(work):
    """A fake release tarball and its SHA256SUMS line; returns the digest."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode='w:gz') as tar:
        program = b'#!/bin/sh\necho fake couchdb\n'
        info = tarfile.TarInfo('couchdb-3.5.0/bin/couchdb')
        info.size, info.mode = len(program), 0o755
        tar.addfile(info, io.BytesIO(program))
    tarball = work / 'shared' / 'couchdb' / TARBALL
    tarball.write_bytes(data.getvalue())
    digest = hashlib.sha256(data.getvalue()).hexdigest()
    (tarball.parent / 'SHA256SUMS').write_text(f'{digest}  {TARBALL}\n')
    return digest


def make_package_home(work):
    program = work / 'opt-couchdb' / 'bin' / 'couchdb'
    program.parent.mkdir(parents=True)
    program.write_text('#!/bin/sh\n')
    program.chmod(0o755)
    return program.parent.parent


def test_no_server_to_be_had_fails_naming_the_three_ways(work, closed_port):
    url = f'http://127.0.0.1:{closed_port}/'
    result = ensure_couchdb(work, url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f'bootstrap: ERROR: no CouchDB 3.5.0 server to be had; tried, in'
            f' order:\n'
            f'  1. the release {work}/shared/couchdb/{TARBALL}: missing\n'
            f'  2. an installed {work}/opt-couchdb: no {work}/opt-couchdb'
            f'/bin/couchdb\n'
            f"  3. Apache's Debian repository {url} (bookworm): unavailable:"
            f' curl: (7) ') in result.stderr
    assert 'DIB_COUCHDB_APT_REPO names a mirror' in result.stderr
    assert root_commands(work) == []
    assert not (work / 'cache' / 'couchdb').exists()


@pytest.mark.parametrize('sums, message', [
    ('0' * 64 + f'  {TARBALL}\n', 'SHA256SUMS says ' + '0' * 64),
    ('0' * 64 + '  another-release.tar.gz\n',
     f'SHA256SUMS has no checksum for {TARBALL}'),
    (None, 'SHA256SUMS missing: cannot check'),
], ids=['wrong checksum', 'no checksum for it', 'no SHA256SUMS'])
def test_an_unchecked_release_is_refused(work, closed_port, sums, message):
    make_release(work)
    make_package_home(work)  # refused all the same: no falling back
    sums_file = work / 'shared' / 'couchdb' / 'SHA256SUMS'
    if sums is None:
        sums_file.unlink()
    else:
        sums_file.write_text(sums)
    result = ensure_couchdb(work, f'http://127.0.0.1:{closed_port}/')
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert not (work / 'cache' / 'couchdb').exists()
    assert verified(work) == [] and root_commands(work) == []


def test_the_release_comes_first_and_once(work, repository):
    url, asked = repository
    digest = make_release(work)
    make_package_home(work)
    home = work / 'cache' / 'couchdb'
    for _ in range(2):
        result = ensure_couchdb(work, url)
        assert result.returncode == 0, result.stdout + result.stderr
    assert not home.is_symlink()
    assert (home / 'bin' / 'couchdb').read_text() == (
        '#!/bin/sh\necho fake couchdb\n')
    assert (home / '.bootstrap-stamp').read_text() == f'tarball {digest}\n'
    # Started once: the second run found the stamp of the same release.
    assert verified(work) == [str(home)]
    assert asked == [] and root_commands(work) == []


def test_an_installed_couchdb_comes_second(work, repository):
    url, asked = repository
    package_home = make_package_home(work)
    # What an earlier run unpacked from a release that is gone now.
    (work / 'cache' / 'couchdb' / 'bin').mkdir(parents=True)
    result = ensure_couchdb(work, url)
    assert result.returncode == 0, result.stdout + result.stderr
    home = work / 'cache' / 'couchdb'
    assert home.is_symlink() and home.readlink() == package_home
    assert verified(work) == [str(package_home)]
    assert asked == [] and root_commands(work) == []


def test_apache_repository_comes_third_added_as_the_image_adds_it(
        work, repository):
    url, asked = repository
    result = ensure_couchdb(work, url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert asked == ['/dists/bookworm/Release']
    commands = root_commands(work)
    # The element's own script, as diskimage-builder runs it, on the host.
    assert commands[0].startswith('env PATH=')
    assert (f' TROVE_ELEMENT_ROOT= DIB_RELEASE=bookworm'
            f' DIB_COUCHDB_APT_REPO={url} bash -c . "$1" && exec "$2"'
            f' element {ELEMENT_ENV} {ELEMENT_SCRIPT}') in commands[0]
    assert os.access(ELEMENT_SCRIPT, os.X_OK)
    installs = [c for c in commands if c.startswith('apt-get')]
    assert installs[0] == 'apt-get update -qq'
    assert installs[1].startswith('apt-get install -y')
    assert installs[1].endswith(' couchdb=3.5.0~bookworm')
    assert len(installs) == 2
    if any(c.startswith('systemctl') for c in commands):
        assert commands[-1] == 'systemctl disable couchdb.service'
    home = work / 'cache' / 'couchdb'
    assert home.readlink() == work / 'opt-couchdb'
    assert verified(work) == [str(work / 'opt-couchdb')]


@pytest.mark.parametrize('failing, message', [
    ('*60-couchdb-apt-repository', "adding Apache's CouchDB repository"
     ' failed'),
    ('apt-get update*', 'apt-get update failed'),
    ('apt-get install*', 'apt-get install couchdb=3.5.0~bookworm failed'),
], ids=['the element', 'apt-get update', 'apt-get install'])
def test_a_repository_install_that_fails_fails_the_run(
        work, repository, failing, message):
    url, _ = repository
    result = ensure_couchdb(work, url, FAIL_AS_ROOT=failing)
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert not (work / 'cache' / 'couchdb').exists()
    assert verified(work) == []
