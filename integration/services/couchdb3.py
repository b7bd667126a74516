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
"""A real Apache CouchDB 3.x node on loopback, as a guest runs it.

tools/bootstrap installs the release into ``.cache/couchdb`` (the CouchDB
3.5.0 of ``shared/couchdb``, an installed ``/opt/couchdb``, or Apache's
Debian package); ``COUCHDB_HOME`` points at another release directory.

Each node has its files under ``workdir``, laid out like the package lays
out ``/opt/couchdb``: ``etc/`` (``vm.args`` with a node name and cookie of
its own, ``local.ini``, ``local.d/``: the agent's ``[couchdb] config_dir``)
and ``data/`` (``database_dir`` and ``view_index_dir``: the agent's
``mount_point``), the server's log in ``couchdb.log``.  Its epmd runs in
the foreground on a loopback port of its own and is stopped with the node.
Nothing listens beyond 127.0.0.1.

Like the package, the node has no server admin until someone gives it
one: CouchDB 3.x refuses to start without.  ``start()`` (a node the tests
drive themselves) gives it ``admin``; a node started by an agent through
``start_command`` gets its admin from the agent.
"""

import os
import pathlib
import secrets
import shlex
import subprocess
import sys

import requests

from integration.services import base
from integration.services import epmd as epmd_mod

COUCHDB_CTL = base.REPO_ROOT / "integration" / "bin" / "couchdb-ctl"
# What the Debian package's vm.args holds, minus the name and cookie.
VM_ARGS = """\
-name {node}
-setcookie {cookie}
-kernel inet_dist_use_interface {{127,0,0,1}}
-kernel inet_dist_listen_min {dist_port}
-kernel inet_dist_listen_max {dist_port}
-start_epmd false
-kernel error_logger silent
-sasl sasl_error_logger false
-kernel prevent_overlapping_partitions false
+Bd -noinput
-os_mon start_cpu_sup false
-os_mon start_memsup false
"""
LOCAL_INI = """\
; Written by integration/services/couchdb3.py, as the package's local.ini.
[couchdb]
database_dir = {data}
view_index_dir = {data}

[chttpd]
port = {port}
bind_address = 127.0.0.1

[log]
writer = file
file = {log}
level = info
"""


def couchdb_home():
    """The release directory (bin/couchdb, erts-*/, etc/default.ini)."""
    default = base.REPO_ROOT / ".cache" / "couchdb"
    return pathlib.Path(os.environ.get("COUCHDB_HOME") or default)


def _release_program(home, name):
    """bin/couchdb, or erts-*/bin/<name> of the release's own runtime."""
    if name == "couchdb":
        return home / "bin" / "couchdb"
    found = sorted(home.glob(f"erts-*/bin/{name}"))
    return found[-1] if found else home / "erts" / "bin" / name


class CouchDB3Server(base.ServiceProcess):
    """One CouchDB 3.x node with its files under ``workdir``."""

    name = "couchdb"
    kind = "couchdb3"
    api_version = "3"
    start_timeout = 60.0
    stop_timeout = 20.0

    def __init__(self, workdir, port=None, admin=("admin", "admin-secret")):
        super().__init__(workdir)
        self.port, self.epmd_port, self.dist_port = base.free_ports(3)
        if port:
            self.port = port
        self.home = couchdb_home()
        self.config_dir = self.workdir / "etc"
        self.data_dir = self.workdir / "data"
        self.log = self.server_log = self.workdir / "couchdb.log"
        self.node = f"couchdb-{secrets.token_hex(4)}@127.0.0.1"
        self._cookie = secrets.token_hex(16)
        self.admin = admin
        self._epmd = None
        self._laid_out = False
        self._ctl_pid_files = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def datastore_version(self):
        return "3.5.0"

    @property
    def epmd_pid(self):
        return self._epmd.pid if self._epmd else None

    # -- files and epmd ---------------------------------------------------

    def _require_release(self):
        program = _release_program(self.home, "couchdb")
        if not (program.is_file() and os.access(program, os.X_OK)):
            raise base.ServiceNotInstalled(
                "couchdb", f"{program} not found: run tools/bootstrap (it "
                "installs CouchDB 3.5.0 into .cache/couchdb), or set "
                "COUCHDB_HOME to a CouchDB 3.x release directory")
        return program

    def install(self):
        """Lay out etc/ and data/ (once) and start the node's epmd."""
        self._require_release()
        if not self._laid_out:
            # Once: what an upgrade deletes, the agent must put back.
            self._laid_out = True
            (self.config_dir / "local.d").mkdir(parents=True, exist_ok=True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            (self.config_dir / "vm.args").write_text(VM_ARGS.format(
                node=self.node, cookie=self._cookie,
                dist_port=self.dist_port))
            (self.config_dir / "vm.args").chmod(0o600)
            (self.config_dir / "local.ini").write_text(LOCAL_INI.format(
                data=self.data_dir, port=self.port, log=self.log))
        if self._epmd is None or not self._epmd.is_running():
            self._epmd = epmd_mod.Epmd(
                self.workdir, self.epmd_port, self.environment(),
                str(_release_program(self.home, "epmd")))
            self._epmd.start()
        return self

    def give_admin(self, username, password):
        """An [admins] ini, as an operator (or the agent) writes one."""
        path = self.config_dir / "local.d" / "00-test-admin.ini"
        path.write_text(f"[admins]\n{username} = {password}\n")
        path.chmod(0o600)

    def environment(self):
        """bin/couchdb's environment: this node's files, its epmd."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("COUCHDB_", "ERL_"))}
        env.update(server_environment(self.home, self.config_dir,
                                      self.epmd_port))
        return env

    # -- run by the tests -------------------------------------------------

    def command(self):
        return [str(self._require_release())]

    def is_ready(self):
        try:
            return requests.get(self.url + "/_up", timeout=1).status_code \
                in (200, 404)
        except requests.RequestException:
            return False

    def start(self):
        self.install()
        if self.admin:
            self.give_admin(*self.admin)
        return super().start()

    def session(self, auth=None):
        """A requests session on this node, as ``admin`` by default."""
        session = requests.Session()
        session.trust_env = False
        session.auth = auth or self.admin
        return session

    def stop(self, grace=None):
        """Stop the node (and any copy start_command ran), then epmd."""
        try:
            super().stop(grace)
        finally:
            try:
                for pid_file in self._ctl_pid_files:
                    subprocess.run(
                        shlex.split(self.stop_command(pid_file)),
                        stdin=subprocess.DEVNULL, capture_output=True,
                        timeout=base.scaled(60), check=False)
            finally:
                if self._epmd is not None:
                    self._epmd.stop()

    def kill(self):
        try:
            super().kill()
        finally:
            if self._epmd is not None:
                self._epmd.kill()

    # -- run by an agent ([couchdb] service_manager = command) -------------

    def start_command(self, pid_file, log=None, wait=True):
        """Shell-quoted command that starts this node detached.

        With ``wait=False`` it returns as soon as the node is spawned, as
        ``systemctl start couchdb`` does.
        """
        self.install()
        self._ctl_pid_files.append(pathlib.Path(pid_file))
        args = ["start", "--kind", self.kind, "--release", self.home,
                "--config-dir", self.config_dir, "--epmd-port",
                self.epmd_port, "--port", self.port, "--pid-file", pid_file,
                "--log", log or self.workdir / "couchdb.out"]
        if not wait:
            args.append("--no-wait")
        return ctl_command(*args)

    def stop_command(self, pid_file):
        return ctl_command("stop", "--kind", self.kind, "--config-dir",
                           self.config_dir, "--pid-file", pid_file)


def server_environment(home, config_dir, epmd_port):
    """The variables bin/couchdb reads, for a node of ``config_dir``."""
    home, config_dir = pathlib.Path(home), pathlib.Path(config_dir)
    ini_files = [home / "etc" / "default.ini", home / "etc" / "default.d",
                 config_dir / "local.ini", config_dir / "local.d"]
    return {
        "COUCHDB_ARGS_FILE": str(config_dir / "vm.args"),
        "COUCHDB_INI_FILES": " ".join(str(path) for path in ini_files),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "ERL_EPMD_PORT": str(epmd_port),
        "HOME": str(config_dir.parent),
    }


def ctl_command(*args):
    """integration/bin/couchdb-ctl with ``args``, quoted for a shell."""
    argv = [sys.executable, COUCHDB_CTL, *args]
    return " ".join(shlex.quote(str(arg)) for arg in argv)
