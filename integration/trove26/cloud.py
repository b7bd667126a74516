"""Trove 26's control plane in one process: its API models, taskmanager
and conductor, driving our agents as a tenant's requests do.

Run with the python of ``.cache/trove26-venv`` (Trove 26.0.0 from PyPI with
the project's enablement, ``contrib/trove-26.0.0``) by
``integration/test_trove26_replica.py``.  It reads one JSON request on its
first stdin line (the work directory, the broker, Swift, the tenant), sets
up Trove's database (its own migrations, on sqlite: one process holds it)
and CouchDB's registration as ``trove-manage`` makes it, then serves Trove's
taskmanager and conductor over RabbitMQ and answers commands, one JSON
object a line on stdin, one JSON line each on stdout:

``create_instance``  ``trove.instance.models.Instance.create``, what
                     trove-api runs for ``openstack database instance
                     create`` (``--backup``, ``--replica-of``,
                     ``--replica-count``): it checks, writes the rows and
                     casts to the taskmanager.
``create_backup``    ``trove.backup.models.Backup.create`` (``--parent``,
                     ``--incremental``): it casts to the taskmanager.
``delete_backup``    ``Backup.delete``, as ``backup delete`` does.
``api``              One action of trove-api's database, user, user access
                     or root controller (trove/extensions/common/
                     service.py), called as its WSGI resource calls it:
                     ``openstack database db create``, ``user create``,
                     ``root enable``...; the answer's status and body, or
                     the Trove exception the API would map to an HTTP
                     error.
``instances``        Trove's rows of every instance: task status, service
                     status, replica source, faults.
``backups``          Every row of Trove's backups table, deleted ones too.

The OpenStack services this machine lacks are the stand-ins of
``standins.py``; nothing of Trove is replaced.  Secrets never travel in
argv; the answers hold none.
"""

# Trove's binaries import trove.cmd first: it monkey-patches eventlet, which
# the taskmanager's and conductor's "eventlet" executors need.
import trove.cmd  # noqa: F401  (must stay the first import)

import configparser
import json
import os
import pathlib
import sys
import traceback
import uuid

import eventlet
from eventlet import tpool
from oslo_log import log as logging
from oslo_utils import importutils

from trove.backup import models as backup_models
from trove.cmd import common as cmd_common
from trove.common import cfg
from trove.common.context import TroveContext
from trove.common import exception
from trove.common import notification
from trove.common.rpc import conductor_host_serializer
from trove.common.rpc import service as rpc_service
from trove.common import wsgi
from trove.conductor import api as conductor_api
from trove.datastore import models as ds_models
from trove.db import get_db_api
from trove.extensions.common import common as ext_common
from trove.instance import models as inst_models
from trove.taskmanager import api as task_api

MANAGER = 'trove.guestagent.datastore.experimental.couchdb.manager.Manager'
REPL_STRATEGY = ('trove.guestagent.strategies.replication.experimental.'
                 'couchdb_impl.CouchDBReplication')
VERSION = '3.5'
IMAGE = 'image-couchdb-3.5'
LOG = logging.getLogger('trove26.cloud')


def write_config(request):
    """trove.conf of this control plane (0600: it holds the broker URL)."""
    workdir = pathlib.Path(request['workdir'])
    here = pathlib.Path(__file__).resolve().parent
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict({
        'DEFAULT': {
            'transport_url': request['transport_url'],
            'control_exchange': 'trove',
            'conductor_queue': request['conductor_queue'],
            'taskmanager_queue': request['taskmanager_queue'],
            'log_file': str(workdir / 'trove26.log'), 'debug': 'True',
            'swift_url': request['swift_url'],
            'remote_nova_client': 'standins.nova_client',
            'remote_cinder_client': 'standins.cinder_client',
            'remote_neutron_client': 'standins.neutron_client',
            'remote_glance_client': 'standins.glance_client',
            'nova_standin_dir': request['nova_dir'],
            'guest_config': str(workdir / 'trove-guestagent.conf'),
            # No Neutron: no security groups, no ports.
            'trove_security_groups_support': 'False',
            'management_networks': '',
            # No Cinder: the data lives on the server's own disk, so
            # there is no volume size to compare for a replica.
            'verify_replica_volume_size': 'False',
            'usage_sleep_time': '1', 'agent_call_high_timeout': '300',
            'restore_usage_timeout': '600',
        },
        # Every guest here shares one file system: Trove names no mount
        # point, and each agent uses its own ([couchdb] mount_point).
        'couchdb': {'volume_support': 'False', 'device_path': '',
                    'mount_point': '',
                    'replication_strategy': 'CouchDBReplication',
                    'backup_strategy': 'CouchDBBackup'},
        'database': {'connection': 'sqlite:///%s' %
                     (workdir / 'trove.sqlite')}})
    path = workdir / 'trove.conf'
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as f:
        parser.write(f)
    (workdir / 'trove-guestagent.conf').write_text(
        '# The operator guestagent configuration: each guest of this test\n'
        '# gets its own from the hypervisor.\n')
    sys.path.insert(1, str(here))
    return path


def register_couchdb():
    """What ``trove-manage datastore_update`` and
    ``datastore_version_update`` do for CouchDB 3.5."""
    ds_models.update_datastore('couchdb', None)
    ds_models.update_datastore_version(
        'couchdb', VERSION, 'couchdb', image_id=IMAGE, image_tags='',
        packages='', active=1, registry_ext=MANAGER,
        repl_strategy=REPL_STRATEGY)
    ds_models.update_datastore('couchdb', VERSION)


def start_services(conf):
    """trove-conductor's and trove-taskmanager's RPC services, started as
    their commands start them (trove/cmd/conductor.py, taskmanager.py)."""
    notification.DBaaSAPINotification.register_notify_callback(
        inst_models.persist_instance_fault)
    key = (conf.taskmanager_rpc_encr_key if conf.enable_secure_rpc_messaging
           else None)
    services = [
        rpc_service.RpcService(
            key=None, manager=conf.conductor_manager,
            topic=conf.conductor_queue,
            rpc_api_version=conductor_api.API.API_LATEST_VERSION,
            secure_serializer=conductor_host_serializer.
            ConductorHostSerializer),
        rpc_service.RpcService(
            key=key, manager=conf.taskmanager_manager,
            topic=conf.taskmanager_queue,
            rpc_api_version=task_api.API.API_LATEST_VERSION)]
    for service in services:
        # RpcService.start runs its periodic tasks until stopped.
        eventlet.spawn(service.start)
    return services


# trove-api's controllers behind /instances/{id}/databases, /users,
# /users/{user}/databases and /root (trove/extensions/routes/mysql.py).
CONTROLLERS = {
    'databases': 'trove.extensions.common.service.SchemaController',
    'users': 'trove.extensions.common.service.UserController',
    'user_access': 'trove.extensions.common.service.UserAccessController',
    'root': 'trove.extensions.common.service.RootController'}


class Request:
    """The WSGI request a notification reads the client/server IP from."""
    remote_addr = '127.0.0.1'
    host = '127.0.0.1:8779'


class Cloud:
    """What trove-api's controllers do for each request
    (trove/instance/service.py, trove/backup/service.py): the tenant's
    context, the request's notification, then Trove's model call."""

    def __init__(self, request):
        self.tenant = request['tenant']
        self.token = request['token']

    def context(self, notification_cls=None):
        context = TroveContext(user_id='user-1', project_id=self.tenant,
                               auth_token=self.token, service_catalog=[],
                               request_id='req-%s' % uuid.uuid4())
        if notification_cls is not None:
            context.notification = notification_cls(context,
                                                    request=Request())
        return context

    def api(self, controller, action, **kwargs):
        """trove-api's ``controller`` (see CONTROLLERS) running
        ``action``: the request carries the tenant's context, as Trove's
        context middleware leaves it."""
        req = wsgi.Request.blank(
            '/v1.0/%s/instances/%s' % (self.tenant, kwargs['instance_id']))
        req.environ[wsgi.CONTEXT_KEY] = self.context()
        req.remote_addr = Request.remote_addr
        handler = importutils.import_object(CONTROLLERS[controller])
        try:
            result = getattr(handler, action)(req, tenant_id=self.tenant,
                                              **kwargs)
        except exception.TroveError as exc:
            return {'error': type(exc).__name__, 'message': str(exc),
                    'code': getattr(exc, 'code', None)}
        return {'status': result.status,
                'body': result.data('application/json')}

    def create_instance(self, name, databases=(), users=(), backup_id=None,
                        replica_of=None, replica_count=None):
        datastore, version = ds_models.get_datastore_version(
            'couchdb', VERSION)
        dbs = ext_common.populate_validated_databases(
            [{'name': d} for d in databases])
        initial = ext_common.populate_users(list(users), list(databases))
        created = inst_models.Instance.create(
            self.context(notification.DBaaSInstanceCreate), name, '1',
            IMAGE, dbs, initial, datastore, version, None, backup_id,
            slave_of_id=replica_of, replica_count=replica_count)
        return {'id': created.id}

    def create_backup(self, instance_id, name, parent_id=None,
                      incremental=False):
        context = self.context(notification.DBaaSBackupCreate)
        with notification.StartNotification(
                context, name=name, instance_id=instance_id,
                description=None, parent_id=parent_id):
            backup = backup_models.Backup.create(
                context, instance_id, name, None, parent_id=parent_id,
                incremental=incremental)
        return {'id': backup.id, 'parent_id': backup.parent_id}

    def delete_backup(self, backup_id):
        context = self.context(notification.DBaaSBackupDelete)
        with notification.StartNotification(context, backup_id=backup_id):
            backup_models.Backup.delete(context, backup_id)
        return {}

    def instances(self):
        rows = {}
        for db_info in inst_models.DBInstance.find_all(deleted=False).all():
            status = inst_models.InstanceServiceStatus.find_by(
                instance_id=db_info.id).get_status()
            faults = inst_models.DBInstanceFault.find_all(
                instance_id=db_info.id).all()
            rows[db_info.id] = {
                'name': db_info.name,
                'task_status': db_info.task_status.action,
                'service_status': status.description,
                'replica_of': db_info.slave_of_id,
                'faults': [f.message for f in faults]}
        return rows

    def backups(self):
        with backup_models.DBBackup.query() as query:
            rows = query.all()
        return [{'id': b.id, 'name': b.name, 'state': b.state,
                 'instance_id': b.instance_id, 'parent_id': b.parent_id,
                 'location': b.location, 'checksum': b.checksum,
                 'backup_type': b.backup_type, 'deleted': bool(b.deleted)}
                for b in rows]


def serve(cloud):
    while True:
        # A real thread reads stdin: eventlet's hub keeps serving RPC.
        line = tpool.execute(sys.stdin.readline)
        if not line:
            return
        if not line.strip():
            continue
        command = json.loads(line)
        name = command.pop('command')
        try:
            answer = {'ok': True, 'result': getattr(cloud, name)(**command)}
        except Exception as exc:
            LOG.exception("%s failed", name)
            answer = {'ok': False,
                      'error': '%s: %s' % (type(exc).__name__, exc),
                      'traceback': traceback.format_exc()}
        sys.stdout.write(json.dumps(answer, default=str) + '\n')
        sys.stdout.flush()


def main():
    request = json.loads(sys.stdin.readline())
    path = write_config(request)
    sys.argv = ['trove-cloud', '--config-file', str(path)]
    # trove-manage db_sync, then what every Trove service does at start.
    cfg.parse_args(sys.argv)
    get_db_api().db_sync(cfg.CONF)
    conf = cmd_common.initialize()
    register_couchdb()
    services = start_services(conf)
    sys.stdout.write(json.dumps({'ok': True, 'result': 'ready'}) + '\n')
    sys.stdout.flush()
    try:
        serve(Cloud(request))
    finally:
        for service in services:
            service.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
