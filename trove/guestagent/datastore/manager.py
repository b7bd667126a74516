"""The RPC endpoint every datastore manager builds on.

Every method of Trove's guest API 1.0-1.3 is defined here with Trove's
keyword arguments, so a call always reaches a method: one this datastore
cannot serve raises Trove's ``DatastoreOperationNotSupported``, never an
AttributeError or TypeError.  A datastore overrides what it supports.

Casts have no caller waiting for an answer, so a failing cast is reported:
logged with its traceback, sent to the conductor as ``notify_exc_info`` when
the request carries Trove's notification, and re-raised for oslo.messaging.
"""

import functools
import importlib.metadata
import os
import traceback

from oslo_config import cfg
from oslo_log import log as logging
import oslo_messaging as messaging

from trove.common import cfg as trove_cfg
from trove.common import context as trove_context
from trove.common import exception
from trove.conductor import api as conductor_api
from trove.guestagent.datastore import backups
from trove.guestagent.datastore import service as status_service
from trove.guestagent import volume

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def reported_cast(func):
    """Report the outcome of a cast to the conductor and the log."""

    @functools.wraps(func)
    def wrapper(self, context, *args, **kwargs):
        try:
            result = func(self, context, *args, **kwargs)
        except Exception as exc:
            LOG.exception("%s failed: %s", func.__name__, exc)
            _notify(context, 'notify_exc_info', message=str(exc),
                    exception=traceback.format_exception(exc))
            raise
        _notify(context, 'notify_end')
        return result

    return wrapper


def _notify(context, method, **kwargs):
    if getattr(context, 'notification', None) is None:
        return
    try:
        getattr(conductor_api.API(context), method)(**kwargs)
    except Exception:
        LOG.exception("Could not send %s to the conductor.", method)


def not_supported(func):
    """Mark a guest API method this datastore does not implement."""

    @functools.wraps(func)
    def wrapper(self, context, *args, **kwargs):
        raise exception.DatastoreOperationNotSupported(
            operation=func.__name__, datastore=self.manager_name)

    return wrapper


class Manager:
    """Base of a datastore's RPC endpoint (Trove guest API 1.0-1.3)."""

    target = messaging.Target(version='1.3')
    manager_name = None

    def __init__(self):
        self.status = status_service.GuestStatus(
            self.get_actual_status, self._admin_context)

    # What a datastore provides.
    def get_actual_status(self):
        raise NotImplementedError()

    def do_prepare(self, context, packages, databases, memory_mb, users,
                   device_path, mount_point, backup_info, config_contents,
                   root_password, overrides, cluster_config, snapshot,
                   ds_version):
        raise NotImplementedError()

    @staticmethod
    def _admin_context():
        return trove_context.TroveContext(is_admin=True)

    def periodic_tasks(self):
        """[(callable, interval in seconds)] the agent runs in the
        background; each callable must not raise."""
        return []

    def on_agent_start(self):
        """Called once when the agent process starts serving."""
        if CONF.backup_use_openssl_encryption and (
                CONF.backup_aes_cbc_key == trove_cfg.DEFAULT_BACKUP_KEY):
            LOG.warning("Backups are encrypted with the well-known default "
                        "key: set [DEFAULT] backup_aes_cbc_key to a secret "
                        "random key.")
        try:
            backups.report_interrupted(self._admin_context())
        except Exception:
            LOG.exception("Could not report interrupted backups.")

    # Instance lifecycle.
    def rpc_ping(self, context):
        return True

    @reported_cast
    def prepare(self, context, packages, databases, memory_mb, users,
                device_path=None, mount_point=None, backup_info=None,
                config_contents=None, root_password=None, overrides=None,
                cluster_config=None, snapshot=None, modules=None,
                ds_version=None):
        LOG.info("Preparing the %s guest.", self.manager_name)
        self.status.begin_install()
        try:
            self.do_prepare(context, packages, databases, memory_mb, users,
                            device_path, mount_point, backup_info,
                            config_contents, root_password, overrides,
                            cluster_config, snapshot, ds_version)
            if modules:
                self.module_apply(context, modules)
        except Exception:
            self.status.end_install(error_occurred=True)
            raise
        self.status.end_install()
        LOG.info("The %s guest is prepared.", self.manager_name)

    @not_supported
    def restart(self, context):
        pass

    @not_supported
    def start_db_with_conf_changes(self, context, config_contents,
                                   ds_version=None):
        pass

    @not_supported
    def reset_configuration(self, context, configuration):
        pass

    @not_supported
    def stop_db(self, context, do_not_start_on_reboot=False):
        pass

    @not_supported
    def upgrade(self, context, instance_version=None, location=None,
                metadata=None, upgrade_info=None):
        # Trove up to 2023.1 sent instance_version/location/metadata;
        # Trove 26 casts upgrade(upgrade_info).
        pass

    @reported_cast
    @not_supported
    def rebuild(self, context, ds_version, config_contents=None,
                config_overrides=None):
        # Trove 26's admin rebuild: a new root disk, then this cast.
        pass

    @not_supported
    def pre_upgrade(self, context):
        pass

    @not_supported
    def post_upgrade(self, context, upgrade_info):
        pass

    @not_supported
    def update_guest(self, context):
        pass

    def get_hwinfo(self, context):
        return {'mem_total': _mem_total_kb(), 'num_cpus': os.cpu_count()}

    def get_diagnostics(self, context):
        """Trove's diagnostics (the agent process: version, threads, file
        descriptors, memory in kB) plus the datastore's own numbers."""
        status = _proc_status()
        diagnostics = {
            'version': _agent_version(),
            'threads': status.get('Threads'),
            'fd_size': status.get('FDSize'),
            'vm_size': status.get('VmSize'),
            'vm_peak': status.get('VmPeak'),
            'vm_rss': status.get('VmRSS'),
            'vm_hwm': status.get('VmHWM'),
        }
        diagnostics.update(self.datastore_diagnostics())
        return diagnostics

    def datastore_diagnostics(self):
        """Extra numbers of the datastore for get_diagnostics."""
        return {}

    # Volumes.
    def _mount_point(self, mount_point):
        return mount_point or CONF.get(self.manager_name).mount_point

    def _device_path(self, device_path):
        return device_path or CONF.get(self.manager_name).device_path

    def get_filesystem_stats(self, context, fs_path=None):
        return volume.get_filesystem_stats(self._mount_point(fs_path))

    def mount_volume(self, context, device_path=None, mount_point=None,
                     write_to_fstab=True):
        device = volume.VolumeDevice(self._device_path(device_path))
        device.mount(self._mount_point(mount_point),
                     write_to_fstab=write_to_fstab)

    def unmount_volume(self, context, device_path=None, mount_point=None):
        device = volume.VolumeDevice(self._device_path(device_path))
        device.unmount(self._mount_point(mount_point))

    def resize_fs(self, context, device_path=None, mount_point=None,
                  online=False):
        device = volume.VolumeDevice(self._device_path(device_path))
        device.resize_fs(self._mount_point(mount_point), online=online)

    # Backups.
    @not_supported
    def create_backup(self, context, backup_info):
        pass

    @not_supported
    def pre_create_backup(self, context, **kwargs):
        pass

    @not_supported
    def post_create_backup(self, context, **kwargs):
        pass

    # Databases and users.
    @not_supported
    def create_database(self, context, databases):
        pass

    @not_supported
    def list_databases(self, context, limit=None, marker=None,
                       include_marker=False):
        pass

    @not_supported
    def delete_database(self, context, database):
        pass

    @not_supported
    def create_user(self, context, users):
        pass

    @not_supported
    def list_users(self, context, limit=None, marker=None,
                   include_marker=False):
        pass

    @not_supported
    def delete_user(self, context, user):
        pass

    @not_supported
    def get_user(self, context, username, hostname):
        pass

    @not_supported
    def change_passwords(self, context, users):
        pass

    @not_supported
    def update_attributes(self, context, username, hostname, user_attrs):
        pass

    @not_supported
    def grant_access(self, context, username, hostname, databases):
        pass

    @not_supported
    def revoke_access(self, context, username, hostname, database):
        pass

    @not_supported
    def list_access(self, context, username, hostname):
        pass

    # Root.
    @not_supported
    def enable_root(self, context):
        pass

    @not_supported
    def enable_root_with_password(self, context, root_password=None):
        pass

    @not_supported
    def disable_root(self, context):
        pass

    @not_supported
    def is_root_enabled(self, context):
        pass

    @not_supported
    def get_root_password(self, context):
        pass

    # Configuration groups.
    @not_supported
    def update_overrides(self, context, overrides, remove=False):
        pass

    @not_supported
    def apply_overrides(self, context, overrides):
        pass

    # Replication.
    @not_supported
    def get_replication_snapshot(self, context, snapshot_info=None,
                                 replica_source_config=None):
        pass

    @not_supported
    def attach_replication_slave(self, context, snapshot, slave_config=None):
        pass

    @not_supported
    def attach_replica(self, context, replica_info, slave_config=None,
                       restart=False):
        pass

    @not_supported
    def detach_replica(self, context, for_failover=False):
        pass

    @not_supported
    def get_replica_context(self, context):
        pass

    @not_supported
    def make_read_only(self, context, read_only):
        pass

    @not_supported
    def enable_as_master(self, context, replica_source_config):
        pass

    @not_supported
    def demote_replication_master(self, context):
        pass

    @not_supported
    def get_latest_txn_id(self, context):
        pass

    @not_supported
    def get_last_txn(self, context):
        pass

    @not_supported
    def wait_for_txn(self, context, txn):
        pass

    @not_supported
    def get_txn_count(self, context):
        pass

    @not_supported
    def cleanup_source_on_replica_detach(self, context, replica_info):
        pass

    def backup_required_for_replication(self, context):
        return False

    # Guest logs and modules.
    @not_supported
    def guest_log_list(self, context):
        pass

    @not_supported
    def guest_log_action(self, context, log_name, enable=False,
                         disable=False, publish=False, discard=False):
        pass

    def module_list(self, context, include_contents=False):
        return []

    @not_supported
    def module_apply(self, context, modules=None):
        pass

    @not_supported
    def module_remove(self, context, module=None):
        pass

    # TLS (guest API 1.3).
    @not_supported
    def ssl_show(self, context, **kwargs):
        pass

    @not_supported
    def ssl_action(self, context, **kwargs):
        pass

    @not_supported
    def ssl_rollback(self, context, **kwargs):
        pass


def _agent_version():
    try:
        return importlib.metadata.version('trove-guestagent-couchdb')
    except importlib.metadata.PackageNotFoundError:
        return 'unknown'


def _proc_status():
    """{field: int} of the numeric fields of /proc/self/status (kB for
    the Vm* sizes)."""
    fields = {}
    with open('/proc/self/status') as f:
        for line in f:
            name, _, value = line.partition(':')
            words = value.split()
            if words and words[0].isdigit():
                fields[name] = int(words[0])
    return fields


def _mem_total_kb():
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemTotal:'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None

