"""Prepare bookkeeping and heartbeats, as the conductor receives them.

The conductor stand-in listens on an in-process ``fake://`` transport and
decrypts messages with the instance key, like Trove's conductor.
"""

import time

import oslo_messaging as messaging
import pytest

from integration import conductor
from trove.common.instance import ServiceStatus
from trove.common import context as trove_context
from trove.guestagent.datastore import service
from trove import rpc

KEY = 'status-key'


@pytest.fixture
def listener(conf):
    conf.config(instance_rpc_encr_key=KEY)
    rpc.TRANSPORT = messaging.get_rpc_transport(rpc.CONF, url='fake:///')
    listen = conductor.ConductorListener(rpc.TRANSPORT)
    listen.keys['g-1'] = KEY
    listen.start()
    yield listen
    listen.stop()
    rpc.cleanup()


class Database:
    """What the database shows; the test changes it between heartbeats."""

    def __init__(self):
        self.status = ServiceStatus.RUNNING

    def observe(self):
        return self.status


def _status(db):
    return service.GuestStatus(db.observe, trove_context.TroveContext)


def _wait_statuses(listener, count, since):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        statuses = listener.statuses('g-1', since)
        if len(statuses) >= count:
            return statuses
        time.sleep(0.02)
    raise AssertionError(listener.statuses('g-1', since))


def test_no_heartbeat_before_prepare(listener):
    status = _status(Database())
    assert status.current() is None
    status.heartbeat()
    time.sleep(0.2)
    assert listener.statuses('g-1') == []


def test_prepare_reports_building_then_the_observed_status(listener):
    db = Database()
    status = _status(db)
    since = time.time()
    status.begin_install()
    status.heartbeat()
    status.end_install()
    assert _wait_statuses(listener, 3, since) == ['building', 'building',
                                                  'running']
    db.status = ServiceStatus.CRASHED
    status.heartbeat()
    assert _wait_statuses(listener, 4, since)[-1] == 'crashed'


def test_failed_prepare_reports_failed_to_spawn(listener):
    status = _status(Database())
    since = time.time()
    status.begin_install()
    status.end_install(error_occurred=True)
    assert _wait_statuses(listener, 2, since) == ['building',
                                                  'failed to spawn']
    status.heartbeat()
    assert _wait_statuses(listener, 3, since)[-1] == 'failed to spawn'


def test_markers_survive_an_agent_restart(listener):
    db = Database()
    _status(db).begin_install()
    _status(db).end_install()
    restarted = _status(db)
    db.status = ServiceStatus.SHUTDOWN
    assert restarted.current() is ServiceStatus.SHUTDOWN


def test_prepare_interrupted_by_a_restart_is_a_failure(listener):
    _status(Database()).begin_install()
    restarted = _status(Database())
    assert restarted.current() is ServiceStatus.FAILED


def test_restart_required_only_while_running(listener):
    db = Database()
    status = _status(db)
    status.begin_install()
    status.end_install()
    status.set_restart_required()
    assert status.current() is ServiceStatus.RESTART_REQUIRED
    db.status = ServiceStatus.SHUTDOWN
    assert status.current() is ServiceStatus.SHUTDOWN


def test_heartbeats_carry_increasing_sent_times(listener):
    status = _status(Database())
    status.begin_install()
    status.end_install()
    since = time.time()
    for _ in range(3):
        status.heartbeat()
    _wait_statuses(listener, 3, since)
    sent = [m.kwargs['sent'] for m in listener.select('heartbeat', 'g-1')
            if m.kwargs['sent'] >= since]
    assert len(sent) == 3 and len(set(sent)) == 3
