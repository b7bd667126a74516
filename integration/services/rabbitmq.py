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
"""A private RabbitMQ broker (Debian's rabbitmq-server) for oslo.messaging.

It runs as the current user without systemd, with every file under its
workdir, on free loopback ports, with a node name unique to its AMQP port
and its own epmd (started here in the foreground, so its PID is known),
so that several brokers, or a developer's own, never collide.
"""

import os
import shutil
import subprocess

from integration.services import base
from integration.services import epmd as epmd_mod

RABBITMQ_BIN = "/usr/lib/rabbitmq/bin"
RABBITMQ_SERVER = f"{RABBITMQ_BIN}/rabbitmq-server"
# Never the bare /usr/sbin/rabbitmqctl: that wrapper switches user and
# starts an epmd on 0.0.0.0:4369.
RABBITMQCTL = f"{RABBITMQ_BIN}/rabbitmqctl"
ERL_ARGS = "-kernel inet_dist_use_interface {127,0,0,1}"


def _require(path, what):
    if not (path and os.access(path, os.X_OK)):
        raise base.ServiceNotInstalled(
            "rabbitmq", f"{what} not found ({path}): run tools/bootstrap "
            "(it installs the Debian package rabbitmq-server)")
    return path


class RabbitMQBroker(base.ServiceProcess):
    """A RabbitMQ node listening on 127.0.0.1, guest:guest allowed.

    The first ``start()`` picks free ports for AMQP, Erlang distribution
    and epmd (a restart after ``stop()`` or ``kill()`` reuses them and the
    node's data); ``transport_url`` is the oslo.messaging URL, ``amqp_url``
    the kombu one.
    """

    name = "rabbitmq"
    start_timeout = 60.0
    stop_timeout = 30.0

    def __init__(self, workdir):
        super().__init__(workdir)
        self.port = self.dist_port = self.epmd_port = None
        self.nodename = None
        self._epmd = None

    @property
    def transport_url(self):
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/"

    @property
    def amqp_url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def epmd_pid(self):
        return self._epmd.pid if self._epmd else None

    def environment(self):
        d = str(self.workdir)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": d,
            "LC_ALL": "C.UTF-8",
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_MNESIA_BASE": f"{d}/mnesia",
            "RABBITMQ_LOG_BASE": f"{d}/log",
            "RABBITMQ_CONFIG_FILE": f"{d}/rabbitmq",
            "RABBITMQ_ADVANCED_CONFIG_FILE": f"{d}/advanced.config",
            "RABBITMQ_CONF_ENV_FILE": f"{d}/rabbitmq-env.conf",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins",
            # The epmd is ours (see epmd.Epmd): erl must not daemonize another.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": f"{ERL_ARGS} "
                                                  "-start_epmd false",
            # rabbitmqctl's own distribution port: any free one (the
            # default is a fixed range inside the ephemeral range).
            "RABBITMQ_CTL_ERL_ARGS": ERL_ARGS,
            "RABBITMQ_CTL_DIST_PORT_MIN": "0",
            "RABBITMQ_CTL_DIST_PORT_MAX": "0",
        })
        return env

    def command(self):
        return [_require(RABBITMQ_SERVER, "rabbitmq-server")]

    def ctl(self, *args, timeout=30.0):
        """Run rabbitmqctl against this node; return the CompletedProcess."""
        return subprocess.run(
            [_require(RABBITMQCTL, "rabbitmqctl"), *args],
            env=self.environment(), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=base.scaled(timeout),
            check=False)

    def is_ready(self):
        # Fails at once until the node has registered with epmd.
        try:
            return self.ctl("-q", "await_startup", "--timeout", "10",
                            timeout=15).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def start(self):
        _require(RABBITMQ_SERVER, "rabbitmq-server")
        _require(RABBITMQCTL, "rabbitmqctl")
        if self.port is None:
            # Chosen once: a restart keeps the URL, node name and mnesia.
            self.port, self.dist_port, self.epmd_port = base.free_ports(3)
            self.nodename = f"rabbit-{self.port}@localhost"
        self._write_config()
        self._epmd = epmd_mod.Epmd(
            self.workdir, self.epmd_port, self.environment(),
            _require(shutil.which("epmd"), "epmd"))
        self._epmd.start()
        try:
            return super().start()
        except BaseException:
            self._epmd.stop()
            raise

    def _write_config(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "enabled_plugins").write_text("[].\n")
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n")

    def stop(self, grace=None):
        """``rabbitmqctl stop``, then stop its epmd; escalate to kill."""
        try:
            if self.is_running():
                try:
                    self.ctl("-q", "stop", timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    pass
                self._wait_exit(base.scaled(self.stop_timeout))
            super().stop(grace)
        finally:
            if self._epmd is not None:
                self._epmd.stop()

    def kill(self):
        try:
            super().kill()
        finally:
            if self._epmd is not None:
                self._epmd.kill()

    def _wait_exit(self, timeout):
        for _ in base.polling_loop(timeout):
            if not self.is_running():
                return
