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
"""pouchdb-server 4.2.0 (patched), the CouchDB 1.6 stand-in of the tests.

tools/bootstrap installs it into ``.cache/pouchdb-server``; the environment
variable ``POUCHDB_SERVER_HOME`` points at another npm prefix (a directory
holding ``node_modules/pouchdb-server``) for development.  Its config file
(where ``/_config`` changes, admins included, persist) is kept outside the
data directory, as CouchDB keeps ``/etc/couchdb`` apart from its data.
"""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import urllib.error
import urllib.request

from integration.services import base

COUCHDB_CTL = base.REPO_ROOT / "integration" / "bin" / "couchdb-ctl"


def pouchdb_home():
    """The npm prefix that holds node_modules/pouchdb-server."""
    default = base.REPO_ROOT / ".cache" / "pouchdb-server"
    return pathlib.Path(os.environ.get("POUCHDB_SERVER_HOME") or default)


def pouchdb_server_script(home=None):
    home = pathlib.Path(home) if home else pouchdb_home()
    return home / "node_modules" / "pouchdb-server" / "bin" / "pouchdb-server"


def answers(url, timeout=1.0):
    """True when an HTTP server answers ``GET url`` (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


class PouchDBServer(base.ServiceProcess):
    """One pouchdb-server on 127.0.0.1 with its files under ``workdir``.

    ``workdir/data`` is the data directory (and the server's cwd),
    ``workdir/etc/config.json`` its config file, ``workdir/pouchdb.log``
    its output.  The port is chosen at construction unless given.
    """

    name = "pouchdb"
    kind = "pouchdb"
    api_version = "1"
    datastore_version = "1.6"
    # It reads no ini file: the agent's [couchdb] config_dir is its own.
    config_dir = None
    # Its log is its output (start_command's ``log``).
    server_log = None
    start_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, workdir, port=None):
        super().__init__(workdir)
        self.port = port or base.free_port()
        self.data_dir = self.workdir / "data"
        self.config_file = self.workdir / "etc" / "config.json"
        self.home = pouchdb_home()
        self._ctl_pid_files = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def cwd(self):
        return self.data_dir

    def _prepare(self):
        script = pouchdb_server_script(self.home)
        if not script.is_file():
            raise base.ServiceNotInstalled(
                "pouchdb", f"{script} not found: run tools/bootstrap, or set "
                "POUCHDB_SERVER_HOME to an npm prefix with pouchdb-server")
        node = shutil.which("node")
        if not node:
            raise base.ServiceNotInstalled(
                "pouchdb", "node not found on PATH: run tools/bootstrap")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        return node, script

    def command(self):
        node, script = self._prepare()
        return [node, "--unhandled-rejections=warn", str(script),
                "-o", "127.0.0.1", "-p", str(self.port),
                "-d", f"{self.data_dir}/", "-c", str(self.config_file),
                "--no-color"]

    def is_ready(self):
        # Ours (not whatever else holds the port) listens and answers.
        return (base.listens(self.pid, self.port)
                and answers(self.url + "/"))

    def stop(self, grace=None):
        """Stop it (and any copy started by start_command); wait for exit."""
        try:
            super().stop(grace)
        finally:
            for pid_file in self._ctl_pid_files:
                subprocess.run(shlex.split(self.stop_command(pid_file)),
                               stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=base.scaled(60), check=False)

    # The same server run by a service manager (the agent's
    # ``[couchdb] service_manager = command``): see integration/bin.
    def start_command(self, pid_file, log, wait=True):
        """Shell-quoted command that starts this server detached.

        With ``wait=False`` it returns as soon as the server is spawned,
        as ``systemctl start`` does.
        """
        self._ctl_pid_files.append(pathlib.Path(pid_file))
        args = ["start", "--data-dir", self.data_dir,
                "--config", self.config_file, "--port", self.port,
                "--pid-file", pid_file, "--log", log,
                "--pouchdb-home", self.home]
        return self._ctl(*args, *(() if wait else ("--no-wait",)))

    def stop_command(self, pid_file):
        """Shell-quoted command that stops the server of ``pid_file``."""
        return self._ctl("stop", "--pid-file", pid_file)

    @staticmethod
    def _ctl(*args):
        argv = [sys.executable, COUCHDB_CTL, *args]
        return " ".join(shlex.quote(str(arg)) for arg in argv)
