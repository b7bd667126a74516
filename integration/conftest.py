"""Fixtures of the integration tests: a control plane and simulated guests.

The test process plays Trove's control plane: it talks to each agent only
through ``trove/guestagent/api.py`` over the real RabbitMQ broker, with RPC
encryption on, and reads what the agents send to the conductor from
``ConductorListener``.
"""

import oslo_messaging as messaging
import pytest

from integration import conductor as conductor_listener
from integration import guest as guest_mod
from integration.services import servers
import trove.common.cfg  # noqa: F401  (registers the options)
from trove import rpc


@pytest.fixture(scope='session')
def control_plane(rabbitmq):
    rpc.set_defaults('trove')
    rpc.TRANSPORT = messaging.get_rpc_transport(
        rpc.CONF, url=rabbitmq.transport_url,
        allowed_remote_exmods=rpc.ALLOWED_EXMODS)
    listener = conductor_listener.ConductorListener(rpc.TRANSPORT).start()
    yield listener
    listener.stop()
    rpc.cleanup()


@pytest.fixture(scope='session', params=servers.KINDS)
def server_kind(request):
    """The server every guest of the test runs: each test runs on both,
    the real CouchDB 3.5 first (session scope: the tests of one server
    run together, and module fixtures such as a backed-up source follow
    it)."""
    return request.param


@pytest.fixture
def guest_factory(tmp_path, rabbitmq, control_plane, server_kind):
    """Start guests: an agent process managing its own CouchDB server."""
    started = []

    def make(name='guest', auth=None, **agent_kwargs):
        workdir = tmp_path / name
        couchdb = servers.make_server(server_kind, workdir / 'couchdb')
        couchdb.data_dir.mkdir(parents=True, exist_ok=True)
        agent = guest_mod.GuestAgent(workdir / 'agent',
                                     rabbitmq.transport_url, couchdb,
                                     **agent_kwargs)
        started.append(agent)
        agent.start()
        return guest_mod.Guest(agent, control_plane, **(auth or {}))

    yield make
    for agent in reversed(started):
        try:
            agent.stop()
        finally:
            agent.couchdb.stop()


@pytest.fixture
def guest(guest_factory):
    return guest_factory()


@pytest.fixture
def prepared_guest(guest):
    message = guest.prepare_and_wait()
    assert message.kwargs['payload']['service_status'] == 'running', (
        guest.agent.log_text()[-3000:])
    return guest
