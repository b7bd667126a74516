"""The agent's RPC endpoint, seen from Trove's side of the wire.

A real oslo.messaging server (in-process ``fake://`` transport, threading
executor) serves the CouchDB manager with RPC encryption on; calls go through
``trove/guestagent/api.py`` exactly as Trove's taskmanager makes them.
"""

import ast
import inspect
import json
import pathlib

import oslo_messaging as messaging
from oslo_serialization import jsonutils
import pytest

from trove.common import context as trove_context
from trove.common import exception
from trove.common.rpc import conductor_guest_serializer as guest_sz
from trove.common.rpc import conductor_host_serializer as host_sz
from trove.common.rpc import secure_serializer as ssz
from trove.common.rpc import serializer as sz
from trove.guestagent import api as guest_api
from trove.guestagent.datastore.experimental.couchdb import manager
from trove import rpc

KEY = 'the-instance-key'

TROVE26_SITE = (pathlib.Path(__file__).resolve().parents[2] / '.cache' /
                'trove26-venv' / 'lib')


def trove26_guest_calls():
    """{method: keyword names} of every guest call Trove 26's own client
    (``trove/guestagent/api.py`` of the Trove 26 venv) can send: each
    ``self._call(...)``/``self._cast(...)``, its method name and the
    keywords it sends beyond ``version``, those of a ``**args`` built as
    ``args = dict(...)`` in the same method included."""
    found = sorted(TROVE26_SITE.glob(
        'python3*/site-packages/trove/guestagent/api.py'))
    if not found:
        pytest.fail('Trove 26 is not installed in %s: run tools/bootstrap'
                    % TROVE26_SITE.parent, pytrace=False)
    calls = {}
    for func in ast.walk(ast.parse(found[0].read_text())):
        if isinstance(func, ast.FunctionDef):
            _read_calls(func, calls)
    return calls


def _read_calls(func, calls):
    built = {}
    for node in ast.walk(func):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)
                and node.value.func.id == 'dict'):
            built[node.targets[0].id] = {kw.arg for kw in node.value.keywords}
    for node in ast.walk(func):
        if not (isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ('_call', '_cast')
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == 'self'):
            continue
        sent = calls.setdefault(node.args[0].value, set())
        for kw in node.keywords:
            if kw.arg is None and isinstance(kw.value, ast.Name):
                sent.update(built.get(kw.value.id, ()))
            elif kw.arg != 'version':
                sent.add(kw.arg)


TROVE26_CALLS = trove26_guest_calls()


def _context():
    return trove_context.TroveContext(
        auth_token='token-1', project_id='tenant-1', request_id='req-1',
        service_catalog=[{'type': 'object-store', 'endpoints': []}])


@pytest.fixture
def fake_transport():
    rpc.TRANSPORT = messaging.get_rpc_transport(
        rpc.CONF, url='fake:///', allowed_remote_exmods=rpc.ALLOWED_EXMODS)
    yield rpc.TRANSPORT
    rpc.cleanup()


@pytest.fixture
def served(fake_transport, conf):
    """A CouchDB manager served on guestagent.g-1, CouchDB unreachable."""
    conf.config(port=1, group='couchdb')
    endpoint = manager.Manager()
    target = messaging.Target(topic='guestagent.g-1', server='g-1')
    server = rpc.get_server(target, [endpoint], key=KEY)
    server.start()
    yield endpoint
    server.stop()
    server.wait()


def _client(key=KEY):
    return guest_api.API(_context(), 'g-1', key=key)


def test_trove26s_client_is_read_whole():
    # Sanity of the reading: the calls every flow makes are there, with
    # what they send.
    assert len(TROVE26_CALLS) >= 60
    assert TROVE26_CALLS['rebuild'] == {'ds_version', 'config_contents',
                                        'config_overrides'}
    assert {'backup_info', 'snapshot', 'ds_version'} <= (
        TROVE26_CALLS['prepare'])


@pytest.mark.parametrize('method', sorted(TROVE26_CALLS))
def test_every_call_trove26_sends_binds_on_the_manager(method):
    """Every method Trove 26's client can call exists on the CouchDB
    manager and accepts every keyword Trove sends with it."""
    func = getattr(manager.Manager, method, None)
    assert func is not None, 'Trove 26 calls %s: the manager has none' % (
        method)
    inspect.signature(func).bind(
        object(), _context(), **dict.fromkeys(TROVE26_CALLS[method]))


def test_older_troves_upgrade_cast_binds_too():
    # Trove 26 casts upgrade(upgrade_info=...) (read above); Trove up to
    # 2023.1 the 1.0 form.
    inspect.signature(manager.Manager.upgrade).bind(
        object(), _context(), instance_version='1', location='x',
        metadata={})


def test_ping_through_encrypted_rpc(served):
    assert _client().rpc_ping() is True


def test_unsupported_call_raises_trove_not_supported(served):
    with pytest.raises(exception.DatastoreOperationNotSupported) as err:
        _client().update_guest()
    assert 'couchdb' in str(err.value)


@pytest.mark.parametrize('method', ['update_guest', 'module_remove',
                                    'ssl_show'])
def test_unsupported_calls_are_never_type_or_attribute_errors(served,
                                                               method):
    with pytest.raises(exception.DatastoreOperationNotSupported):
        getattr(_client(), method)()


def test_couchdb_down_is_a_clear_couchdb_error(served):
    with pytest.raises(exception.CouchDBError):
        _client().list_databases()


def test_wrong_key_passes_undecryptable_values_through(served):
    # Trove's behaviour: nothing fails loudly, the answer is garbage.
    assert _client(key='another-key').rpc_ping() is not True


def test_context_round_trips_in_trove_dict_format():
    ser = ssz.SecureSerializer(sz.TroveRequestContextSerializer(None), KEY)
    ctxt = _context()
    ctxt.notification = {'notification_classname': 'x', 'server_type': 'api'}
    wire = ser.serialize_context(ctxt)
    assert set(wire) == {'context'} and 'token-1' not in json.dumps(wire)
    wire['client_timeout'] = 30  # added in clear by oslo.messaging 18
    back = ser.deserialize_context(wire)
    assert back.to_dict() == ctxt.to_dict()
    assert back.auth_token == 'token-1' and back.project_id == 'tenant-1'
    assert back.service_catalog[0]['type'] == 'object-store'


def test_entities_are_encrypted_and_decrypted():
    ser = ssz.SecureSerializer(sz.TroveRequestContextSerializer(None), KEY)
    value = {'_name': 'db1', 'list': [1, 2]}
    wire = ser.serialize_entity(None, value)
    assert isinstance(wire, str) and 'db1' not in wire
    assert ser.deserialize_entity(None, wire) == value


def test_conductor_envelope_carries_the_clear_instance_id():
    guest = guest_sz.ConductorGuestSerializer(
        sz.TroveRequestContextSerializer(None), KEY, guest_id='g-1')
    payload = {'service_status': 'running'}
    wire = guest.serialize_entity(None, payload)
    envelope = jsonutils.loads(wire)
    assert envelope['csz-instance-id'] == 'g-1'
    assert 'running' not in wire
    wire_ctx = guest.serialize_context(_context())
    assert wire_ctx['csz-instance-id'] == 'g-1'

    keys = {'g-1': KEY}
    host = host_sz.ConductorHostSerializer(
        sz.TroveRequestContextSerializer(None), keys.__getitem__)
    assert host.deserialize_entity(None, wire) == payload
    ctxt = host.deserialize_context(wire_ctx)
    assert ctxt.instance_id == 'g-1' and ctxt.auth_token == 'token-1'
