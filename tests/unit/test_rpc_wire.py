"""The agent's RPC endpoint, seen from Trove's side of the wire.

A real oslo.messaging server (in-process ``fake://`` transport, threading
executor) serves the CouchDB manager with RPC encryption on; calls go through
``trove/guestagent/api.py`` exactly as Trove's taskmanager makes them.
"""

import inspect
import json

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

# The guest API 1.0-1.3 of the contract: method -> keyword arguments.
GUEST_API = {
    'prepare': dict(memory_mb=512, packages=[], databases=[], users=[],
                    device_path=None, mount_point='/var/lib/couchdb',
                    backup_info=None, config_contents=None,
                    root_password=None, overrides=None, cluster_config=None,
                    snapshot=None, modules=None, ds_version='3.5'),
    'restart': {},
    'start_db_with_conf_changes': dict(config_contents='', ds_version='3.5'),
    'reset_configuration': dict(configuration={'config_contents': ''}),
    'stop_db': dict(do_not_start_on_reboot=True),
    'get_filesystem_stats': dict(fs_path='/'),
    'mount_volume': dict(device_path='/dev/vdb', mount_point='/x'),
    'unmount_volume': dict(device_path='/dev/vdb', mount_point='/x'),
    'resize_fs': dict(device_path='/dev/vdb', mount_point='/x', online=True),
    'create_backup': dict(backup_info={'id': 'b'}),
    'pre_create_backup': {},
    'post_create_backup': {},
    'list_databases': dict(limit=10, marker=None, include_marker=False),
    'create_database': dict(databases=[]),
    'delete_database': dict(database={'_name': 'x'}),
    'list_users': dict(limit=10, marker=None, include_marker=False),
    'create_user': dict(users=[]),
    'delete_user': dict(user={'_name': 'x'}),
    'get_user': dict(username='u', hostname='%'),
    'change_passwords': dict(users=[]),
    'update_attributes': dict(username='u', hostname='%', user_attrs={}),
    'grant_access': dict(username='u', hostname='%', databases=['d']),
    'revoke_access': dict(username='u', hostname='%', database='d'),
    'list_access': dict(username='u', hostname='%'),
    'enable_root': {},
    'enable_root_with_password': dict(root_password='pw'),
    'disable_root': {},
    'is_root_enabled': {},
    'get_root_password': {},
    'update_overrides': dict(overrides={}, remove=False),
    'apply_overrides': dict(overrides={}),
    'get_replication_snapshot': dict(snapshot_info={},
                                     replica_source_config={}),
    'attach_replica': dict(replica_info={}, slave_config={}, restart=False),
    'attach_replication_slave': dict(snapshot={}, slave_config={}),
    'detach_replica': dict(for_failover=False),
    'get_replica_context': {},
    'make_read_only': dict(read_only=True),
    'enable_as_master': dict(replica_source_config={}),
    'demote_replication_master': {},
    'get_latest_txn_id': {},
    'get_last_txn': {},
    'wait_for_txn': dict(txn='1'),
    'get_txn_count': {},
    'cleanup_source_on_replica_detach': dict(replica_info={}),
    'backup_required_for_replication': {},
    'guest_log_list': {},
    'guest_log_action': dict(log_name='general', enable=True, disable=False,
                             publish=False, discard=False),
    'module_list': dict(include_contents=False),
    'module_apply': dict(modules=[]),
    'module_remove': dict(module={}),
    'pre_upgrade': {},
    'post_upgrade': dict(upgrade_info={}),
    'upgrade': dict(instance_version='1', location='x', metadata={}),
    'rpc_ping': {},
    'get_hwinfo': {},
    'get_diagnostics': {},
    'update_guest': {},
    'ssl_show': {},
    'ssl_action': {},
    'ssl_rollback': {},
}


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


@pytest.mark.parametrize('method', sorted(GUEST_API))
def test_every_contract_method_binds_its_keyword_arguments(method):
    func = getattr(manager.Manager, method)
    inspect.signature(func).bind(object(), _context(), **GUEST_API[method])


def test_trove26_upgrade_cast_binds_too():
    # Trove 26 casts upgrade(upgrade_info=...), older Trove the 1.0 form.
    inspect.signature(manager.Manager.upgrade).bind(
        object(), _context(), upgrade_info={'datastore_version': '3.3'})


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
