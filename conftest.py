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
"""Fixtures that run real services (see integration/services).

A service that is not installed makes the test fail with a message saying
what to run; it is never skipped.
"""

import contextlib

import pytest

# Select oslo.service's threading backend before any test imports
# oslo.messaging (which would otherwise pick the eventlet default).
import trove  # noqa: F401

# The scenario runners and helpers assert outside test modules: have
# pytest explain their failures as it does in tests.
pytest.register_assert_rewrite("integration.scenario")

from integration.services.fixtures import start_or_fail as _start  # noqa: E402
from integration.services.fixtures import swift  # noqa: F401,E402
from integration.services.pouchdb import PouchDBServer  # noqa: E402
from integration.services.rabbitmq import RabbitMQBroker  # noqa: E402



@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory):
    """A RabbitMQ broker for the whole session: use .transport_url."""
    broker = RabbitMQBroker(tmp_path_factory.mktemp("rabbitmq"))
    try:
        yield _start(broker)
    finally:
        broker.stop()


@pytest.fixture
def pouchdb(tmp_path):
    """A started pouchdb-server: .url, .port, .data_dir, .config_file."""
    server = PouchDBServer(tmp_path / "pouchdb")
    try:
        yield _start(server)
    finally:
        server.stop()


@pytest.fixture
def pouchdb_factory(tmp_path):
    """``pouchdb_factory(n=1)`` starts n more servers and returns them.

    Every server it started is stopped at the end of the test.
    """
    servers = []

    def start(n=1):
        started = []
        for _ in range(n):
            server = PouchDBServer(tmp_path / f"pouchdb{len(servers)}")
            servers.append(server)
            started.append(_start(server))
        return started

    try:
        yield start
    finally:
        with contextlib.ExitStack() as stack:
            for server in servers:
                stack.callback(server.stop)


def pytest_addoption(parser):
    parser.addoption(
        "--scenario-group", action="append", default=[],
        metavar="NAME", help="run these scenario groups together in "
        "integration/test_scenarios.py (repeatable): instance_create, "
        "database_actions, user_actions, root_actions, configuration, "
        "backup, replication, instance_delete")
