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
"""Controllers for the real services the integration tests run.

One controller class per service (start, wait until ready, stop, escalate to
kill), every wait bounded by a deadline scaled by one multiplier for slow
machines: ``TEST_TIMEOUT_FACTOR`` (default 1.0).  Processes are started in
their own process group, their PID is recorded and they are only ever
signalled by that PID / process group, never by name.
"""

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT_FACTOR = float(os.environ.get("TEST_TIMEOUT_FACTOR", "1.0"))


class ServiceError(Exception):
    """Root of the errors raised by the test service controllers."""

    def __init__(self, service, message):
        super().__init__(f"{service}: {message}")
        self.service = service


class ServiceNotInstalled(ServiceError):
    """A program the service needs is missing (run tools/bootstrap)."""


class ServiceStartError(ServiceError):
    """The service exited or did not become ready before its deadline."""


class ServiceStopError(ServiceError):
    """The service survived SIGKILL (should never happen)."""


def scaled(seconds):
    """Return ``seconds`` multiplied by the machine's timeout factor."""
    return seconds * TIMEOUT_FACTOR


def polling_loop(timeout, interval=0.1):
    """Yield until ``timeout`` seconds have passed, sleeping between tries.

    The body runs at least once; the caller returns from the loop on
    success and handles the deadline after it.
    """
    deadline = time.monotonic() + timeout
    while True:
        yield
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def free_ports(count):
    """Return ``count`` distinct TCP ports free on 127.0.0.1 right now."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def free_port():
    """Return one TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def port_is_open(port, host="127.0.0.1"):
    """Return True when something accepts TCP connections on the port."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def listens(pid, port):
    """True when process ``pid`` has a TCP socket listening on ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = pathlib.Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rpartition(":")[2], 16)
            if local_port == port and fields[3] == "0A":  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    try:
        fds = list(pathlib.Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in inodes:
                return True
        except OSError:
            continue
    return False


def pid_exists(pid):
    """True while ``pid`` is a live process (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def group_exists(pgid):
    """True while any process of the process group ``pgid`` is alive."""
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def log_tail(path, lines=20):
    """Return the last lines of a log file, for error messages."""
    try:
        text = pathlib.Path(path).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ServiceProcess:
    """One long-running process of a test service.

    Subclasses provide :meth:`command` and :meth:`is_ready` and may
    override :meth:`environment` and :attr:`cwd`.  The process runs in its
    own process group with stdout and stderr in ``workdir/<name>.log``.
    """

    name = "service"
    start_timeout = 30.0
    stop_timeout = 15.0

    def __init__(self, workdir):
        self.workdir = pathlib.Path(workdir)
        self.log_file = self.workdir / f"{self.name}.log"
        self.process = None

    # To be provided by subclasses.
    def command(self):
        raise NotImplementedError

    def is_ready(self):
        raise NotImplementedError

    def environment(self):
        return None

    @property
    def cwd(self):
        return self.workdir

    # Lifecycle.
    @property
    def pid(self):
        return self.process.pid if self.process else None

    def is_running(self):
        return self.process is not None and self.process.poll() is None

    def spawn(self):
        """Start the command without waiting for readiness."""
        if self.is_running():
            raise ServiceStartError(self.name,
                                    f"already running as {self.pid}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), cwd=self.cwd, env=self.environment(),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        return self.pid

    def start(self):
        self.spawn()
        try:
            self.wait_ready(scaled(self.start_timeout))
        except BaseException:
            self.kill()
            raise
        return self

    def wait_ready(self, timeout):
        """Poll :meth:`is_ready` until it is true or ``timeout`` passes."""
        for _ in polling_loop(timeout, interval=0.2):
            if not self.is_running():
                raise ServiceStartError(
                    self.name, f"exited with status {self.process.returncode}"
                    f" before it was ready; log {self.log_file}:\n"
                    f"{log_tail(self.log_file)}")
            if self.is_ready():
                return
        raise ServiceStartError(
            self.name, f"not ready after {timeout:.0f} s; log {self.log_file}:"
            f"\n{log_tail(self.log_file)}")

    def stop(self, grace=None):
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
        if self._gone():
            return
        grace = scaled(self.stop_timeout) if grace is None else grace
        self._signal_group(signal.SIGTERM)
        if not self._wait_group_exit(grace):
            self._signal_group(signal.SIGKILL)
            self._wait_group_exit(scaled(10))
        self._reap()

    def kill(self):
        """SIGKILL the process group (simulates a crash) and reap it."""
        if self._gone():
            return
        self._signal_group(signal.SIGKILL)
        self._wait_group_exit(scaled(10))
        self._reap()

    # Helpers.
    def _gone(self):
        """True when nothing of the process group is left to signal."""
        if self.process is None:
            return True
        return (self.process.poll() is not None
                and not group_exists(self.process.pid))

    def _signal_group(self, signum):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def _wait_group_exit(self, timeout):
        for _ in polling_loop(timeout, interval=0.05):
            self.process.poll()
            if not group_exists(self.process.pid):
                return True
        return False

    def _reap(self):
        try:
            self.process.wait(timeout=scaled(10))
        except subprocess.TimeoutExpired:
            raise ServiceStopError(
                self.name, f"PID {self.pid} survived SIGKILL") from None
