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
"""A single-node OpenStack Swift ("SAIO") on loopback, for the backup tests.

tools/install-swift installs PyPI swift into its own virtualenv
``.cache/swift-venv`` (the environment variable ``SWIFT_VENV`` points at
another one for development) and Debian's memcached.  A cluster is five
processes, each in the foreground with its PID known and its output in
``workdir/<name>.log``: its own memcached (tempauth keeps its tokens there),
then the account, container, object and proxy servers (``workers = 0``,
``-v`` so that they log to stderr: there is no /dev/log), every one on a
free port of 127.0.0.1 with one-replica rings over one device.  All its
files live under ``workdir``: ``etc`` (swift_dir: configs, rings, builders)
and ``srv/d1`` (the device).
"""

import concurrent.futures
import contextlib
import os
import pathlib
import pwd
import shutil
import subprocess
import urllib.error
import urllib.request

from swiftclient import client as swiftclient

from integration.services import base

RING_SERVERS = ("account", "container", "object")
SERVERS = RING_SERVERS + ("proxy",)
DEVICE = "d1"
PART_POWER = 10
HASH_PATH_SALT = "trove-couchdb-tests"

PROXY_PIPELINE = (
    "catch_errors gatekeeper healthcheck proxy-logging cache listing_formats "
    "bulk tempurl tempauth copy slo dlo proxy-logging proxy-server")
# The object server syncs an upload and drops it from the page cache every
# this many MiB (Swift's default: 512).  Swift shares the machine with the
# agent here: by reusing its pages, it stays off the cost of new ones on
# VMs whose free memory goes back to the host (on the machines this project
# is measured on, a 385 MB upload took the object server 2.7 CPU-s with
# 512, 1.3 with 16; trove/common/files.py's WriteBehind says more).
OBJECT_MB_PER_SYNC = 16
# Filters configured by nothing but their entry point.
PLAIN_FILTERS = ("catch_errors", "gatekeeper", "healthcheck", "proxy-logging",
                 "listing_formats", "bulk", "tempurl", "copy")


def swift_venv():
    """The virtualenv that holds PyPI swift (tools/install-swift)."""
    default = base.REPO_ROOT / ".cache" / "swift-venv"
    return pathlib.Path(os.environ.get("SWIFT_VENV") or default)


def _not_installed(what):
    return base.ServiceNotInstalled(
        "swift", f"{what} not found: run tools/bootstrap (it runs "
        "tools/install-swift), or set SWIFT_VENV to a virtualenv with swift")


def _environment():
    """Ours, minus what would make the swift venv import other packages."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def answers_ok(url, timeout=1.0):
    """True when ``GET url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def _ini(sections):
    """Render {section: {key: value}} as an ini file."""
    lines = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in options.items())
        lines.append("")
    return "\n".join(lines)


class Memcached(base.ServiceProcess):
    """A private memcached on 127.0.0.1 (TCP only) for tempauth's tokens."""

    name = "memcached"
    start_timeout = 10.0
    stop_timeout = 5.0

    def __init__(self, workdir, port):
        super().__init__(workdir)
        self.port = port

    def command(self):
        memcached = shutil.which("memcached") or "/usr/bin/memcached"
        if not os.access(memcached, os.X_OK):
            raise _not_installed("memcached (the Debian package)")
        # -u: memcached refuses to run as root without it; as anyone else
        # it is ignored.
        return [memcached, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0",
                "-m", "64", "-u", pwd.getpwuid(os.getuid()).pw_name]

    def is_ready(self):
        return base.listens(self.pid, self.port)


class SwiftServer(base.ServiceProcess):
    """One of swift-{account,container,object,proxy}-server, foreground.

    Ready when it listens on its port and ``GET /healthcheck`` says OK
    (every pipeline has the healthcheck filter).
    """

    start_timeout = 30.0
    stop_timeout = 10.0

    def __init__(self, workdir, kind, port, conf_file, venv):
        self.name = f"swift-{kind}"
        super().__init__(workdir)
        self.kind = kind
        self.port = port
        self.conf_file = pathlib.Path(conf_file)
        self.program = pathlib.Path(venv) / "bin" / f"swift-{kind}-server"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def command(self):
        if not os.access(self.program, os.X_OK):
            raise _not_installed(str(self.program))
        return [str(self.program), str(self.conf_file), "-v"]

    def environment(self):
        return _environment()

    def is_ready(self):
        return (base.listens(self.pid, self.port)
                and answers_ok(f"{self.url}/healthcheck"))


class SwiftCluster:
    """Memcached plus the four Swift servers, with tempauth test:tester.

    Ports are chosen at construction, configs and rings written by the
    first ``start()``; a restart (of the cluster or of the proxy alone)
    keeps the ports, the URLs, the data and, memcached permitting, the
    tokens.
    """

    user = "test:tester"
    key = "testing"
    account = "AUTH_test"

    def __init__(self, workdir, venv=None):
        self.workdir = pathlib.Path(workdir)
        self.venv = pathlib.Path(venv) if venv else swift_venv()
        self.etc_dir = self.workdir / "etc"
        self.devices_dir = self.workdir / "srv"
        *ports, memcached_port = base.free_ports(len(SERVERS) + 1)
        self.ports = dict(zip(SERVERS, ports, strict=True))
        self.memcached = Memcached(self.workdir, memcached_port)
        self.servers = {
            kind: SwiftServer(self.workdir, kind, self.ports[kind],
                              self.etc_dir / f"{kind}-server.conf", self.venv)
            for kind in SERVERS}
        self._configured = False

    @property
    def proxy(self):
        return self.servers["proxy"]

    @property
    def proxy_url(self):
        return self.proxy.url

    @property
    def auth_url(self):
        return f"{self.proxy_url}/auth/v1.0"

    @property
    def storage_url(self):
        return f"{self.proxy_url}/v1/{self.account}"

    @property
    def processes(self):
        """Every process, in start order."""
        return [self.memcached, *self.servers.values()]

    def pids(self):
        """PIDs of the cluster's processes that are running now."""
        return [proc.pid for proc in self.processes if proc.is_running()]

    # Lifecycle.
    def start(self):
        """Start everything (the servers side by side); wait until ready."""
        self._check_installed()
        running = [proc.name for proc in self.processes if proc.is_running()]
        if running:
            raise base.ServiceStartError(
                "swift", f"{', '.join(running)} already running "
                "(start_proxy() restarts the proxy alone)")
        if not self._configured:
            self._configure()
            self._configured = True
        try:
            self.memcached.start()
            for server in self.servers.values():
                server.spawn()
            for server in self.servers.values():
                server.wait_ready(base.scaled(server.start_timeout))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stop every process, in reverse order; escalate to kill."""
        with contextlib.ExitStack() as stack:
            for proc in self.processes:
                stack.callback(proc.stop)

    def stop_proxy(self):
        """Stop the proxy alone: Swift goes away, its data stays."""
        self.proxy.stop()

    def start_proxy(self):
        """Start the proxy again on the same port."""
        self.proxy.start()

    # Clients.
    def token_and_storage_url(self):
        """Auth v1 (tempauth): return ``(token, storage_url)``."""
        request = urllib.request.Request(self.auth_url, headers={
            "X-Storage-User": self.user, "X-Storage-Pass": self.key})
        try:
            with urllib.request.urlopen(
                    request, timeout=base.scaled(10)) as response:
                headers = response.headers
        except urllib.error.HTTPError as exc:
            raise base.ServiceError(
                "swift", f"auth v1 as {self.user}: HTTP {exc.code}") from None
        return headers["X-Auth-Token"], headers["X-Storage-Url"]

    def connection(self, **kwargs):
        """A swiftclient Connection with a fresh token; ``kwargs`` pass on
        (e.g. ``retries=0`` to see a failure at once)."""
        token, storage_url = self.token_and_storage_url()
        return swiftclient.Connection(preauthurl=storage_url,
                                      preauthtoken=token, **kwargs)

    # Setup.
    def _check_installed(self):
        for server in self.servers.values():
            server.command()
        self.memcached.command()
        builder = self.venv / "bin" / "swift-ring-builder"
        if not os.access(builder, os.X_OK):
            raise _not_installed(str(builder))

    def _configure(self):
        self.etc_dir.mkdir(parents=True, exist_ok=True)
        (self.devices_dir / DEVICE).mkdir(parents=True, exist_ok=True)
        (self.etc_dir / "swift.conf").write_text(_ini({
            "swift-hash": {"swift_hash_path_suffix": HASH_PATH_SALT,
                           "swift_hash_path_prefix": HASH_PATH_SALT},
            "storage-policy:0": {"name": "Policy-0", "default": "yes"}}))
        for kind in SERVERS:
            self.servers[kind].conf_file.write_text(
                _ini(self._server_config(kind)))
        # Side by side: each swift-ring-builder run is ~0.4 s of imports.
        with concurrent.futures.ThreadPoolExecutor(len(RING_SERVERS)) as pool:
            for future in [pool.submit(self._build_ring, kind)
                           for kind in RING_SERVERS]:
                future.result()

    def _server_config(self, kind):
        default = {
            "bind_ip": "127.0.0.1",
            "bind_port": self.ports[kind],
            "workers": 0,
            "user": pwd.getpwuid(os.getuid()).pw_name,
            "swift_dir": self.etc_dir,
            "devices": self.devices_dir,
            "mount_check": "false",
            "disable_fallocate": "true",
            "log_name": f"{kind}-server",
        }
        if kind != "proxy":
            app = {"use": f"egg:swift#{kind}"}
            if kind == "object":
                app["mb_per_sync"] = OBJECT_MB_PER_SYNC
            return {
                "DEFAULT": default,
                "pipeline:main": {"pipeline": f"healthcheck {kind}-server"},
                f"app:{kind}-server": app,
                "filter:healthcheck": {"use": "egg:swift#healthcheck"}}
        config = {
            "DEFAULT": default,
            "pipeline:main": {"pipeline": PROXY_PIPELINE},
            "app:proxy-server": {"use": "egg:swift#proxy",
                                 "account_autocreate": "true"},
            "filter:tempauth": {"use": "egg:swift#tempauth",
                                "user_test_tester": f"{self.key} .admin"},
            "filter:cache": {
                "use": "egg:swift#memcache",
                "memcache_servers": f"127.0.0.1:{self.memcached.port}"},
            # SLO takes segments of any size (min_segment_size is gone: 2.38
            # reports it as 1).  Without rate_limit_segments_per_sec = 0, a
            # GET of a large object made of small (< 1 MiB for SLO)
            # segments slows to one segment a second after the 10th.
            "filter:slo": {"use": "egg:swift#slo",
                           "rate_limit_segments_per_sec": 0},
            "filter:dlo": {"use": "egg:swift#dlo",
                           "rate_limit_segments_per_sec": 0},
        }
        for name in PLAIN_FILTERS:
            config[f"filter:{name}"] = {
                "use": f"egg:swift#{name.replace('-', '_')}"}
        return config

    def _build_ring(self, kind):
        """One replica, one device: ``etc/<kind>.ring.gz``."""
        builder = str(self.etc_dir / f"{kind}.builder")
        device = f"r1z1-127.0.0.1:{self.ports[kind]}/{DEVICE}"
        for args in (["create", PART_POWER, 1, 1], ["add", device, 1],
                     ["rebalance"]):
            argv = [str(self.venv / "bin" / "swift-ring-builder"), builder,
                    *map(str, args)]
            result = subprocess.run(
                argv, cwd=self.etc_dir, env=_environment(),
                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=base.scaled(60), check=False)
            if result.returncode != 0:
                raise base.ServiceStartError(
                    "swift", f"{' '.join(argv)} exited with status "
                    f"{result.returncode}:\n{result.stdout}{result.stderr}")
