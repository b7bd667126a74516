"""The CouchDB control layer: the server and its internal admin.

``CouchDBApp`` runs the server (start, stop, health, the internal admin,
configuration files); ``CouchDBAdmin`` (in ``admin.py``) manages databases,
users, access and root.  Both speak to CouchDB 1.6 and 3.x through one
:class:`~.client.CouchDBClient`.  This layer knows CouchDB and the OS
only: the RPC manager calls it, never the other way round.
"""

import contextlib
import grp
import json
import os
import pwd
import secrets
import string

from oslo_log import log as logging

from trove.common import cfg
from trove.common import exception
from trove.common import files
from trove.common import process
from trove.common.instance import ServiceStatus
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import ini
from trove.guestagent.datastore.experimental.couchdb import system

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

Health = couch.Health

# Written by stop_db, removed by start_db: "CouchDB is down on purpose".
STOP_MARKER_FILE = 'couchdb-stopped-by-agent'
# A Trove instance is one CouchDB node: CouchDB 3.x then creates its system
# databases itself and new databases have one copy of each shard (the
# default, n = 3, logs an error for every database on a single node).
# 1.x has neither setting and ignores them.  First in local.d, so Trove's
# configuration and the operator's groups win.
SINGLE_NODE_INI_FILE = '00-trove-single-node.ini'
SINGLE_NODE_INI = (b'; Written by the Trove guest agent: this instance is a '
                   b'single CouchDB node.\n[couchdb]\nsingle_node = true\n'
                   b'\n[cluster]\nn = 1\n')
# The same for one start with CouchDB's cluster setup left out (see
# CouchDBApp.cluster_setup_skipped).
SINGLE_NODE_INI_NO_SETUP = SINGLE_NODE_INI.replace(b'single_node = true',
                                                   b'single_node = false')
# Where earlier releases of the agent wrote its admin (now removed).
LEGACY_ADMIN_INI_FILE = '10-trove-admin.ini'
CONFIG_INI_FILE = '10-trove.ini'
# Trove's replica.config.template / replica_source.config.template.
REPLICATION_INI_FILE = '20-trove-replication.ini'
# CouchDB persists changes made through its config API (admins, bind
# address) into the last ini file of its chain; this one sorts after the
# agent's other files, so rewriting 10-trove.ini never loses them.  The
# agent's own admin goes here too: CouchDB replaces a clear password with
# its hash in the last file only (in any other it keeps the clear one and
# writes the hash to the last).
RUNTIME_INI_FILE = '99-trove-runtime.ini'
# Fields of a _users document that hold a hashed password.
HASH_FIELDS = ('derived_key', 'salt', 'iterations', 'password_scheme',
                'pbkdf2_prf', 'password_sha')
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
# Counters of CouchDB's statistics in the diagnostics (both versions).
STATISTICS = ('open_databases', 'open_os_files', 'database_reads',
              'database_writes')


def generate_password(length=None):
    """A random password of letters and digits (safe in an ini file)."""
    length = length or CONF.couchdb.default_password_length
    return ''.join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(length))


def couchdb_owner():
    """(uid, gid) of [couchdb] couchdb_user/couchdb_group, or None."""
    try:
        return (pwd.getpwnam(CONF.couchdb.couchdb_user).pw_uid,
                grp.getgrnam(CONF.couchdb.couchdb_group).gr_gid)
    except KeyError:
        LOG.warning("System user %s or group %s does not exist",
                    CONF.couchdb.couchdb_user, CONF.couchdb.couchdb_group)
        return None


def _state_dir():
    """CONF.guest_state_dir, created 0700 if missing."""
    path = CONF.guest_state_dir
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class StateFile:
    """A JSON object the agent keeps in a 0600 file of guest_state_dir."""

    file_name = None

    def __init__(self, path=None):
        self._path = path

    @property
    def path(self):
        return self._path or os.path.join(CONF.guest_state_dir,
                                          self.file_name)

    def read(self):
        try:
            with open(self.path, encoding='utf-8') as stream:
                data = json.load(stream)
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise exception.GuestStateError(
                reason='%s is not valid JSON: %s' % (self.path, exc)) from exc
        return data if isinstance(data, dict) else {}

    def update(self, **changes):
        """Set keys (None removes one) and write the file atomically."""
        data = self.read()
        data.update(changes)
        data = {k: v for k, v in data.items() if v is not None}
        if self._path is None:
            _state_dir()
        files.write_atomically(self.path, json.dumps(data).encode('utf-8'),
                               0o600)


class AdminCredentials(StateFile):
    """The internal admin's (and root's) passwords."""

    file_name = system.ADMIN_CREDENTIALS_FILE

    def load(self):
        """(user, password) of the internal admin, or None."""
        data = self.read()
        if not data.get('password'):
            return None
        return data.get('user') or system.ADMIN_USER, data['password']

    def save(self, password):
        self.update(user=system.ADMIN_USER, password=password)

    def root_password(self):
        return self.read().get('root_password')

    def save_root_password(self, password):
        self.update(root_password=password)

    def clear_root_password(self):
        if self.root_password() is not None:
            self.update(root_password=None)


class CouchDBApp:
    """The CouchDB server on this guest."""

    poll_interval = 0.5

    def __init__(self, service_manager=None, credentials=None):
        self._service_manager = service_manager
        self.credentials = credentials or AdminCredentials()
        self._anonymous_client = None
        self._admin_client = None
        self._admin_credentials = None

    @property
    def service_manager(self):
        if self._service_manager is None:
            from trove.guestagent.common import service_manager
            self._service_manager = service_manager.get_service_manager()
        return self._service_manager

    @staticmethod
    def base_url():
        host = CONF.couchdb.host
        if ':' in host and not host.startswith('['):
            host = '[%s]' % host
        return 'http://%s:%d' % (host, CONF.couchdb.port)

    def _anonymous(self):
        if self._anonymous_client is None:
            self._anonymous_client = couch.CouchDBClient(
                self.base_url(), api_version=CONF.couchdb.api_version)
        return self._anonymous_client

    @property
    def client(self):
        """A client as os_admin when its credentials exist, else anonymous."""
        credentials = self.credentials.load()
        if credentials is None:
            return self._anonymous()
        if self._admin_credentials != credentials:
            self._admin_client = self._anonymous().with_credentials(
                *credentials)
            self._admin_credentials = credentials
        return self._admin_client

    # -- status -----------------------------------------------------------

    def get_actual_status(self):
        """What CouchDB itself says now, as a ServiceStatus."""
        client = self.client
        health = client.health()
        if health is Health.UP:
            try:
                return (ServiceStatus.RUNNING if _is_server_admin(client)
                        else ServiceStatus.BLOCKED)
            except exception.CouchDBUnavailable:
                health = Health.DOWN
            except exception.CouchDBError as exc:
                LOG.debug("CouchDB is up but refuses the agent: %s", exc)
                return ServiceStatus.BLOCKED
        if health is Health.DOWN:
            return (ServiceStatus.SHUTDOWN if self._stopped_on_purpose()
                    else ServiceStatus.CRASHED)
        return ServiceStatus.BLOCKED

    def _stop_marker(self):
        return os.path.join(CONF.guest_state_dir, STOP_MARKER_FILE)

    def _stopped_on_purpose(self):
        return os.path.exists(self._stop_marker())

    def wait_for_health(self, expected, timeout, interval=None):
        """Poll CouchDB's health until it is ``expected``; True if it was."""
        for _attempt in couch.polling_loop(timeout,
                                           interval or self.poll_interval):
            if self.client.health() is expected:
                return True
        return False

    def _wait_or_fail(self, expected, action):
        timeout = CONF.state_change_wait_time
        if not self.wait_for_health(expected, timeout):
            raise exception.GuestStateError(
                reason='CouchDB did not %s within %s seconds'
                       % (action, timeout))

    # -- lifecycle --------------------------------------------------------

    def start_db(self, enable_on_boot=True):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._stop_marker())
        if enable_on_boot:
            self.service_manager.enable_on_boot()
        LOG.info("Starting CouchDB")
        self.service_manager.start()
        self._wait_or_fail(Health.UP, 'start')

    def stop_db(self, do_not_start_on_reboot=False):
        files.write_atomically(os.path.join(_state_dir(), STOP_MARKER_FILE),
                         b'stopped by the agent\n', 0o600)
        LOG.info("Stopping CouchDB")
        self.service_manager.stop()
        if do_not_start_on_reboot:
            self.service_manager.disable_on_boot()
        self._wait_or_fail(Health.DOWN, 'stop')

    def restart(self):
        self.stop_db()
        self.start_db(enable_on_boot=False)

    @contextlib.contextmanager
    def cluster_setup_skipped(self):
        """Starts within run without CouchDB 3.x's cluster setup.

        With ``single_node``, CouchDB 3.x finishes its cluster setup at
        every start: it waits 5 s for every node ``_nodes`` names to
        connect, then its setup application exits and takes the whole
        server down.  A restored data directory names the backup's node
        there until the restore has moved the shard maps and removed it,
        so the restore's start runs without ``single_node``; the file says
        ``true`` again afterwards, for every later start.  (The system
        databases that the setup would create are the backup's, or
        created by the agent.)
        """
        path = os.path.join(self.local_d(), SINGLE_NODE_INI_FILE)
        files.write_atomically(path, SINGLE_NODE_INI_NO_SETUP, 0o644,
                               couchdb_owner())
        try:
            yield
        finally:
            files.write_atomically(path, SINGLE_NODE_INI, 0o644,
                                   couchdb_owner())

    def start_and_secure(self):
        """Start CouchDB and make sure the internal admin exists.

        CouchDB 3.x refuses to start without an admin, and a start command
        such as systemd's returns before the server has refused, so a
        server the agent has no credentials for yet gets the internal admin
        in its configuration files before its first start, whatever API it
        will turn out to speak: CouchDB 1.x reads the same ``[admins]``
        section.  (A 1.x server that reads no ini file gets it through its
        configuration API once it is up.)  The server is also told it is a
        single node (``SINGLE_NODE_INI``).
        """
        single_node = os.path.join(self.local_d(), SINGLE_NODE_INI_FILE)
        if not os.path.exists(single_node):
            files.write_atomically(single_node, SINGLE_NODE_INI, 0o644,
                                   couchdb_owner())
        if self.credentials.load() is None:
            password = generate_password()
            self.credentials.save(password)
            self._write_admin_ini(password)
            LOG.info("Gave CouchDB the internal admin %s in %s before its "
                     "first start", system.ADMIN_USER, RUNTIME_INI_FILE)
        self.start_db()
        self.secure()

    # -- diagnostics ------------------------------------------------------

    def diagnostics(self):
        """CouchDB's numbers for Trove's diagnostics: its version, its
        databases, documents, disk used, compactions and replication jobs,
        and what its own statistics count."""
        client = self.client
        databases = documents = disk = compacting = 0
        for db in client.all_dbs():
            info = client.request('GET', [db])
            databases += 1
            documents += info.get('doc_count', 0)
            sizes = info.get('sizes') or {}
            disk += sizes.get('file', info.get('disk_size', 0)) or 0
            compacting += bool(info.get('compact_running'))
        jobs = client.all_docs(system.REPLICATOR_DB)['rows']
        numbers = {
            'couchdb_version': client.server_info().get('version'),
            'databases': databases, 'documents': documents,
            'disk_used_bytes': disk, 'compactions_running': compacting,
            'replication_jobs': len([row for row in jobs if not
                                     row['id'].startswith('_design/')])}
        numbers.update(self.statistics())
        return numbers

    def statistics(self):
        """Counters of CouchDB's own statistics (``/_stats`` on 1.x,
        ``/_node/_local/_stats`` on 3.x); None where it has none."""
        client = self.client
        if client.api_version == couch.API_V1:
            stats = (client.request('GET', '/_stats') or {}).get('couchdb')
        else:
            stats = client.request('GET', ['_node', '_local', '_stats',
                                           'couchdb'])
        stats = stats if isinstance(stats, dict) else {}
        found = {'couchdb_%s' % name: _stat_value(stats.get(name))
                 for name in STATISTICS}
        timing = stats.get('request_time')
        found['couchdb_request_time_ms'] = _stat_value(
            timing, 'median' if client.api_version == couch.API_V3
            else 'mean')
        return found

    # -- configuration ----------------------------------------------------

    def _listener_section(self):
        return 'chttpd' if self.client.api_version == couch.API_V3 \
            else 'httpd'

    def configure_bind_address(self, address):
        """Make CouchDB listen on ``address``; False if it already did."""
        client = self.client
        section = self._listener_section()
        try:
            current = client.config_get(section, 'bind_address')
        except exception.CouchDBError as exc:
            if exc.status != 404:
                raise
            current = None
        if current == address:
            LOG.debug("CouchDB already listens on %s", address)
            return False
        client.config_set(section, 'bind_address', address)
        return True

    def local_d(self):
        """<config_dir>/local.d, with the runtime ini file last in it."""
        path = os.path.join(CONF.couchdb.config_dir, 'local.d')
        os.makedirs(path, mode=0o755, exist_ok=True)
        runtime = os.path.join(path, RUNTIME_INI_FILE)
        if not os.path.exists(runtime):
            files.write_atomically(
                runtime, b'; Changes made through the config API are saved '
                b'here by CouchDB.\n', 0o600, couchdb_owner())
        return path

    def runtime_ini(self):
        return os.path.join(self.local_d(), RUNTIME_INI_FILE)

    def write_config_contents(self, config_contents, name=CONFIG_INI_FILE):
        """Write Trove's rendered configuration to local.d/<name>.

        Returns whether the file changed.
        """
        if not config_contents:
            return False
        path = os.path.join(self.local_d(), name)
        data = config_contents.encode('utf-8')
        try:
            with open(path, 'rb') as stream:
                if stream.read() == data:
                    return False
        except FileNotFoundError:
            pass
        files.write_atomically(path, data, 0o640, couchdb_owner())
        LOG.info("Wrote the CouchDB configuration to %s", path)
        return True

    def _write_admin_ini(self, password):
        """The internal admin in the runtime ini, which CouchDB hashes."""
        ini.set_value(self.runtime_ini(), 'admins', system.ADMIN_USER,
                      password, mode=0o600, owner=couchdb_owner())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.local_d(), LEGACY_ADMIN_INI_FILE))

    # -- internal admin ---------------------------------------------------

    def secure(self):
        """Create the internal admin os_admin; False if it already works."""
        credentials = self.credentials.load()
        client = self.client
        health = client.health()
        if health is Health.NOT_READY:
            raise exception.CouchDBUnavailable(
                method='GET', path='/', reason='CouchDB is not ready')
        if (credentials is not None and health is Health.UP
                and _is_server_admin(client)):
            LOG.debug("The internal admin %s already works", credentials[0])
            return False
        # Keep a password the agent already saved: the server may hold it.
        password = credentials[1] if credentials else generate_password()
        if health is Health.UP and client.api_version == couch.API_V1:
            self._secure_admin_party(password)
        else:
            self._secure_with_ini(password, running=health is Health.UP)
        if not _is_server_admin(self.client):
            raise exception.CouchDBAuthError(
                method='GET', path='/_session',
                reason='CouchDB does not accept the new credentials of %s'
                       % system.ADMIN_USER)
        LOG.info("Created the internal admin %s", system.ADMIN_USER)
        return True

    def _secure_admin_party(self, password):
        """CouchDB 1.x without admins: add os_admin via the config API."""
        anonymous = self._anonymous()
        if not _is_server_admin(anonymous):
            raise exception.CouchDBAuthError(
                method='GET', path='/_session',
                reason='CouchDB already has server admins and the agent '
                       'has no working credentials for %s; put them in %s'
                       % (system.ADMIN_USER, self.credentials.path))
        self.credentials.save(password)
        anonymous.config_set('admins', system.ADMIN_USER, password)
        # This server did not read the ini (it would have hashed the
        # password there): no clear password stays in it.
        runtime = self.runtime_ini()
        if ini.get_value(runtime, 'admins', system.ADMIN_USER) == password:
            ini.remove_value(runtime, 'admins', system.ADMIN_USER)

    def _secure_with_ini(self, password, running):
        """CouchDB 3.x (or any stopped CouchDB): an [admins] ini, restart."""
        self.credentials.save(password)
        self._write_admin_ini(password)
        if running:
            self.restart()
        else:
            self.start_db(enable_on_boot=False)

    def ensure_system_databases(self):
        """Create 3.x's system databases if missing; return those made."""
        client = self.client
        if client.api_version != couch.API_V3:
            return []
        created = []
        for db in system.SYSTEM_DBS_3X:
            if client.exists([db]):
                continue
            try:
                client.request('PUT', [db], expected=(201, 202, 412))
            except exception.CouchDBError:
                # With single_node, CouchDB creates them itself once it is
                # up: a PUT meanwhile conflicts (HTTP 500, "conflict").
                if not self._appears(db):
                    raise
                continue
            created.append(db)
        return created

    def _appears(self, db, timeout=10.0):
        """Whether database ``db`` exists within ``timeout`` seconds."""
        for _attempt in couch.polling_loop(timeout, self.poll_interval):
            if self.client.exists([db]):
                return True
        return False

    # -- the OS -----------------------------------------------------------

    def set_data_ownership(self, path=None):
        """chown -R couchdb_user:couchdb_group the data directory."""
        path = path or CONF.couchdb.mount_point
        owner = '%s:%s' % (CONF.couchdb.couchdb_user,
                           CONF.couchdb.couchdb_group)
        process.execute(['chown', '-R', owner, '--', path], run_as_root=True)

    def install_if_needed(self, packages):
        if not packages:
            return []
        from trove.guestagent.common import packages as package_manager
        return package_manager.install_if_needed(list(packages))


def _stat_value(entry, field='current'):
    """A statistic's value: 3.x ``{"value": N}`` (a histogram's ``field``
    inside), 1.x ``{"current": N, "mean": ...}``; None if absent."""
    if not isinstance(entry, dict):
        return None
    value = entry.get('value', entry)
    if isinstance(value, dict):
        value = value.get(field)
    return value if isinstance(value, (int, float)) else None


def _is_server_admin(client):
    """Whether CouchDB gives ``client`` the _admin role.

    Anonymous requests have it only in a 1.x "admin party" (no admin yet).
    """
    try:
        info = client.session_info()
    except exception.CouchDBAuthError:
        return False
    roles = (info or {}).get('userCtx', {}).get('roles') or []
    return '_admin' in roles
