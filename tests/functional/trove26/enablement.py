"""What the patches of contrib/trove-26.0.0 change, on Trove 26's own code.

Run with the python of ``.cache/trove26-venv``, where ``tools/bootstrap``
installs ``trove==26.0.0`` and applies the series, by
``tests/functional/test_trove_enablement.py``, in a scratch directory:

    python enablement.py CHECK tenant|admin

It makes a throwaway Trove database there (sqlite, schema made by Trove's
own ``db_sync``) holding backups of two tenants, runs one check in the
first tenant's context (or an admin's) and prints one JSON line: what
Trove did, for the test to judge.

``delete-without-id``         ``Backup.delete(context, None)``
``delete-full``               ``Backup.delete`` of a full backup that has an
                              incremental
``replica-without-snapshot``  ``Manager._create_replication_slave`` when the
                              source's guest answers
                              ``backup_required_for_replication()`` False
``replica-with-snapshot``     the same when it answers True (Trove made a
                              replication snapshot)

Trove's code runs unchanged; stand-ins only where it leaves the process:

* Swift, through Trove's own option for it (``remote_swift_client``);
* the taskmanager's ``delete_backup`` cast
  (``trove.taskmanager.api.API.delete_backup``): recorded, then served at
  once by Trove's own ``BackupTasks.delete_backup``, as the taskmanager
  serves it;
* ``BuiltInstanceTasks.load`` and ``FreshInstanceTasks.load``: the source
  and the new replica, whose servers would be Nova's.
"""

import configparser
import contextlib
import json
import pathlib
import sqlite3
import sys
import traceback
import uuid

from oslo_log import log as logging
from swiftclient.client import ClientException

from trove.backup import models as backup_models
from trove.backup.state import BackupState
from trove.common import cfg
from trove.common.context import TroveContext
from trove.db import get_db_api
from trove import rpc
from trove.taskmanager import api as taskmanager_api
from trove.taskmanager import manager as taskmanager_manager
from trove.taskmanager import models as taskmanager_models

TENANT = 'tenant-a'
OTHER_TENANT = 'tenant-b'
CONTAINER = 'database_backups'
SWIFT_URL = 'http://127.0.0.1:8080/v1/AUTH_'


class CheckError(Exception):
    """The check could not run as written."""


def check_trove_is_upstream():
    """Refuse to run on this project's own ``trove`` package."""
    here = pathlib.Path(backup_models.__file__).resolve()
    if not here.is_relative_to(pathlib.Path(sys.prefix).resolve()):
        raise CheckError("trove imported from %s, not from the Trove 26 "
                         "venv %s" % (here, sys.prefix))


# ------------------------------------------------------------- stand-ins

class Swift:
    """Stands for Swift: each backup's object (a Static Large Object) is
    kept until it is deleted; a call Trove makes beyond these fails."""

    def __init__(self):
        self.objects = set()

    def get_account(self):
        return {}, [{'name': CONTAINER}]

    def head_object(self, container, name):
        if (container, name) not in self.objects:
            raise ClientException('Object HEAD failed', http_status=404)
        return {'x-static-large-object': 'True'}

    def delete_object(self, container, name, query_string=None):
        self.head_object(container, name)
        self.objects.remove((container, name))

    def __getattr__(self, name):
        raise NotImplementedError("the Swift stand-in has no %s" % name)


SWIFT = Swift()


def swift_client(context):
    """``remote_swift_client``: what ``clients.create_swift_client`` makes."""
    return SWIFT


class Taskmanager:
    """Stands for trove-taskmanager receiving ``delete_backup`` casts: each
    is recorded, then served by Trove's own ``BackupTasks.delete_backup``
    (the row marked deleted, the Swift object deleted)."""

    def __init__(self):
        self.casts = []

    def delete_backup(self, api, backup_id):
        self.casts.append(backup_id)
        taskmanager_models.BackupTasks.delete_backup(api.context, backup_id)


class Source:
    """The source instance as ``BuiltInstanceTasks.load`` gives it to
    ``_create_replication_slave``, which reads only its server group."""

    server_group = None

    def __getattr__(self, name):
        raise NotImplementedError("the source stand-in has no %s" % name)


class Replica:
    """The new replica as ``FreshInstanceTasks.load`` gives it. Its
    snapshot is what Trove's ``get_replication_master_snapshot`` returns:
    the guest's dataset carries the id of the backup Trove made for it, or
    None when the source's guest needs no backup (Trove makes none).
    Building the server (Nova, Cinder, the guest's prepare) is recorded."""

    def __init__(self):
        self.snapshot_id = None
        self.created = []

    def get_replication_master_snapshot(self, context, slave_of_id, flavor,
                                        parent_backup_id=None,
                                        snapshot_driver='swift'):
        return {'dataset': {'snapshot_id': self.snapshot_id,
                            'datastore_manager': 'couchdb',
                            'dataset_size': 1},
                'master': {'host': '192.0.2.10'}, 'log_position': {}}

    def create_instance(self, flavor, image_id, databases, users,
                        datastore_manager, packages, volume_size, backup_id,
                        *args, **kwargs):
        self.created.append({'backup_id': backup_id})

    def wait_for_instance(self, timeout, flavor):
        pass

    def __getattr__(self, name):
        raise NotImplementedError("the replica stand-in has no %s" % name)


# ---------------------------------------------------------------- database

def configure(workdir):
    """trove.conf, then what ``trove-manage db_sync`` and a service do."""
    database = workdir / 'trove.sqlite'
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict({
        'DEFAULT': {'transport_url': 'fake://',
                    'remote_swift_client': '__main__.swift_client',
                    'log_file': str(workdir / 'trove26.log'),
                    'debug': 'True'},
        'database': {'connection': 'sqlite:///%s' % database}})
    with open(workdir / 'trove.conf', 'w') as f:
        parser.write(f)
    cfg.parse_args(['trove-enablement', '--config-file',
                    str(workdir / 'trove.conf')])
    logging.setup(cfg.CONF, None)
    # Trove's recursive delete writes while its query of the children is
    # still open: MySQL allows that, sqlite's default journal does not
    # ("database is locked"). In WAL mode sqlite allows it too, so an
    # unpatched Trove 26 does here what it does on MySQL.
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute('PRAGMA journal_mode=WAL')
    get_db_api().db_sync(cfg.CONF)
    get_db_api().configure_db()
    rpc.init(cfg.CONF)


def add_backup(tenant, parent_id=None):
    """A completed backup as Trove records it, its object in Swift."""
    backup_id = str(uuid.uuid4())
    name = backup_id + '.gz.enc'
    backup_models.DBBackup.create(
        id=backup_id, tenant_id=tenant, name='backup-' + backup_id[:8],
        state=BackupState.COMPLETED, instance_id=str(uuid.uuid4()),
        parent_id=parent_id, deleted=False, size=1.0, storage_driver='swift',
        location='%s%s/%s/%s' % (SWIFT_URL, tenant, CONTAINER, name))
    SWIFT.objects.add((CONTAINER, name))
    return backup_id


def add_backups():
    """Two full backups of TENANT, an incremental of the first, a full
    backup of OTHER_TENANT: their ids by role."""
    full = add_backup(TENANT)
    return {'full': full,
            'incremental': add_backup(TENANT, parent_id=full),
            'second full': add_backup(TENANT),
            "other tenant's full": add_backup(OTHER_TENANT)}


def context(as_admin):
    return TroveContext(user_id='user-1', project_id=TENANT,
                        auth_token='user-token', is_admin=as_admin,
                        request_id='req-%s' % uuid.uuid4())


# ---------------------------------------------------------------- checks

def delete_without_id(ctxt, backups, replica):
    backup_models.Backup.delete(ctxt, None)


def delete_full(ctxt, backups, replica):
    backup_models.Backup.delete(ctxt, backups['full'])


def create_replica(ctxt, replica):
    """What the taskmanager runs for ``trove create --replica_of``."""
    taskmanager_models.BuiltInstanceTasks.load = classmethod(
        lambda cls, context, instance_id, needs_server=True: Source())
    taskmanager_models.FreshInstanceTasks.load = classmethod(
        lambda cls, context, instance_id: replica)
    taskmanager_manager.Manager()._create_replication_slave(
        ctxt, 'replica-1', 'replica-1', {'id': '1'}, 'image-1', None, None,
        'couchdb', None, 1, None, None, None, None, 'source-1', None, None,
        None)


def replica_without_snapshot(ctxt, backups, replica):
    create_replica(ctxt, replica)


def replica_with_snapshot(ctxt, backups, replica):
    replica.snapshot_id = backups['replication snapshot'] = add_backup(TENANT)
    create_replica(ctxt, replica)


CHECKS = {'delete-without-id': delete_without_id,
          'delete-full': delete_full,
          'replica-without-snapshot': replica_without_snapshot,
          'replica-with-snapshot': replica_with_snapshot}


def run(check, as_admin, workdir):
    """What Trove did: the error it raised, the casts it sent, the backups
    whose row it marked deleted and whose Swift object is gone, and the
    replicas it built (from which backup)."""
    configure(workdir)
    backups = add_backups()
    taskmanager = Taskmanager()
    taskmanager_api.API.delete_backup = (
        lambda api, backup_id: taskmanager.delete_backup(api, backup_id))
    replica = Replica()
    result = {'error': None}
    try:
        CHECKS[check](context(as_admin), backups, replica)
    except Exception as exc:
        result['error'] = '%s: %s' % (type(exc).__name__, exc)
        result['traceback'] = traceback.format_exc()
    roles = {backup_id: role for role, backup_id in backups.items()}
    with backup_models.DBBackup.query() as query:
        deleted = {row.id for row in query.filter_by(deleted=True)}
    result.update(
        casts=sorted(roles.get(i, repr(i)) for i in taskmanager.casts),
        deleted_rows=sorted(roles[i] for i in deleted),
        objects_gone=sorted(
            role for role, backup_id in backups.items()
            if (CONTAINER, backup_id + '.gz.enc') not in SWIFT.objects),
        replicas_created=[{'backup_id': roles.get(c['backup_id'])}
                          for c in replica.created])
    return result


def main(argv):
    if len(argv) != 3 or argv[1] not in CHECKS or argv[2] not in (
            'tenant', 'admin'):
        raise SystemExit('usage: enablement.py %s tenant|admin'
                         % '|'.join(CHECKS))
    check_trove_is_upstream()
    print(json.dumps(run(argv[1], argv[2] == 'admin', pathlib.Path.cwd())))


if __name__ == '__main__':
    main(sys.argv)
