"""The conductor stand-in holds what Trove 26's conductor would hold.

Messages are fed to the listener's endpoint methods directly, in the order
a thread pool may deliver them (no broker): a heartbeat or backup update
that Trove would drop must not change what the listener says Trove shows.
"""

import oslo_messaging as messaging
import pytest

from integration import conductor
from trove.common import cfg

CONTEXT = {}


@pytest.fixture
def listener():
    transport = messaging.get_rpc_transport(cfg.CONF, url='fake:///')
    yield conductor.ConductorListener(transport)
    transport.cleanup()


def _beat(listener, status, sent, instance_id='g-1'):
    listener.heartbeat(CONTEXT, instance_id, {'service_status': status},
                       sent=sent)


def test_the_newest_heartbeat_sets_the_status_whatever_arrives_last(
        listener):
    _beat(listener, 'building', 100.0)
    _beat(listener, 'running', 102.0)
    _beat(listener, 'crashed', 101.0)       # stale, handled last
    _beat(listener, 'shutdown', 102.0)      # not newer: dropped too
    assert listener.status('g-1') == 'running'
    assert [m.applied for m in listener.messages] == [True, True, False,
                                                      False]
    # Every message is still recorded, in the order the guest sent them.
    assert listener.statuses('g-1') == ['building', 'crashed', 'running',
                                        'shutdown']
    # Another instance has its own order.
    _beat(listener, 'blocked', 50.0, instance_id='g-2')
    assert (listener.status('g-1'), listener.status('g-2')) == (
        'running', 'blocked')


def test_wait_for_status_waits_for_the_status_trove_holds(listener):
    _beat(listener, 'running', 200.0)
    _beat(listener, 'crashed', 199.0)       # stale, arrives last
    with pytest.raises(AssertionError) as raised:
        listener.wait_for_status('g-1', 'crashed', timeout=0.2, since=0)
    assert "holds <heartbeat applied {'instance_id': 'g-1'" in str(
        raised.value)
    held = listener.wait_for_status('g-1', 'running', timeout=0.2, since=0)
    assert held.kwargs['sent'] == 200.0
    # Only a heartbeat received since ``since`` counts.
    with pytest.raises(AssertionError):
        listener.wait_for_status('g-1', 'running', timeout=0.2)


def test_heartbeats_trove_would_not_apply(listener):
    _beat(listener, 'running', 300.0)
    _beat(listener, 'upgrading', 301.0)     # not a status Trove 26 knows
    assert listener.status('g-1') == 'running'
    _beat(listener, 'crashed', None)        # no sent: applied, mark kept
    assert listener.status('g-1') == 'crashed'
    _beat(listener, 'running', 301.0)       # not newer than 'upgrading'
    assert listener.status('g-1') == 'crashed'


def _update(listener, instance_id, sent, **fields):
    listener.update_backup(CONTEXT, instance_id, 'b-1', sent=sent, **fields)


def test_an_update_backup_applies_as_trove_applies_it(listener):
    _update(listener, 'g-1', 10.0, state='BUILDING')   # no row yet
    assert listener.backup_row('b-1') is None
    listener.create_backup_row('b-1', 'g-1')
    # Another instance's update of the backup is not applied.
    _update(listener, 'g-2', 11.0, state='FAILED')
    assert listener.backup_row('b-1')['state'] == 'NEW'
    _update(listener, 'g-1', 12.0, state='COMPLETED', location='swift://x',
            checksum='c' * 32, note='a note', success=True)
    # An update sent before the last one kept, handled after it.
    _update(listener, 'g-1', 11.5, state='BUILDING', size=1.5)
    # Only the columns of Trove's backups table are written.
    assert listener.backup_row('b-1') == {
        'id': 'b-1', 'instance_id': 'g-1', 'state': 'COMPLETED',
        'location': 'swift://x', 'checksum': 'c' * 32}
    assert [m.applied for m in listener.messages] == [False, False, True,
                                                      False]
