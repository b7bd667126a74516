"""The CouchDB guest agent's RPC endpoint.

Each method translates one Trove guest API call into calls of the CouchDB
control layer (``service.py``): wire dicts in, wire dicts out.
"""

import os

from oslo_config import cfg
from oslo_log import log as logging

from trove.common.db import models
from trove.common import exception
from trove.common.instance import ServiceStatus
from trove.conductor import api as conductor_api
from trove.guestagent.datastore.experimental.couchdb import admin
from trove.guestagent.datastore.experimental.couchdb import configuration
from trove.guestagent.datastore.experimental.couchdb import names
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.datastore.experimental.couchdb import upgrade
from trove.guestagent.datastore import backups
from trove.guestagent.datastore import manager
from trove.guestagent import guest_log
from trove.guestagent import strategies
from trove.guestagent.strategies import restore
from trove.guestagent import volume

CONF = cfg.CONF
LOG = logging.getLogger(__name__)
reported_cast = manager.reported_cast


class Manager(manager.Manager):

    manager_name = system.MANAGER

    def __init__(self):
        self._app = None
        self._admin = None
        self._replication = None
        self._overrides = None
        super().__init__()

    @property
    def app(self):
        if self._app is None:
            self._app = service.CouchDBApp()
        return self._app

    @property
    def admin(self):
        if self._admin is None:
            self._admin = admin.CouchDBAdmin(self.app)
        return self._admin

    @property
    def overrides(self):
        if self._overrides is None:
            self._overrides = configuration.Overrides(self.app)
        return self._overrides

    @property
    def replication(self):
        if self._replication is None:
            strategy = strategies.load(
                'replication', CONF.couchdb.replication_strategy,
                CONF.couchdb.replication_namespace)
            self._replication = strategy(self.app)
        return self._replication

    def get_actual_status(self):
        status = self.app.get_actual_status()
        if status is not ServiceStatus.RUNNING:
            return status
        if self.replication.problems():
            return ServiceStatus.BLOCKED
        if self.overrides.restart_pending:
            return ServiceStatus.RESTART_REQUIRED
        return status

    def datastore_diagnostics(self):
        diagnostics = self.app.diagnostics()
        # On a replica, per database: the source's sequence, the sequence
        # verified here and how many changes behind.
        diagnostics['replication'] = self.replication.status()
        return diagnostics

    def periodic_tasks(self):
        return [(self._replication_upkeep,
                 CONF.couchdb.replication_sync_interval)]

    def _replication_upkeep(self):
        if not self.status.prepare_completed:
            return
        try:
            self.replication.periodic()
        except Exception:
            LOG.exception("The replication upkeep failed")

    # Prepare.
    def do_prepare(self, context, packages, databases, memory_mb, users,
                   device_path, mount_point, backup_info, config_contents,
                   root_password, overrides, cluster_config, snapshot,
                   ds_version):
        self._refuse_unsupported(cluster_config)
        db_names, user_list = self._checked(databases, users)
        self.overrides.check(overrides or {})
        mount_point = self._mount_point(mount_point)
        self.app.install_if_needed(packages or [])
        if device_path and CONF.couchdb.volume_support:
            self._prepare_volume(device_path, mount_point)
        self.app.set_data_ownership(mount_point)
        self.app.write_config_contents(config_contents)
        self.app.start_and_secure()
        self.app.configure_bind_address(CONF.couchdb.bind_address)
        self.app.ensure_system_databases()
        if backup_info:
            backup_info = self._seed_backup_info(backup_info, snapshot)
            self._perform_restore(context, backup_info, mount_point)
            if snapshot:
                self.replication.seed(snapshot, backup_info.get('id'))
        # A restored backup may hold them already: kept, not refused.
        if db_names:
            self.admin.ensure_databases(db_names)
        if user_list:
            self.admin.ensure_users(user_list)
        self._prepare_root(context, root_password)
        if overrides:
            self._apply_overrides_on_prepare(overrides)
        if snapshot:
            self.attach_replica(context, snapshot, snapshot.get('config'))

    def _refuse_unsupported(self, cluster_config):
        if cluster_config:
            raise exception.DatastoreOperationNotSupported(
                operation='prepare as a cluster member',
                datastore=self.manager_name)

    def _apply_overrides_on_prepare(self, overrides):
        self.overrides.update(overrides)
        if self.overrides.apply(overrides):
            self.restart(None)

    @staticmethod
    def _checked(databases, users):
        """Check all that prepare will create before changing anything."""
        db_names = [names.check_database_name(models.Schema.from_dict(d).name)
                    for d in databases or []]
        user_list = [models.User.from_dict(u) for u in users or []]
        for user in user_list:
            names.check_user_name(user.name)
            names.check_password(user.password, user.name)
            for db in user.databases:
                names.check_database_name(db)
        return db_names, user_list

    def _prepare_volume(self, device_path, mount_point):
        LOG.info("Preparing volume %s for %s.", device_path, mount_point)
        self.app.stop_db()
        device = volume.VolumeDevice(device_path)
        device.format()
        if os.path.isdir(mount_point) and os.listdir(mount_point):
            device.migrate_data(mount_point)
        device.mount(mount_point)

    @staticmethod
    def _seed_backup_info(backup_info, snapshot):
        """The replica's backup_info, completed from the snapshot.

        Trove reads the replication snapshot's location and checksum from
        its database, where the conductor writes them from the source's
        last update_backup, a cast that may still be on its way; the
        snapshot carries them from the source itself.
        """
        seed = (snapshot or {}).get('seed') or {}
        if (seed.get('backup_id') != backup_info.get('id')
                or backup_info.get('location')):
            return backup_info
        return dict(backup_info, location=seed.get('location'),
                    checksum=seed.get('checksum'),
                    type=backup_info.get('type') or seed.get('backup_type'))

    def _perform_restore(self, context, backup_info, mount_point):
        LOG.info("Restoring backup %s.", backup_info.get('id'))
        strategy = restore.get_restore_strategy(
            backup_info.get('type') or CONF.couchdb.backup_strategy,
            CONF.couchdb.restore_namespace)
        strategy(context=context, backup_info=backup_info,
                 restore_location=mount_point, app=self.app).restore()

    def _prepare_root(self, context, root_password):
        if root_password:
            self.admin.enable_root(root_password)
        elif CONF.couchdb.root_on_create:
            self.admin.enable_root()
        else:
            return
        conductor_api.API(context).report_root(CONF.guest_id)

    # Lifecycle.  Each reports the new status at once, as upstream's
    # update_db=True does: Trove's resize and delete flows wait for it.
    def restart(self, context):
        self.app.restart()
        self.overrides.restarted()
        self.status.heartbeat()

    def stop_db(self, context, do_not_start_on_reboot=False):
        self.app.stop_db(do_not_start_on_reboot=do_not_start_on_reboot)
        self.status.heartbeat()

    def start_db_with_conf_changes(self, context, config_contents,
                                   ds_version=None):
        self.app.write_config_contents(config_contents)
        self.app.start_db()
        self.overrides.restarted()
        self.status.heartbeat()

    def reset_configuration(self, context, configuration):
        self.app.write_config_contents(
            (configuration or {}).get('config_contents'))

    # Guest logs.
    def _guest_logs(self):
        logs = [guest_log.GuestLog('couchdb', CONF.couchdb.server_log_file)]
        if CONF.log_file:
            agent_log = CONF.log_file
            if CONF.log_dir and not os.path.isabs(agent_log):
                agent_log = os.path.join(CONF.log_dir, agent_log)
            logs.append(guest_log.GuestLog('guest', agent_log))
        return guest_log.GuestLogs(logs)

    def guest_log_list(self, context):
        return self._guest_logs().list(context)

    def guest_log_action(self, context, log_name, enable=False,
                         disable=False, publish=False, discard=False):
        return self._guest_logs().action(context, log_name, enable, disable,
                                         publish, discard)

    # Upgrades (the root disk is rebuilt; the data volume stays).
    def pre_upgrade(self, context):
        mount_point = self._mount_point(None)
        device = (CONF.couchdb.device_path if CONF.couchdb.volume_support
                  and os.path.ismount(mount_point) else None)
        return upgrade.pre_upgrade(self.app, mount_point, device)

    def post_upgrade(self, context, upgrade_info):
        upgrade.post_upgrade(self.app, upgrade_info)

    # Configuration groups.
    def update_overrides(self, context, overrides, remove=False):
        self.overrides.update(overrides, remove=remove)

    def apply_overrides(self, context, overrides):
        self.overrides.apply(overrides)

    # Backups.
    @reported_cast
    def create_backup(self, context, backup_info):
        try:
            strategy = self._backup_strategy(backup_info)
        except Exception as exc:
            backups.report_failed(context, backup_info, exc)
            raise
        backups.create_backup(context, backup_info, self.app, strategy)

    def _backup_strategy(self, backup_info):
        name = CONF.couchdb.backup_strategy
        if backup_info.get('parent'):
            # Trove's --incremental and --parent: a backup on a parent.
            incremental = CONF.couchdb.backup_incremental_strategy.get(name)
            if not incremental:
                raise exception.DatastoreOperationNotSupported(
                    operation='incremental backup (no [couchdb] '
                              'backup_incremental_strategy for %s)' % name,
                    datastore=self.manager_name)
            name = incremental
        return strategies.load('backup', name, CONF.couchdb.backup_namespace)

    # Databases.
    @reported_cast
    def create_database(self, context, databases):
        self.admin.create_database(
            [models.Schema.from_dict(d).name for d in databases or []])

    def list_databases(self, context, limit=None, marker=None,
                       include_marker=False):
        page, next_marker = self.admin.list_databases(
            limit=limit, marker=marker, include_marker=include_marker)
        return [models.Schema(n).to_dict() for n in page], next_marker

    @reported_cast
    def delete_database(self, context, database):
        self.admin.delete_database(models.Schema.from_dict(database).name)

    def compact_database(self, context, database):
        """This agent's own call (Trove's API has none): start compacting."""
        self.admin.compact_database(models.Schema.from_dict(database).name)

    # Users.
    @reported_cast
    def create_user(self, context, users):
        self.admin.create_user([models.User.from_dict(u) for u in users])

    def list_users(self, context, limit=None, marker=None,
                   include_marker=False):
        page, next_marker = self.admin.list_users(
            limit=limit, marker=marker, include_marker=include_marker)
        return [u.to_dict() for u in page], next_marker

    def get_user(self, context, username, hostname):
        user = self.admin.get_user(username)
        return user.to_dict() if user is not None else None

    @reported_cast
    def delete_user(self, context, user):
        self.admin.delete_user(models.User.from_dict(user).name)

    @reported_cast
    def change_passwords(self, context, users):
        self.admin.change_passwords(
            [models.User.from_dict(u) for u in users])

    @reported_cast
    def update_attributes(self, context, username, hostname, user_attrs):
        self.admin.update_attributes(username, user_attrs or {})

    def grant_access(self, context, username, hostname, databases):
        self.admin.grant_access(
            username, [models.Schema.from_dict(d).name for d in databases])

    def revoke_access(self, context, username, hostname, database):
        self.admin.revoke_access(username,
                                 models.Schema.from_dict(database).name)

    def list_access(self, context, username, hostname):
        return [models.Schema(n).to_dict()
                for n in self.admin.list_access(username)]

    # Root.
    def enable_root(self, context):
        return self.admin.enable_root().to_dict()

    def enable_root_with_password(self, context, root_password=None):
        return self.admin.enable_root(root_password).to_dict()

    def disable_root(self, context):
        self.admin.disable_root()

    def is_root_enabled(self, context):
        return self.admin.is_root_enabled()

    def get_root_password(self, context):
        return self.admin.get_root_password()

    # Replication.
    def get_replication_snapshot(self, context, snapshot_info=None,
                                 replica_source_config=None):
        self.app.write_config_contents(replica_source_config,
                                       service.REPLICATION_INI_FILE)
        snapshot = self.replication.snapshot_for_replication(snapshot_info)
        backup_info = snapshot_info or {}
        if backup_info.get('id'):
            # The backup Trove recorded for the new replica (an incremental
            # one when Trove names a parent), reported to the conductor as
            # every backup is; Trove deletes it once the replica is built.
            result = backups.create_backup(
                context, backup_info, self.app,
                self._backup_strategy(backup_info))
            snapshot['dataset']['snapshot_id'] = backup_info['id']
            snapshot['seed'].update(backup_id=backup_info['id'], **result)
        else:
            LOG.warning("The replication snapshot names no backup: the new "
                        "replica replicates every document")
        stats = self.get_filesystem_stats(context)
        snapshot['dataset'].update({
            'datastore_manager': self.manager_name,
            'dataset_size': stats.get('used', 0.0),
            'volume_size': stats.get('total', 0.0)})
        return snapshot

    def attach_replica(self, context, replica_info, slave_config=None,
                       restart=False):
        self.replication.attach(replica_info)
        changed = self.app.write_config_contents(
            slave_config, service.REPLICATION_INI_FILE)
        if changed and restart:
            self.app.restart()

    @reported_cast
    def attach_replication_slave(self, context, snapshot, slave_config=None):
        self.attach_replica(context, snapshot, slave_config)

    def detach_replica(self, context, for_failover=False):
        return self.replication.detach(for_failover=for_failover)

    def get_replica_context(self, context):
        return self.replication.get_replica_context()

    def make_read_only(self, context, read_only):
        self.replication.make_read_only(read_only)

    def enable_as_master(self, context, replica_source_config):
        self.replication.enable_as_master()
        self.app.write_config_contents(replica_source_config,
                                       service.REPLICATION_INI_FILE)

    def demote_replication_master(self, context):
        self.replication.demote_master()

    def get_latest_txn_id(self, context):
        return self.replication.applied_txn()

    def get_last_txn(self, context):
        return self.replication.last_txn()

    def wait_for_txn(self, context, txn):
        self.replication.wait_for_txn(txn)

    def get_txn_count(self, context):
        return self.replication.txn_count()

    def cleanup_source_on_replica_detach(self, context, replica_info):
        self.replication.cleanup_source_on_replica_detach(replica_info)

    def backup_required_for_replication(self, context):
        return self.replication.backup_required_for_replication()
