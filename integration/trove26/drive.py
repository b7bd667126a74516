"""Trove 26's own taskmanager client and conductor, driving our agent.

Run with the python of ``.cache/trove26-venv`` (see ``__init__.py``) by
``integration/test_trove26.py``.  Two steps; each reads one JSON object on
stdin and prints one JSON line on stdout (secrets never travel in argv):

``create``  What Trove's API and taskmanager do before the guest boots: a
            Trove database (sqlite, schema made by Trove's own ``db_sync``),
            CouchDB registered as ``trove-manage datastore_version_update``
            does, the instance row with the RPC key Trove generates, and the
            service status ``new``.  Prints ``guest_id`` and ``key``, the two
            values the taskmanager injects into guest_info.conf.
            stdin: ``{"workdir", "transport_url", "conductor_queue"}``
``run``     With the agent running: Trove 26's conductor manager serving
            ``conductor_queue`` behind Trove's ``ConductorHostSerializer``,
            and Trove 26's ``trove.guestagent.api.API`` calling the agent.
            stdin: ``{"workdir", "guest_id", "mount_point"}``

Nothing of Trove is patched: both sides find the instance key in Trove's
database (``get_instance_encryption_key``), as in production.  Stand-ins
only where a real deployment has a service this one lacks: the WSGI request
a notification takes its client and server IP from, and the Instance that
``load_guest_info`` fills (loading a real one asks Nova).  The conductor
endpoint is Trove's ``trove.conductor.manager.Manager``, subclassed only to
keep a record of each call before running Trove's code.
"""

# Trove's binaries import trove.cmd first: it monkey-patches eventlet, which
# trove.rpc.get_server's "eventlet" executor needs.
import trove.cmd  # must stay the first import

import configparser
import json
import os
import pathlib
import sys
import time
import traceback
import types
import uuid

from oslo_log import log as logging
import oslo_messaging as messaging

from trove.cmd import common as cmd_common
from trove.common import cfg
from trove.common import clients
from trove.common.context import TroveContext
from trove.common.db import models as guest_models
from trove.common import exception
from trove.common import notification
from trove.common.rpc import conductor_host_serializer
from trove.common import utils
from trove.conductor import api as conductor_api
from trove.conductor import manager as conductor_manager
from trove.datastore import models as ds_models
from trove.db import get_db_api
from trove.extensions.common import common as ext_common
from trove.extensions.common import models as ext_models
from trove.instance import models as inst_models
from trove.instance import service_status as svc_status
from trove.instance.tasks import InstanceTasks
from trove import rpc

MANAGER = 'trove.guestagent.datastore.experimental.couchdb.manager.Manager'
# Trove 26's datastore_versions.repl_strategy (NOT NULL): this project's
# replication strategy, as the operator guide registers it.
REPL_STRATEGY = ('trove.guestagent.strategies.replication.experimental.'
                 'couchdb_impl.CouchDBReplication')
TENANT = 'tenant-1'
TIMEOUT_FACTOR = float(os.environ.get('TEST_TIMEOUT_FACTOR', '1.0'))


class DriveError(Exception):
    """A step of the drive did not reach the outcome it waited for."""


def check_trove_is_upstream():
    """Refuse to run on this project's own ``trove`` package."""
    here = pathlib.Path(trove.cmd.__file__).resolve()
    if not here.is_relative_to(pathlib.Path(sys.prefix).resolve()):
        raise DriveError("trove imported from %s, not from the Trove 26 "
                         "venv %s" % (here, sys.prefix))


def wait_until(predicate, timeout, what):
    """``predicate()``'s first truthy value within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise DriveError("timed out after %ss waiting for %s" %
                             (timeout, what))
        time.sleep(0.2)


# ---------------------------------------------------------------- config

def config_path(workdir):
    return pathlib.Path(workdir) / 'trove.conf'


def write_config(workdir, transport_url, conductor_queue):
    """trove.conf of this control plane (0600: it holds the broker URL)."""
    workdir = pathlib.Path(workdir)
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict({
        'DEFAULT': {'transport_url': transport_url,
                    'control_exchange': 'trove',
                    'conductor_queue': conductor_queue,
                    'log_file': str(workdir / 'trove26.log'),
                    'debug': 'True'},
        'database': {'connection': 'sqlite:///%s' %
                     (workdir / 'trove.sqlite')}})
    path = config_path(workdir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        parser.write(f)
    return path


# ---------------------------------------------------------------- create

def register_couchdb():
    """What ``trove-manage datastore_update`` / ``..._version_update`` do."""
    ds_models.update_datastore('couchdb', None)
    ds_models.update_datastore_version(
        'couchdb', '1.6', 'couchdb', image_id='', image_tags='',
        packages='', active=1, registry_ext=MANAGER,
        repl_strategy=REPL_STRATEGY)
    ds_models.update_datastore('couchdb', '1.6')
    return ds_models.DatastoreVersion.load(
        ds_models.Datastore.load('couchdb'), '1.6')


def create_instance(version):
    """The rows ``trove.instance.models.Instance.create`` writes."""
    db_info = inst_models.DBInstance.create(
        name='couchdb-t26', flavor_id='1', tenant_id=TENANT, volume_size=1,
        datastore_version_id=version.id, task_status=InstanceTasks.BUILDING)
    inst_models.InstanceServiceStatus.create(
        instance_id=db_info.id, status=svc_status.ServiceStatuses.NEW)
    return db_info


def create(request):
    write_config(request['workdir'], request['transport_url'],
                 request['conductor_queue'])
    # trove-manage db_sync, then what every Trove service does at start.
    cfg.parse_args(['trove-drive', '--config-file',
                    str(config_path(request['workdir']))])
    logging.setup(cfg.CONF, None)
    get_db_api().db_sync(cfg.CONF)
    get_db_api().configure_db()
    db_info = create_instance(register_couchdb())
    # The lookup every Trove service uses (str, from the encrypted column).
    key = inst_models.get_instance_encryption_key(db_info.id)
    if not key:
        raise DriveError("Trove generated no instance key: is "
                         "enable_secure_rpc_messaging off?")
    return {'guest_id': db_info.id, 'key': key}


# ------------------------------------------------------------- conductor

class RecordingConductor(conductor_manager.Manager):
    """Trove 26's conductor manager; each call is recorded, then run."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def _run(self, method, run, **record):
        entry = dict(record, method=method)
        try:
            run()
        except Exception as exc:
            entry['error'] = '%s: %s' % (type(exc).__name__, exc)
            raise
        finally:
            self.calls.append(entry)

    def heartbeat(self, context, instance_id, payload, sent=None):
        self._run('heartbeat', lambda: super(
            RecordingConductor, self).heartbeat(
                context, instance_id, payload, sent=sent),
            instance_id=instance_id, payload=payload, sent=sent)

    def report_root(self, context, instance_id, user=None):
        self._run('report_root', lambda: super(
            RecordingConductor, self).report_root(
                context, instance_id, user=user),
            instance_id=instance_id)

    def notify_end(self, context, serialized_notification,
                   notification_args):
        self._run('notify_end', lambda: super(
            RecordingConductor, self).notify_end(
                context, serialized_notification, notification_args),
            notification=dict(serialized_notification))

    def notify_exc_info(self, context, serialized_notification, message,
                        exception):
        self._run('notify_exc_info', lambda: super(
            RecordingConductor, self).notify_exc_info(
                context, serialized_notification, message, exception),
            notification=dict(serialized_notification), message=message)


def start_conductor(conf):
    """The server ``trove-conductor`` runs (trove/cmd/conductor.py and
    trove/common/rpc/service.py), with the recording manager; the
    notification callback also records, then calls Trove's own."""
    events = []

    def on_notification(note, event_qualifier):
        events.append({'event_type': note.event_type(),
                       'qualifier': event_qualifier,
                       'server_type': note.server_type})
        inst_models.persist_instance_fault(note, event_qualifier)

    notification.DBaaSAPINotification.register_notify_callback(
        on_notification)
    manager = RecordingConductor()
    target = messaging.Target(
        topic=conf.conductor_queue, server=conf.host,
        version=conductor_api.API.API_LATEST_VERSION)
    server = rpc.get_server(
        target, [manager], key=None,
        secure_serializer=conductor_host_serializer.ConductorHostSerializer)
    server.start()
    return server, manager, events


# ------------------------------------------------------------- the guest

class Request:
    """The WSGI request a notification reads the client/server IP from."""
    remote_addr = '127.0.0.1'
    host = '127.0.0.1:8779'


def context():
    return TroveContext(user_id='user-1', project_id=TENANT,
                        auth_token='user-token', service_catalog=[],
                        request_id='req-%s' % uuid.uuid4())


def guest(ctxt, guest_id):
    return clients.create_guest_client(ctxt, guest_id)


def service_status(guest_id):
    return inst_models.InstanceServiceStatus.find_by(
        instance_id=guest_id).get_status().description


def databases(api):
    found, _marker = ext_models.Schemas.load_with_client(api, None, None,
                                                         False)
    return [schema.name for schema in found]


def users(api):
    found, _marker = ext_models.Users.load_with_client(api, None, None,
                                                       False)
    return {user.name: [db['name'] for db in user.databases]
            for user in found}


def prepare(guest_id, mount_point, results):
    """The taskmanager's create: one database, one user and, as with
    ``root_on_create``, a root password Trove generated."""
    dbs = ext_common.populate_validated_databases([{'name': 'orders'}])
    initial = ext_common.populate_users(
        [{'name': 'alice', 'password': 'alice-pw-1',
          'databases': [{'name': 'orders'}]}], ['orders'])
    api = guest(context(), guest_id)
    results['rpc_ping'] = api.rpc_ping()
    if results['rpc_ping'] is not True:
        # Trove passes what does not decrypt through: a wrong key shows
        # here as a base64 answer, and later as nothing at all.
        raise DriveError("rpc_ping answered %r: the agent does not use "
                         "the instance key" % (results['rpc_ping'],))
    api.prepare(512, '', dbs, initial, device_path=None,
                mount_point=mount_point,
                root_password=utils.generate_random_password(),
                ds_version='1.6')
    results['status_after_prepare'] = wait_until(
        lambda: _settled(service_status(guest_id)), 120,
        "the status of the prepare in Trove's database")
    return api


def _settled(status):
    return status if status in ('running', 'failed to spawn') else None


def create_database_with_notification(guest_id, name):
    """As Trove's API: a DBaaSDatabaseCreate notification rides along."""
    ctxt = context()
    ctxt.notification = notification.DBaaSDatabaseCreate(ctxt,
                                                         request=Request())
    schemas = ext_common.populate_validated_databases([{'name': name}])
    with notification.StartNotification(ctxt, instance_id=guest_id,
                                        dbname=name):
        guest(ctxt, guest_id).create_database(schemas)


def unsupported(call):
    """What Trove's client raises for a call the guest does not serve."""
    try:
        answer = call()
    except Exception as exc:
        cause = exc.__context__
        return {
            'raised': '%s.%s' % (type(exc).__module__, type(exc).__name__),
            'is_guest_error': isinstance(exc, exception.GuestError),
            'cause': None if cause is None else '%s.%s' % (
                type(cause).__module__, type(cause).__name__),
            'cause_is_not_supported': isinstance(
                cause, exception.DatastoreOperationNotSupported),
            'message': str(exc)}
    return {'raised': None, 'answer': repr(answer)}


def trove_show_volume(guest_id):
    """The volume fields ``trove show`` takes from the guest: Trove's own
    ``load_guest_info``.  Its Instance argument stands in for the loaded
    instance (loading one asks Nova); only ``status`` is read."""
    instance = types.SimpleNamespace(status='ACTIVE')
    inst_models.load_guest_info(instance, context(), guest_id)
    return {name: getattr(instance, name) for name in (
        'volume_used', 'volume_total', 'volume_used_percent')
        if hasattr(instance, name)}


def users_and_root(api, results):
    results['get_user_alice'] = api.get_user('alice', '%')
    results['get_user_missing'] = api.get_user('nobody', '%')
    api.grant_access('alice', '%', ['invoices'])
    results['list_access_alice'] = sorted(
        db['_name'] for db in api.list_access('alice', '%'))
    results['users_after_grant'] = users(api)
    results['is_root_enabled_after_prepare'] = api.is_root_enabled()
    root = guest_models.DatastoreUser.deserialize(api.enable_root(),
                                                  verify=False)
    results['enable_root'] = {'name': root.name, 'password': root.password}
    results['is_root_enabled_after_enable'] = api.is_root_enabled()


def drive(request, results, events):
    guest_id = request['guest_id']
    api = prepare(guest_id, request['mount_point'], results)
    results['databases_after_prepare'] = databases(api)
    results['users_after_prepare'] = users(api)
    results['list_databases_raw'] = api.list_databases()
    create_database_with_notification(guest_id, 'invoices')
    wait_until(lambda: 'invoices' in databases(api), 30, 'invoices')
    # Valid for Trove's API (no rules for a generic schema), refused by the
    # guest (CouchDB names are lower case): the failed cast must reach
    # Trove's conductor as an error notification.
    create_database_with_notification(guest_id, 'BadName')
    wait_until(lambda: any(e['qualifier'] == 'error' for e in events), 30,
               "the error notification of the refused database")
    results['databases_after_create'] = databases(api)
    users_and_root(api, results)
    results['volume_info'] = api.get_volume_info()
    results['trove_show_volume'] = trove_show_volume(guest_id)
    context = api.get_replica_context()
    results['replica_context'] = {
        'replication_strategy': context.get('replication_strategy'),
        'master_keys': sorted(context.get('master', {}))}
    results['backup_required_for_replication'] = (
        api.backup_required_for_replication())
    # `trove diagnostics` (the management API) renders the guest's answer
    # with this view.
    from trove.extensions.mgmt.instances import views as mgmt_views
    results['diagnostics_view'] = mgmt_views.DiagnosticsView(
        guest_id, api.get_diagnostics()).data()
    results['unsupported'] = {
        'update_guest': unsupported(api.update_guest),
        'ssl_show': unsupported(api.ssl_show)}


def trove_records(guest_id, results):
    """What Trove's database says after the drive."""
    results['trove_service_status'] = service_status(guest_id)
    results['trove_root_history'] = ext_models.RootHistory.load(
        None, guest_id) is not None
    faults = inst_models.DBInstanceFault.find_all(instance_id=guest_id).all()
    results['trove_instance_faults'] = [fault.message for fault in faults]


def run(request):
    sys.argv = ['trove-drive', '--config-file',
                str(config_path(request['workdir']))]
    conf = cmd_common.initialize()
    server, conductor, events = start_conductor(conf)
    results = {'trove_status_descriptions': sorted(
        {status.description for status in vars(
            svc_status.ServiceStatuses).values()
         if isinstance(status, svc_status.ServiceStatus)})}
    try:
        drive(request, results, events)
        trove_records(request['guest_id'], results)
    except Exception as exc:
        # Keep what was seen so far: the test shows it with the failure.
        results['error'] = '%s: %s' % (type(exc).__name__, exc)
        results['traceback'] = traceback.format_exc()
    finally:
        server.stop()
        server.wait()
        results['conductor_calls'] = conductor.calls
        results['notifications'] = events
    return results


STEPS = {'create': create, 'run': run}


def main():
    check_trove_is_upstream()
    step = STEPS.get(sys.argv[1]) if len(sys.argv) == 2 else None
    if step is None:
        sys.exit('usage: drive.py create|run  (JSON request on stdin)')
    request = json.load(sys.stdin)
    try:
        result = step(request)
        answer = {'ok': 'error' not in result, 'result': result}
    except Exception as exc:
        answer = {'ok': False, 'error': '%s: %s' % (type(exc).__name__, exc),
                  'traceback': traceback.format_exc()}
    sys.stdout.write(json.dumps(answer, default=repr) + '\n')
    sys.stdout.flush()
    return 0 if answer['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
