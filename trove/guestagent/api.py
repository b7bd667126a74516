"""The taskmanager side of the guest RPC API.

This is how Trove's taskmanager and API talk to a guest, method for method,
with the same versions, timeouts and encryption.  The integration tests and
the demo drive the agent only through this class.

API version history:
    * 1.0 - everything up to Ussuri
    * 1.1 - ``ds_version`` for prepare and start_db_with_conf_changes,
            ``online`` for resize_fs
    * 1.2 - pre_create_backup, post_create_backup
    * 1.3 - ssl_show, ssl_action, ssl_rollback
"""

from oslo_config import cfg
from oslo_log import log as logging
import oslo_messaging as messaging

from trove.common import exception
from trove import rpc

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


class API:

    API_LATEST_VERSION = '1.3'
    API_BASE_VERSION = '1.0'
    VERSION_ALIASES = {'latest': API_LATEST_VERSION}

    def __init__(self, context, instance_id, key=None):
        self.context = context
        self.id = instance_id
        self.key = key
        cap = CONF.upgrade_levels.guestagent
        self.version_cap = self.VERSION_ALIASES.get(cap, cap)
        target = messaging.Target(topic=self._get_routing_key(),
                                  version=self.version_cap)
        self.client = rpc.get_client(target, key=key,
                                     version_cap=self.version_cap)

    def _get_routing_key(self):
        return "guestagent.%s" % self.id

    def _version(self, wanted):
        if self.client.can_send_version(wanted):
            return wanted
        return self.API_BASE_VERSION

    def _call(self, method, timeout, version=API_BASE_VERSION, **kwargs):
        LOG.debug("Calling %s on guest %s", method, self.id)
        cctxt = self.client.prepare(version=version, timeout=timeout)
        try:
            return cctxt.call(self.context, method, **kwargs)
        except messaging.MessagingTimeout as exc:
            raise exception.GuestTimeout() from exc
        except exception.TroveError:
            raise
        except Exception as exc:
            raise exception.GuestError(original_message=str(exc)) from exc

    def _cast(self, method, version=API_BASE_VERSION, **kwargs):
        LOG.debug("Casting %s to guest %s", method, self.id)
        cctxt = self.client.prepare(version=version)
        try:
            cctxt.cast(self.context, method, **kwargs)
        except Exception as exc:
            raise exception.GuestError(original_message=str(exc)) from exc

    def _low(self, method, **kwargs):
        return self._call(method, CONF.agent_call_low_timeout, **kwargs)

    def _high(self, method, **kwargs):
        return self._call(method, CONF.agent_call_high_timeout, **kwargs)

    def _create_guest_queue(self):
        """Make sure the guest's queue exists before the first cast."""
        target = messaging.Target(topic=self._get_routing_key(),
                                  server=self.id,
                                  version=self.API_BASE_VERSION)
        server = rpc.get_server(target, [], key=self.key)
        server.start()
        server.stop()
        server.wait()

    # Databases and users.
    def change_passwords(self, users):
        self._cast("change_passwords", users=users)

    def update_attributes(self, username, hostname, user_attrs):
        self._cast("update_attributes", username=username,
                   hostname=hostname, user_attrs=user_attrs)

    def create_user(self, users):
        self._cast("create_user", users=users)

    def get_user(self, username, hostname):
        return self._low("get_user", username=username, hostname=hostname)

    def list_access(self, username, hostname):
        return self._low("list_access", username=username,
                         hostname=hostname)

    def grant_access(self, username, hostname, databases):
        return self._low("grant_access", username=username,
                         hostname=hostname, databases=databases)

    def revoke_access(self, username, hostname, database):
        return self._low("revoke_access", username=username,
                         hostname=hostname, database=database)

    def list_users(self, limit=None, marker=None, include_marker=False):
        return self._low("list_users", limit=limit, marker=marker,
                         include_marker=include_marker)

    def delete_user(self, user):
        self._cast("delete_user", user=user)

    def create_database(self, databases):
        self._cast("create_database", databases=databases)

    def list_databases(self, limit=None, marker=None, include_marker=False):
        return self._low("list_databases", limit=limit, marker=marker,
                         include_marker=include_marker)

    def delete_database(self, database):
        self._cast("delete_database", database=database)

    # Root.
    def enable_root(self):
        return self._low("enable_root")

    def enable_root_with_password(self, root_password=None):
        return self._low("enable_root_with_password",
                         root_password=root_password)

    def disable_root(self):
        return self._low("disable_root")

    def is_root_enabled(self):
        return self._low("is_root_enabled")

    def get_root_password(self):
        return self._low("get_root_password")

    # Instance lifecycle.
    def get_hwinfo(self):
        return self._low("get_hwinfo")

    def get_diagnostics(self):
        return self._low("get_diagnostics")

    def rpc_ping(self):
        return self._low("rpc_ping")

    def prepare(self, memory_mb, packages, databases, users,
                device_path='/dev/vdb', mount_point='/mnt/volume',
                backup_info=None, config_contents=None, root_password=None,
                overrides=None, cluster_config=None, snapshot=None,
                modules=None, ds_version=None):
        version = self._version('1.1')
        kwargs = dict(packages=packages, databases=databases,
                      memory_mb=memory_mb, users=users,
                      device_path=device_path, mount_point=mount_point,
                      backup_info=backup_info,
                      config_contents=config_contents,
                      root_password=root_password, overrides=overrides,
                      cluster_config=cluster_config, snapshot=snapshot,
                      modules=modules)
        if version != self.API_BASE_VERSION:
            kwargs['ds_version'] = ds_version
        self._create_guest_queue()
        self._cast("prepare", version=version, **kwargs)

    def restart(self):
        self._high("restart")

    def start_db_with_conf_changes(self, config_contents, ds_version=None):
        version = self._version('1.1')
        kwargs = {'config_contents': config_contents}
        if version != self.API_BASE_VERSION:
            kwargs['ds_version'] = ds_version
        self._call("start_db_with_conf_changes", CONF.agent_call_high_timeout,
                   version=version, **kwargs)

    def reset_configuration(self, configuration):
        self._high("reset_configuration", configuration=configuration)

    def stop_db(self, do_not_start_on_reboot=False):
        self._high("stop_db", do_not_start_on_reboot=do_not_start_on_reboot)

    def upgrade(self, instance_version, location, metadata=None):
        self._cast("upgrade", instance_version=instance_version,
                   location=location, metadata=metadata)

    def pre_upgrade(self):
        return self._high("pre_upgrade")

    def post_upgrade(self, upgrade_info):
        self._high("post_upgrade", upgrade_info=upgrade_info)

    def update_guest(self):
        self._high("update_guest")

    # Volumes.
    def get_volume_info(self, fs_path=None):
        return self._low("get_filesystem_stats", fs_path=fs_path)

    def get_filesystem_stats(self, fs_path=None):
        return self.get_volume_info(fs_path)

    def mount_volume(self, device_path=None, mount_point=None):
        self._high("mount_volume", device_path=device_path,
                   mount_point=mount_point)

    def unmount_volume(self, device_path=None, mount_point=None):
        self._high("unmount_volume", device_path=device_path,
                   mount_point=mount_point)

    def resize_fs(self, device_path=None, mount_point=None, online=False):
        version = self._version('1.1')
        kwargs = {'device_path': device_path, 'mount_point': mount_point}
        if version != self.API_BASE_VERSION:
            kwargs['online'] = online
        self._call("resize_fs", CONF.agent_call_high_timeout,
                   version=version, **kwargs)

    # Backups.
    def create_backup(self, backup_info):
        self._cast("create_backup", backup_info=backup_info)

    def pre_create_backup(self, **kwargs):
        return self._call("pre_create_backup", CONF.agent_call_high_timeout,
                          version=self._version('1.2'), **kwargs)

    def post_create_backup(self, **kwargs):
        return self._call("post_create_backup", CONF.agent_call_high_timeout,
                          version=self._version('1.2'), **kwargs)

    # Configuration groups.
    def update_overrides(self, overrides, remove=False):
        self._high("update_overrides", overrides=overrides, remove=remove)

    def apply_overrides(self, overrides):
        self._high("apply_overrides", overrides=overrides)

    # Replication.
    def get_replication_snapshot(self, snapshot_info=None,
                                 replica_source_config=None):
        return self._high("get_replication_snapshot",
                          snapshot_info=snapshot_info,
                          replica_source_config=replica_source_config)

    def attach_replication_slave(self, snapshot, replica_config=None):
        self._cast("attach_replication_slave", snapshot=snapshot,
                   slave_config=replica_config)

    def attach_replica(self, replica_info, slave_config=None, restart=False):
        self._high("attach_replica", replica_info=replica_info,
                   slave_config=slave_config, restart=restart)

    def detach_replica(self, for_failover=False):
        return self._high("detach_replica", for_failover=for_failover)

    def get_replica_context(self):
        return self._high("get_replica_context")

    def make_read_only(self, read_only):
        self._high("make_read_only", read_only=read_only)

    def enable_as_master(self, replica_source_config):
        self._high("enable_as_master",
                   replica_source_config=replica_source_config)

    def demote_replication_master(self):
        self._high("demote_replication_master")

    def get_latest_txn_id(self):
        return self._high("get_latest_txn_id")

    def get_last_txn(self):
        return self._high("get_last_txn")

    def wait_for_txn(self, txn):
        self._high("wait_for_txn", txn=txn)

    def get_txn_count(self):
        return self._high("get_txn_count")

    def cleanup_source_on_replica_detach(self, replica_info):
        self._high("cleanup_source_on_replica_detach",
                   replica_info=replica_info)

    def backup_required_for_replication(self):
        return self._low("backup_required_for_replication")

    # Guest logs and modules.
    def compact_database(self, database):
        """This agent's own call (Trove's API has none): start compacting
        a database; get_diagnostics shows compactions running."""
        self._high("compact_database", database=database)

    def guest_log_list(self):
        return self._low("guest_log_list")

    def guest_log_action(self, log_name, enable=False, disable=False,
                         publish=False, discard=False):
        return self._high("guest_log_action", log_name=log_name,
                          enable=enable, disable=disable, publish=publish,
                          discard=discard)

    def module_list(self, include_contents=False):
        return self._low("module_list", include_contents=include_contents)

    def module_apply(self, modules=None):
        return self._high("module_apply", modules=modules)

    def module_remove(self, module=None):
        return self._high("module_remove", module=module)

    # TLS (1.3).
    def ssl_show(self, **kwargs):
        return self._call("ssl_show", CONF.agent_call_low_timeout,
                          version=self._version('1.3'), **kwargs)

    def ssl_action(self, **kwargs):
        return self._call("ssl_action", CONF.agent_call_high_timeout,
                          version=self._version('1.3'), **kwargs)

    def ssl_rollback(self, **kwargs):
        return self._call("ssl_rollback", CONF.agent_call_high_timeout,
                          version=self._version('1.3'), **kwargs)
