"""One simulated Trove guest: the real agent process and its CouchDB server.

The agent is started exactly as on a guest VM, ``trove-guestagent
--config-dir <conf.d>``, with the two files Trove's taskmanager injects there
(``guest_info.conf`` and the operator's ``trove-guestagent.conf``).  It
manages its server (a real CouchDB 3.x node, or a pouchdb-server for the
1.6 API: see integration/services/servers.py) through ``[couchdb]
service_manager = command``, whose start command returns as soon as the
server is spawned, as ``systemctl start couchdb`` does on a guest, unless
``start_waits`` is set.
"""

import configparser
import json
import pathlib
import secrets
import shutil
import sys
import uuid

import requests

from integration.services import base
from trove.common import context as trove_context
from trove.guestagent import api as guest_api

MANAGER = 'trove.guestagent.datastore.experimental.couchdb.manager.Manager'


def agent_program():
    script = pathlib.Path(sys.executable).parent / 'trove-guestagent'
    if not script.exists():
        raise base.ServiceNotInstalled(
            'trove-guestagent', "%s not found: run tools/bootstrap "
            "(pip install -e .)" % script)
    return str(script)


class GuestAgent(base.ServiceProcess):
    """The agent process, configured like Trove configures a guest."""

    name = 'guestagent'
    start_timeout = 60.0
    stop_timeout = 20.0

    def __init__(self, workdir, transport_url, couchdb, guest_id=None,
                 key=None, report_interval=1, options=None,
                 start_waits=False):
        super().__init__(workdir)
        self.guest_id = guest_id or str(uuid.uuid4())
        self.key = key if key is not None else secrets.token_hex(16)
        self.couchdb = couchdb
        self.conf_dir = self.workdir / 'conf.d'
        self.state_dir = self.workdir / 'state'
        self.agent_log = self.workdir / 'trove-guestagent.log'
        # CouchDB's configuration directory ([couchdb] config_dir): the
        # server's own, or one of the agent's for a server that reads none.
        self.couchdb_config_dir = (couchdb.config_dir
                                   or self.workdir / 'couchdb-etc')
        self.start_waits = start_waits
        self.transport_url = transport_url
        self.report_interval = report_interval
        self.options = options or {}
        self._log_offset = 0

    def guest_info(self):
        """What Trove 26's taskmanager writes into guest_info.conf."""
        return {'DEFAULT': {
            'guest_id': self.guest_id, 'datastore_manager': 'couchdb',
            'datastore_version': self.couchdb.datastore_version,
            'tenant_id': 'tenant-1',
            'datastore_registry_ext': 'couchdb:%s' % MANAGER,
            'replication_strategy': 'CouchDBReplication',
            'ssl_mode': 'None', 'network_isolation': 'True',
            'instance_rpc_encr_key': self.key}}

    def guest_conf(self):
        """The operator's trove-guestagent.conf for this guest."""
        pid_file = self.workdir / 'couchdb.pid'
        log = self.workdir / 'couchdb.log'
        conf = {
            'DEFAULT': {
                'transport_url': self.transport_url,
                'control_exchange': 'trove',
                'report_interval': str(self.report_interval),
                'guest_state_dir': str(self.state_dir),
                'log_file': str(self.agent_log), 'debug': 'True',
                'state_change_wait_time': '60'},
            'couchdb': {
                'service_manager': 'command',
                'start_command': self.couchdb.start_command(
                    pid_file, log, wait=self.start_waits),
                'stop_command': self.couchdb.stop_command(pid_file),
                'host': '127.0.0.1', 'port': str(self.couchdb.port),
                'bind_address': '127.0.0.1',
                'mount_point': str(self.couchdb.data_dir),
                'config_dir': str(self.couchdb_config_dir),
                'server_log_file': str(self.server_log),
                'couchdb_user': 'root', 'couchdb_group': 'root'},
        }
        for section, values in self.options.items():
            conf.setdefault(section, {}).update(values)
        return conf

    @property
    def server_log(self):
        """The server's log ([couchdb] server_log_file): the file its
        [log] section names, or its output (pouchdb-server)."""
        return self.couchdb.server_log or self.workdir / 'couchdb.log'

    def write_config(self):
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for name, values in (('guest_info.conf', self.guest_info()),
                             ('trove-guestagent.conf', self.guest_conf())):
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_dict(values)
            path = self.conf_dir / name
            with open(path, 'w') as f:
                parser.write(f)
            path.chmod(0o600)

    def command(self):
        return [agent_program(), '--config-dir', str(self.conf_dir)]

    def start(self):
        self.write_config()
        self._log_offset = self._log_size()
        return super().start()

    def _log_size(self):
        try:
            return self.agent_log.stat().st_size
        except OSError:
            return 0

    def is_ready(self):
        """This run of the agent logged that it serves its topic."""
        try:
            with open(self.agent_log, 'rb') as log:
                log.seek(self._log_offset)
                return b'Serving topic' in log.read()
        except OSError:
            return False

    def log_text(self):
        try:
            return self.agent_log.read_text(errors='replace')
        except OSError:
            return ''


class Guest:
    """An agent, its CouchDB server and Trove's client for it."""

    def __init__(self, agent, conductor, auth_token='user-token',
                 project_id='tenant-1'):
        self.agent = agent
        self.couchdb = agent.couchdb
        self.conductor = conductor
        self.id = agent.guest_id
        self.auth_token = auth_token
        self.project_id = project_id
        conductor.keys[self.id] = agent.key
        self.api = guest_api.API(self.context(), self.id, key=agent.key)

    def context(self, notification=None):
        """A request context of the instance's owner, as Trove sends it."""
        ctxt = trove_context.TroveContext(
            auth_token=self.auth_token, project_id=self.project_id,
            request_id='req-%s' % uuid.uuid4())
        ctxt.notification = notification
        return ctxt

    def prepare(self, databases=(), users=(), root_password=None,
                device_path=None, mount_point=None, **kwargs):
        self.api.prepare(
            memory_mb=512, packages=[], databases=list(databases),
            users=list(users), device_path=device_path,
            mount_point=mount_point or str(self.couchdb.data_dir),
            root_password=root_password,
            ds_version=self.couchdb.datastore_version, **kwargs)

    def prepare_and_wait(self, timeout=120, **kwargs):
        self.prepare(**kwargs)
        return self.conductor.wait_for(
            'heartbeat', self.id,
            lambda m: m.kwargs['payload']['service_status'] in (
                'running', 'failed to spawn'), timeout=timeout)

    def session(self, username, password):
        """A plain HTTP session on the guest's CouchDB as a tenant user."""
        session = requests.Session()
        session.auth = (username, password)
        return session

    def admin_credentials(self):
        """(user, password) of the agent's internal admin, from its state."""
        creds = json.loads((self.agent.state_dir /
                            'couchdb-os_admin.json').read_text())
        return creds['user'], creds['password']

    def admin_session(self):
        """An HTTP session on the guest's CouchDB as the agent's admin."""
        return self.session(*self.admin_credentials())

    def url(self, *segments):
        return '/'.join([self.couchdb.url] + list(segments))

    def config_url(self, *segments):
        """The server's configuration API: /_config on 1.x, else the node's."""
        prefix = (['_config'] if self.couchdb.api_version == '1'
                  else ['_node', '_local', '_config'])
        return self.url(*prefix, *segments)

    # Nova's and Cinder's parts when Trove deletes the instance.
    def destroy_server(self):
        """The server is destroyed: a power-off, the agent gets no say."""
        self.agent.kill()
        self.couchdb.stop()

    def delete_volume(self):
        """The data volume is deleted."""
        shutil.rmtree(self.couchdb.data_dir, ignore_errors=True)
