"""Every configuration option the CouchDB guest agent reads.

Options are registered on the global ``cfg.CONF`` when this module is imported
(oslo.messaging and oslo.log need the global object) and read inside
functions only, never at import time.  ``list_opts()`` exports every group for
``oslo-config-generator`` (see ``setup.cfg``).
"""

from oslo_config import cfg

from trove.common import exception

CONF = cfg.CONF

DEFAULT_BACKUP_KEY = 'default_aes_cbc_key'

common_opts = [
    cfg.StrOpt('guest_id',
               help='The ID of this guest: the Trove instance UUID. Trove '
                    'injects it in /etc/trove/conf.d/guest_info.conf. The '
                    'agent refuses to start without it.'),
    cfg.StrOpt('datastore_manager',
               help='Manager of the datastore on this guest; "couchdb" for '
                    'this agent. Injected by Trove in guest_info.conf.'),
    cfg.StrOpt('datastore_version',
               help='Datastore version name, injected by Trove.'),
    cfg.StrOpt('tenant_id',
               help='Project that owns this instance, injected by Trove.'),
    cfg.DictOpt('datastore_registry_ext', default={},
                help='Extra datastore_manager:class entries for the manager '
                     'registry; an entry here overrides the built-in one. '
                     'Trove 26 injects couchdb:<registry_ext of the '
                     'version>.'),
    cfg.StrOpt('instance_rpc_encr_key', secret=True,
               help='Per-instance key that encrypts RPC payloads between '
                    'the control plane and this guest (AES-256-CBC, as '
                    'Trove does it). Injected by Trove in guest_info.conf.'),
    cfg.StrOpt('replication_strategy',
               help='Replication strategy of the datastore version, '
                    'injected by Trove 26 in guest_info.conf.'),
    cfg.StrOpt('ssl_mode',
               help='TLS mode injected by Trove 26 ("None" when off).'),
    cfg.BoolOpt('network_isolation', default=False,
                help='Injected by Trove 26: whether the database network is '
                     'isolated from the management network.'),
    cfg.StrOpt('conductor_queue', default='trove-conductor',
               help='Topic the conductor listens on.'),
    cfg.IntOpt('report_interval', default=30, min=1,
               help='Seconds between two status heartbeats to the '
                    'conductor.'),
    cfg.IntOpt('agent_call_low_timeout', default=15, min=1,
               help='Timeout in seconds of quick calls made by the '
                    'taskmanager-side client (trove/guestagent/api.py).'),
    cfg.IntOpt('agent_call_high_timeout', default=600, min=1,
               help='Timeout in seconds of slow calls (restart, volume '
                    'operations) made by the taskmanager-side client.'),
    cfg.StrOpt('guest_state_dir', default='/var/lib/trove-guestagent',
               help='Directory, outside the database data directory, where '
                    'the agent keeps its state: prepare markers and the '
                    '0600 credentials file of the internal admin.'),
    cfg.IntOpt('state_change_wait_time', default=180, min=1,
               help='Seconds to wait for CouchDB to start or stop.'),
    cfg.IntOpt('command_process_timeout', default=600, min=1,
               help='Seconds before a command run by the agent (mkfs, '
                    'mount, package installs) is terminated.'),
    cfg.StrOpt('root_helper', default='sudo -n',
               help='Command prefix that runs a command as root when the '
                    'agent itself does not run as root (split on spaces, '
                    'never run by a shell).'),
    cfg.StrOpt('fstab_path', default='/etc/fstab',
               help='File system table where the agent records the data '
                    'volume so that it is mounted again at boot.'),
    cfg.BoolOpt('root_grant_option', default=True,
                help='Kept for configuration compatibility with Trove.'),
]

backup_opts = [
    cfg.StrOpt('backup_aes_cbc_key', default=DEFAULT_BACKUP_KEY,
               secret=True,
               help='Operator key that encrypts backups (the name is '
                    "upstream Trove's; this agent derives a per-backup "
                    'AES-256-GCM key from it). It also decrypts backups '
                    "made by upstream Trove's own CouchDB strategy. The "
                    'agent warns at start when the well-known default is '
                    'in use.'),
    cfg.MultiStrOpt('backup_aes_cbc_previous_keys', default=[], secret=True,
                    help='Earlier values of backup_aes_cbc_key, one per '
                         'line (repeat the option): a restore tries them, '
                         'in order, after the current key, so backups made '
                         'before a key rotation still restore. New backups '
                         'always use backup_aes_cbc_key.'),
    cfg.BoolOpt('backup_use_openssl_encryption', default=True,
                help='Encrypt backups (authenticated). When this is on and '
                     'the key is empty the backup fails: it never stores '
                     'plaintext instead.'),
    cfg.BoolOpt('backup_use_gzip_compression', default=True,
                help='Compress backups with gzip (parallel, standard gzip '
                     'format).'),
    cfg.StrOpt('backup_compression_engine', default='isal',
               choices=[('isal', 'ISA-L (the isal package): several times '
                                 'faster than zlib at the same ratio'),
                        ('zlib', "Python's standard zlib")],
               help='Deflate implementation that compresses and inflates '
                    'backups. Both write standard gzip and read any '
                    'gzip, so the choice never affects which backups '
                    'restore.'),
    cfg.IntOpt('backup_compression_level', default=None, min=0, max=9,
               help="Compression level of backups, in the engine's scale: "
                    'ISA-L 0-3, zlib 0-9. Unset: the engine\'s default, '
                    'chosen by measurement on CouchDB 3.5 data (the '
                    'README): ISA-L 2 (smaller objects than zlib 1 at 4-5x '
                    'its speed), zlib 1.'),
    cfg.IntOpt('backup_compression_threads', default=0, min=0,
               help='Threads that compress a backup and inflate a restore; '
                    '0 means one per CPU.'),
    cfg.IntOpt('backup_chunk_size', default=1024 * 1024, min=4096,
               help='Bytes read, compressed, encrypted and sent at a time.'),
    cfg.IntOpt('backup_segment_max_size', default=2 * 1024 ** 3, min=1,
               help='Largest Swift segment of a backup; a larger backup '
                    'is stored as a Static Large Object.'),
    cfg.StrOpt('backup_swift_container', default='database_backups',
               help='Swift container of the backups.'),
    cfg.StrOpt('storage_strategy', default='swift',
               choices=[('swift', "OpenStack Swift, with the request's "
                                  'token'),
                        ('SwiftStorage', 'the same as swift: the value '
                                         'upstream Trove used until its '
                                         'Victoria release (the name of '
                                         'its Swift storage class)'),
                        ('local', 'a directory of this machine '
                                  '(backup_local_dir)')],
               help='Where backups are stored.'),
    cfg.StrOpt('backup_local_dir', default='/var/lib/trove-backups',
               help='Directory of the "local" storage strategy.'),
    cfg.URIOpt('swift_url',
               help='Swift endpoint without the project, e.g. '
                    'http://swift:8080/v1/AUTH_ (the project ID is '
                    "appended). When unset, the request's service catalog "
                    'gives the endpoint.'),
    cfg.StrOpt('swift_service_type', default='object-store',
               help='Service type of Swift in the service catalog.'),
    cfg.StrOpt('swift_endpoint_type', default='publicURL',
               help='Endpoint interface of Swift in the service catalog.'),
    cfg.StrOpt('os_region_name', default='RegionOne',
               help='Region of the Swift endpoint in the service catalog.'),
    cfg.BoolOpt('verify_swift_checksum_on_restore', default=True,
                help='Verify the bytes downloaded for a restore against the '
                     'checksum recorded when the backup was made.'),
    cfg.IntOpt('backup_progress_interval', default=10, min=1,
               help='Seconds between two progress lines of a running '
                    'backup or restore in the log.'),
    cfg.StrOpt('guest_log_container_name', default='database_logs',
               help='Swift container that guest logs are published to.'),
    cfg.IntOpt('guest_log_limit', default=1000000, min=1024,
               help='Largest object, in bytes, of a published guest log '
                    '(whole lines).'),
    cfg.IntOpt('guest_log_expiry', default=604800, min=60,
               help='Seconds before a published guest log expires in '
                    'Swift.'),
]

upgrade_levels_opts = [
    cfg.StrOpt('guestagent', default='latest',
               help='Version cap of the guest RPC API used by the '
                    'taskmanager-side client.'),
    cfg.StrOpt('conductor', default='latest',
               help='Version cap of the conductor RPC API used by this '
                    'agent.'),
]

couchdb_group = cfg.OptGroup(
    'couchdb', title='CouchDB options',
    help='Options of the CouchDB datastore and of how the agent manages it.')

couchdb_opts = [
    cfg.ListOpt('tcp_ports', default=['5984'],
                help='TCP ports and/or port ranges that the security group '
                     'opens for CouchDB (used by the control plane).'),
    cfg.ListOpt('udp_ports', default=[],
                help='UDP ports and/or port ranges that the security group '
                     'opens (none for CouchDB).'),
    cfg.PortOpt('port', default=5984,
                help='Port CouchDB listens on.'),
    cfg.HostAddressOpt('host', default='127.0.0.1',
                       help='Address the agent uses to reach CouchDB.'),
    cfg.StrOpt('bind_address', default='0.0.0.0',
               help='Address CouchDB is made to listen on during prepare, '
                    'so that clients reach it on the instance address.'),
    cfg.StrOpt('mount_point', default='/var/lib/couchdb',
               help='CouchDB data directory; the volume is mounted here.'),
    cfg.StrOpt('config_dir', default='/etc/couchdb',
               help='CouchDB configuration directory (/etc/couchdb on 1.6, '
                    '/opt/couchdb/etc on 3.x).'),
    cfg.BoolOpt('volume_support', default=True,
                help='Whether a Cinder volume is attached for the data.'),
    cfg.StrOpt('device_path', default='/dev/vdb',
               help='Device path of the data volume.'),
    cfg.StrOpt('volume_fstype', default='ext3',
               help='File system the data volume is formatted with.  '
                    'resize_fs grows ext2, ext3, ext4 and xfs; growing it '
                    'while mounted needs CAP_SYS_ADMIN for xfs, '
                    'CAP_SYS_RESOURCE for ext.'),
    cfg.StrOpt('format_options',
               help='Extra options for mkfs when formatting the volume, '
                    'split like a shell would.  Unset: the file system\'s '
                    'default, "-m 5" (5 percent of the blocks reserved for '
                    'root) for ext2, ext3 and ext4, none for xfs and any '
                    'other.  A value, even an empty one, is used as given.  '
                    'mkfs.xfs refuses a device that already holds a file '
                    'system unless given -f.'),
    cfg.StrOpt('mount_options', default='defaults,noatime',
               help='Mount options of the data volume.'),
    cfg.IntOpt('volume_format_timeout', default=120, min=1,
               help='Seconds before formatting the volume is abandoned.'),
    cfg.StrOpt('couchdb_user', default='couchdb',
               help='System user that owns the CouchDB data directory.'),
    cfg.StrOpt('couchdb_group', default='couchdb',
               help='System group that owns the CouchDB data directory.'),
    cfg.StrOpt('service_manager', default='systemd',
               choices=[('systemd', 'systemctl start/stop of service_name'),
                        ('sysvinit', 'service(8) start/stop of '
                                     'service_name'),
                        ('command', 'run start_command / stop_command')],
               help='How the agent starts and stops CouchDB.'),
    cfg.StrOpt('service_name', default='couchdb',
               help='Name of the CouchDB systemd unit or init script.'),
    cfg.StrOpt('start_command',
               help='Command (split like a shell would, but never run by a '
                    'shell) that starts CouchDB when service_manager is '
                    '"command". It must return once CouchDB is launched.'),
    cfg.StrOpt('stop_command',
               help='Command that stops CouchDB when service_manager is '
                    '"command". It must return once CouchDB has stopped.'),
    cfg.StrOpt('api_version', default='auto',
               choices=[('auto', 'probe the server'),
                        ('1', 'CouchDB 1.x HTTP API'),
                        ('3', 'CouchDB 2.x/3.x HTTP API')],
               help='Which CouchDB HTTP API the server speaks. "auto" '
                    'probes GET /_up (2.x/3.x) and GET / (1.x).'),
    cfg.FloatOpt('http_timeout', default=30.0, min=0.1,
                 help='Seconds the agent waits for one CouchDB HTTP '
                      'request.'),
    cfg.IntOpt('usage_timeout', default=400, min=1,
               help='Seconds to wait for CouchDB to become available '
                    'after a start during prepare.'),
    cfg.ListOpt('ignore_users', default=['os_admin', 'root'],
                help='Users hidden from list_users and refused by the user '
                     'calls.'),
    cfg.ListOpt('ignore_dbs', default=['_users', '_replicator',
                                       '_global_changes'],
                help='Databases hidden from list_databases and refused by '
                     'the database calls.'),
    cfg.BoolOpt('root_on_create', default=False,
                help='Enable the root user when the instance is created.'),
    cfg.StrOpt('root_controller',
               default='trove.extensions.common.service.DefaultRootController',
               help='Root controller used by the Trove API for this '
                    'datastore.'),
    cfg.IntOpt('default_password_length', default=36, min=8,
               help='Length of generated passwords.'),
    cfg.StrOpt('backup_strategy', default='CouchDBBackup',
               help='Name of the backup strategy class.'),
    cfg.StrOpt('backup_namespace',
               default='trove.guestagent.strategies.backup.experimental.'
                       'couchdb_impl',
               help='Module that holds the backup strategy.'),
    cfg.StrOpt('restore_namespace',
               default='trove.guestagent.strategies.restore.experimental.'
                       'couchdb_impl',
               help='Module that holds the restore strategies.'),
    cfg.DictOpt('backup_incremental_strategy',
                default={'CouchDBBackup': 'CouchDBBackupIncremental'},
                help='The strategy of an incremental backup (a backup '
                     'with a parent: trove backup-create --incremental or '
                     '--parent), per full backup strategy. Empty: '
                     'incremental backups are refused.'),
    cfg.StrOpt('replication_strategy', default='CouchDBReplication',
               help='Name of the replication strategy class.'),
    cfg.StrOpt('replication_namespace',
               default='trove.guestagent.strategies.replication.'
                       'experimental.couchdb_impl',
               help='Module that holds the replication strategy.'),
    cfg.StrOpt('replication_host',
               help='Address replicas use to reach this instance\'s CouchDB '
                    'when it is a replication source. Default: '
                    'bind_address, or the address of the default route '
                    'when CouchDB listens on every address.'),
    cfg.FloatOpt('replication_sync_interval', default=2.0, min=0.1,
                 help='Seconds between two passes of the replication '
                      'upkeep: on a source, guarding new databases and '
                      'publishing their list; on a replica, following '
                      'created and deleted databases and _security, and '
                      'checking how far each database has got.'),
    cfg.IntOpt('replication_stall_timeout', default=300, min=1,
               help='Seconds a replicated database may stay behind its '
                    'source without progress before the replica reports '
                    'itself blocked.'),
    cfg.IntOpt('replication_wait_timeout', default=300, min=1,
               help='Seconds wait_for_txn waits for a replica to catch up '
                    'before it fails.'),
    cfg.ListOpt('upgrade_preserved_files',
                default=['local.ini', 'local.d', 'vm.args'],
                help='Files and directories of CouchDB\'s configuration '
                     '(relative to config_dir, or absolute) that '
                     'pre_upgrade saves on the data volume and '
                     'post_upgrade puts back on the new root disk: the '
                     'server admins, the uuid, the node name.'),
    cfg.StrOpt('server_log_file', default='/var/log/couchdb/couchdb.log',
               help='CouchDB\'s own log file, the guest log "couchdb" (1.6 '
                    'writes /var/log/couchdb/couch.log; 3.x writes it with '
                    '[log] writer = file).'),
    cfg.StrOpt('guest_log_exposed_logs', default='',
               help='Comma-separated guest logs a tenant may list, publish '
                    'and discard: "couchdb" (the server log), "guest" (this '
                    'agent\'s log). An admin context sees all of them.'),
]


def register_opts(conf=CONF):
    conf.register_opts(common_opts)
    conf.register_opts(backup_opts)
    conf.register_group(couchdb_group)
    conf.register_opts(couchdb_opts, group=couchdb_group)
    conf.register_opts(upgrade_levels_opts, group='upgrade_levels')


def list_opts():
    """Every option group of the agent, for oslo-config-generator."""
    return [
        (None, common_opts + backup_opts),
        ('upgrade_levels', upgrade_levels_opts),
        (couchdb_group, couchdb_opts),
    ]


def check_options(conf=CONF):
    """Read every option once, so that a value its type, bounds or choices
    refuse stops the agent at start with the option's name, not at the
    first backup."""
    for group, opts in list_opts():
        section = group.name if isinstance(group, cfg.OptGroup) else group
        values = conf.get(section) if section else conf
        for opt in opts:
            try:
                getattr(values, opt.dest)
            except (cfg.ConfigFileValueError,
                    cfg.ConfigSourceValueError) as exc:
                # A secret's value stays out of the message and the chain.
                raise exception.ConfigurationError(
                    reason=_refusal(section or 'DEFAULT', opt, exc)
                ) from (None if opt.secret else exc)
    _check_compression(conf)


def _check_compression(conf):
    from trove.guestagent.backup import compression
    level = conf.backup_compression_level
    if level is None:
        return
    try:
        compression.engine(conf.backup_compression_engine).check_level(level)
    except ValueError as exc:
        raise exception.ConfigurationError(
            reason='[DEFAULT] backup_compression_level: %s' % exc) from exc


def _refusal(section, opt, exc):
    if opt.secret:
        return ("[%s] %s has a value that is not valid (not shown: the "
                "option is secret)" % (section, opt.name))
    return "[%s] %s: %s" % (section, opt.name, exc)


def get_configuration_property(name, manager=None):
    """Read an option of the datastore's group, e.g. ``mount_point``."""
    group = manager or CONF.datastore_manager or 'couchdb'
    return CONF.get(group).get(name)


register_opts()
