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
"""The test service controllers start, serve and stop real services."""

import os
import pathlib
import shlex
import socket
import subprocess

import kombu
import pytest
import requests

from integration.services import base
from integration.services.couchdb3 import CouchDB3Server
from integration.services.pouchdb import PouchDBServer
from integration.services.rabbitmq import RabbitMQBroker


def process_tree(pid):
    """pid and all its descendants alive right now."""
    children = {}
    for proc in pathlib.Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(proc.name))
    tree, todo = set(), [pid]
    while todo:
        current = todo.pop()
        tree.add(current)
        todo.extend(children.get(current, []))
    return tree


def wait_until_gone(pids, timeout=10):
    for _ in base.polling_loop(base.scaled(timeout)):
        alive = {pid for pid in pids if base.pid_exists(pid)}
        if not alive:
            break
    return alive


def assert_amqp_connects(url):
    with kombu.Connection(url) as connection:
        connection.ensure_connection(max_retries=3)
        assert connection.connected


def run(command):
    return subprocess.run(shlex.split(command), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL,
                          timeout=base.scaled(90), check=False)


# RabbitMQ

def test_broker_accepts_amqp_connections(rabbitmq):
    assert rabbitmq.transport_url == (
        f"rabbit://guest:guest@127.0.0.1:{rabbitmq.port}/")
    assert_amqp_connects(rabbitmq.amqp_url)


def test_second_broker_runs_beside_and_stops_without_leftovers(
        tmp_path, rabbitmq):
    broker = RabbitMQBroker(tmp_path)
    try:
        broker.start()
        mine = {broker.port, broker.dist_port, broker.epmd_port}
        theirs = {rabbitmq.port, rabbitmq.dist_port, rabbitmq.epmd_port}
        assert len(mine) == 3 and not mine & theirs
        assert broker.nodename != rabbitmq.nodename
        assert_amqp_connects(broker.amqp_url)
        pids = process_tree(broker.pid) | {broker.epmd_pid}
    finally:
        broker.stop()

    assert not wait_until_gone(pids)
    assert not base.port_is_open(broker.port)
    assert not base.port_is_open(broker.epmd_port)
    assert_amqp_connects(rabbitmq.amqp_url)


def test_killed_broker_leaves_no_process_and_restarts_on_its_url(tmp_path):
    broker = RabbitMQBroker(tmp_path)
    try:
        broker.start()
        url = broker.transport_url
        pids = process_tree(broker.pid) | {broker.epmd_pid}
        broker.kill()

        assert not broker.is_running()
        assert not wait_until_gone(pids)
        assert not base.port_is_open(broker.epmd_port)

        broker.start()
        assert broker.transport_url == url
        assert_amqp_connects(broker.amqp_url)
    finally:
        broker.stop()


# pouchdb-server

def test_pouchdb_serves_and_stops(pouchdb):
    welcome = requests.get(pouchdb.url + "/", timeout=5).json()
    assert welcome["version"] == "4.2.0"
    assert requests.put(pouchdb.url + "/db1", timeout=5).status_code == 201
    assert (pouchdb.data_dir / "db1").is_dir()
    assert pouchdb.data_dir not in pouchdb.config_file.parents
    pid = pouchdb.pid

    pouchdb.stop()

    assert not pouchdb.is_running()
    assert not base.pid_exists(pid)
    assert not base.port_is_open(pouchdb.port)


def test_killed_pouchdb_restarts_with_its_data(pouchdb):
    doc_url = pouchdb.url + "/db1/doc1"
    requests.put(pouchdb.url + "/db1", timeout=5).raise_for_status()
    requests.put(doc_url, json={"a": 1}, timeout=5).raise_for_status()
    pid = pouchdb.pid

    pouchdb.kill()

    assert not pouchdb.is_running()
    assert not base.pid_exists(pid)
    assert not base.port_is_open(pouchdb.port)
    pouchdb.start()
    assert requests.get(doc_url, timeout=5).json()["a"] == 1


def test_pouchdb_is_patched_against_its_known_crashes(pouchdb):
    admin = ("admin", "secret")
    requests.put(pouchdb.url + "/_config/admins/admin", json="secret",
                 timeout=5).raise_for_status()

    # Upstream crashes here (issue #374) and then refuses every delete.
    refused = requests.put(pouchdb.url + "/newdb", timeout=5)

    assert refused.status_code == 401
    assert pouchdb.is_running()
    created = requests.put(pouchdb.url + "/db2", auth=admin, timeout=5)
    assert created.status_code == 201
    deleted = requests.delete(pouchdb.url + "/db2", auth=admin, timeout=5)
    assert deleted.status_code == 200


def test_pouchdb_factory_starts_independent_servers(pouchdb_factory):
    first, second = pouchdb_factory(2)
    (third,) = pouchdb_factory()

    servers = (first, second, third)
    assert len({s.port for s in servers}) == 3
    assert len({s.data_dir for s in servers}) == 3
    requests.put(first.url + "/only-here", timeout=5).raise_for_status()
    for server in servers:
        dbs = requests.get(server.url + "/_all_dbs", timeout=5).json()
        assert ("only-here" in dbs) == (server is first)


def test_missing_pouchdb_server_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("POUCHDB_SERVER_HOME", str(tmp_path / "nowhere"))

    with pytest.raises(base.ServiceNotInstalled, match="tools/bootstrap"):
        PouchDBServer(tmp_path / "pouchdb").start()


# integration/bin/couchdb-ctl, the agent's service manager command

def test_couchdb_ctl_starts_and_stops_idempotently(tmp_path):
    server = PouchDBServer(tmp_path / "managed")
    pid_file = tmp_path / "run" / "couchdb.pid"
    start = server.start_command(pid_file, tmp_path / "log" / "couchdb.log")
    stop = server.stop_command(pid_file)
    try:
        first = run(start)
        assert first.returncode == 0, first.stderr
        pid = int(pid_file.read_text())
        assert requests.get(server.url + "/", timeout=5).ok
        again = run(start)
        assert again.returncode == 0, again.stderr
        assert int(pid_file.read_text()) == pid

        stopped = run(stop)
        assert stopped.returncode == 0, stopped.stderr
        assert not base.pid_exists(pid)
        assert not pid_file.exists()
        assert not base.port_is_open(server.port)
        assert run(stop).returncode == 0
    finally:
        server.stop()


def test_couchdb_ctl_start_fails_when_the_server_cannot_listen(
        tmp_path, pouchdb):
    taken = PouchDBServer(tmp_path / "second", port=pouchdb.port)
    pid_file = tmp_path / "second.pid"
    try:
        result = run(taken.start_command(pid_file, tmp_path / "second.log"))
    finally:
        taken.stop()

    assert result.returncode != 0
    assert "pouchdb-server exited" in result.stderr
    assert not pid_file.exists()


def test_couchdb_ctl_stop_never_signals_a_foreign_pid(tmp_path):
    pid_file = tmp_path / "stale.pid"
    with subprocess.Popen(["sleep", "300"]) as foreign:
        try:
            pid_file.write_text(f"{foreign.pid}\n")

            result = run(PouchDBServer(tmp_path).stop_command(pid_file))

            assert result.returncode == 0, result.stderr
            assert foreign.poll() is None
            assert not pid_file.exists()
        finally:
            foreign.kill()


# The real CouchDB 3.5

def listening_addresses(pids):
    """(address, port) of every TCP socket these processes listen on."""
    inodes = set()
    for pid in pids:
        try:
            fds = list(pathlib.Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                inodes.add(os.readlink(fd))
            except OSError:
                continue
    found = set()
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        for row in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] != "0A" or f"socket:[{fields[9]}]" not in inodes:
                continue
            address, port = fields[1].split(":")
            found.add((_address(address, family), int(port, 16)))
    return found


def _address(hex_address, family):
    raw = bytes.fromhex(hex_address)
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def test_couchdb3_node_listens_on_loopback_only_and_stops_whole(tmp_path):
    server = CouchDB3Server(tmp_path / "node")
    try:
        server.start()
        session = server.session()
        info = session.get(server.url + "/", timeout=10).json()
        assert info["version"].startswith("3.")
        node = session.get(server.url + "/_node/_local", timeout=10).json()
        assert node["name"] == server.node
        assert (session.get(server.url + "/_node/_local/_config/couchdb/"
                            "database_dir", timeout=10).json()
                == str(server.data_dir))
        pids = process_tree(server.pid) | {server.epmd_pid}
        addresses = listening_addresses(pids)
        ports = {port for _address, port in addresses}
        assert {server.port, server.epmd_port} <= ports
        assert {address for address, _port in addresses} <= {
            "127.0.0.1", "::1"}, addresses
    finally:
        server.stop()
    assert wait_until_gone(pids) == set()
    assert not base.port_is_open(server.port)
    assert not base.port_is_open(server.epmd_port)


def test_couchdb3_refuses_to_start_without_an_admin(tmp_path):
    server = CouchDB3Server(tmp_path / "node", admin=None)
    try:
        with pytest.raises(base.ServiceStartError) as raised:
            server.start()
    finally:
        server.stop()
    assert "No Admin Account Found" in server.log_file.read_text()
    assert "exited" in str(raised.value)


@pytest.mark.parametrize("wait", [True, False], ids=["waits", "at-once"])
def test_couchdb_ctl_runs_a_couchdb3_node(tmp_path, wait):
    server = CouchDB3Server(tmp_path / "node")
    pid_file = tmp_path / "run" / "couchdb.pid"
    start = server.start_command(pid_file, tmp_path / "couchdb.out",
                                 wait=wait)
    stop = server.stop_command(pid_file)
    try:
        server.give_admin(*server.admin)
        first = run(start)
        assert first.returncode == 0, first.stderr
        pid = int(pid_file.read_text())
        for _ in base.polling_loop(base.scaled(30)):
            if server.is_ready():
                break
        assert server.session().get(server.url + "/_up", timeout=5).ok
        again = run(start)
        assert "already running" in again.stdout
        assert int(pid_file.read_text()) == pid

        tree = process_tree(pid)
        stopped = run(stop)
        assert stopped.returncode == 0, stopped.stderr
        assert wait_until_gone(tree) == set()
        assert not pid_file.exists()
        assert run(stop).returncode == 0
    finally:
        server.stop()


def test_couchdb_ctl_reports_a_couchdb3_that_refuses_to_start(tmp_path):
    server = CouchDB3Server(tmp_path / "node", admin=None)
    pid_file = tmp_path / "couchdb.pid"
    try:
        result = run(server.start_command(pid_file, tmp_path / "out.log"))
    finally:
        server.stop()
    assert result.returncode != 0
    assert "CouchDB exited" in result.stderr
    assert "No Admin Account Found" in result.stderr
    assert not pid_file.exists()


def test_couchdb_ctl_stop_never_signals_another_couchdb3(tmp_path):
    ours = CouchDB3Server(tmp_path / "ours")
    other = CouchDB3Server(tmp_path / "other")
    pid_file = tmp_path / "ours.pid"
    try:
        other.start()
        ours.install()
        pid_file.write_text(f"{other.pid}\n")
        result = run(ours.stop_command(pid_file))
        assert result.returncode == 0, result.stderr
        assert other.is_running() and other.is_ready()
    finally:
        ours.stop()
        other.stop()
