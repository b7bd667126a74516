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
"""An Erlang port mapper of one test service, in the foreground.

RabbitMQ and CouchDB are Erlang nodes: each registers with an epmd, which
an Erlang node otherwise daemonizes on 0.0.0.0:4369 and leaves running.
Each test service starts its own here instead, on a free loopback port
with its PID known, and its nodes are told not to start one
(``-start_epmd false``).
"""

import subprocess

from integration.services import base


class Epmd(base.ServiceProcess):
    """``epmd -port PORT -address 127.0.0.1`` with its output in workdir."""

    name = "epmd"
    start_timeout = 10.0

    def __init__(self, workdir, port, env, program):
        super().__init__(workdir)
        self.port = port
        self.env = env
        self.program = program

    def command(self):
        return [self.program, "-port", str(self.port),
                "-address", "127.0.0.1"]

    def environment(self):
        return self.env

    def is_ready(self):
        return base.port_is_open(self.port)

    def stop(self, grace=None):
        """``epmd -kill`` on its own port, then SIGTERM/SIGKILL its PID."""
        if self.is_running():
            subprocess.run(self.command() + ["-kill"], env=self.env,
                           stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=base.scaled(10), check=False)
            self.wait_exit(base.scaled(5))
        super().stop(grace)

    def wait_exit(self, timeout):
        for _ in base.polling_loop(timeout):
            if not self.is_running():
                return True
        return False
