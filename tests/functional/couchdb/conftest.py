"""The CouchDB control layer on real servers: fixtures.

Every test that asks for ``agent`` or ``fresh`` runs once per server of
``integration/services/servers.py``, the server's id in the test id:
``couchdb3``, the real Apache CouchDB 3.5 guests run, and ``pouchdb``,
pouchdb-server for the CouchDB 1.6 API.  ``@pytest.mark.servers('couchdb3')``
marks a test only one of them can show.

The control layer is configured as on a guest: its own state directory,
CouchDB's configuration directory and data directory, ``api_version``
left at ``auto``, and ``service_manager = command`` whose start and stop
commands run ``integration/bin/couchdb-ctl`` on the real server (the start
returns once the server is spawned, as ``systemctl start`` does).

``agent`` is one prepared server of each kind for the session (started and
secured by the agent, its system databases created); after each test the
databases, users, admins and ``local.d`` files the test added are removed,
and a server the test left stopped is started again.  ``fresh`` is a
server of its own, not started: for the tests that secure, stop, crash or
misconfigure it.  A server that is not installed fails the test.
"""

import contextlib
import grp
import os
import pathlib
import pwd
import signal

import pytest

from integration.services import base
from integration.services import servers
from trove.common import cfg
from trove.guestagent.common import service_manager
from trove.guestagent.datastore.experimental.couchdb import (
    admin as couch_admin)
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system

CONF = cfg.CONF
WAIT = int(base.scaled(60))


class BootRecordingManager(service_manager.CommandServiceManager):
    """The agent's ``command`` service manager, which also keeps the boot
    setting the agent asked for (what ``systemctl is-enabled`` would
    say; the command manager leaves boot to the operator)."""

    def __init__(self):
        super().__init__('couchdb')
        self.enabled = None

    def enable_on_boot(self):
        super().enable_on_boot()
        self.enabled = True

    def disable_on_boot(self):
        super().disable_on_boot()
        self.enabled = False


class Agent:
    """The control layer of one guest, on a real server of ``kind``."""

    def __init__(self, kind, workdir):
        self.kind = kind
        self.workdir = pathlib.Path(workdir)
        self.server = servers.make_server(kind, self.workdir / 'couchdb')
        self.config_dir = self.server.config_dir or self.workdir / 'etc'
        self.pid_file = self.workdir / 'couchdb.pid'
        self.out_log = self.workdir / 'couchdb.out'
        self.manager = BootRecordingManager()
        self.app = service.CouchDBApp(service_manager=self.manager)
        self.app.poll_interval = 0.1
        self.admin = couch_admin.CouchDBAdmin(self.app)
        self._baseline = None
        self._set = set()
        self.options = {
            None: {'guest_state_dir': str(self.workdir / 'state'),
                   'guest_id': 'guest-' + kind,
                   'state_change_wait_time': WAIT},
            'couchdb': {
                'host': '127.0.0.1', 'port': self.server.port,
                'config_dir': str(self.config_dir),
                'mount_point': str(self.server.data_dir),
                'service_manager': 'command',
                'start_command': self.server.start_command(
                    self.pid_file, log=self.out_log, wait=False),
                'stop_command': self.server.stop_command(self.pid_file),
                'http_timeout': 15.0,
                'couchdb_user': pwd.getpwuid(os.getuid()).pw_name,
                'couchdb_group': grp.getgrgid(os.getgid()).gr_name,
            },
        }

    @property
    def url(self):
        return self.server.url

    @property
    def api_version(self):
        return self.server.api_version

    @contextlib.contextmanager
    def configured(self):
        """CONF as on this guest while in the block; every option this
        block or :meth:`set` overrode is cleared at its end."""
        self._set = set()
        for group, values in self.options.items():
            self.set(group, **values)
        try:
            yield self
        finally:
            for group, name in self._set:
                CONF.clear_override(name, group=group)

    def set(self, group=None, **values):
        """Override options of ``group`` until the end of the test."""
        for name, value in values.items():
            CONF.set_override(name, value, group=group)
            self._set.add((group, name))

    def boot(self):
        """What prepare does to the server: start it, secure it, create
        the system databases; then remember what the server holds."""
        self.app.start_and_secure()
        self.app.ensure_system_databases()
        self._baseline = self._holdings()
        return self

    def client_as(self, name, password):
        return couch.CouchDBClient(self.url, name, password, timeout=15)

    def anonymous(self):
        return couch.CouchDBClient(self.url, timeout=15)

    def server_pid(self):
        """The PID of the server the service manager started, or None."""
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def crash(self):
        """SIGKILL the server's process group: nobody asked it to stop."""
        pid = self.server_pid()
        os.killpg(pid, signal.SIGKILL)
        for _ in base.polling_loop(base.scaled(10)):
            if not base.group_exists(pid):
                return
        raise AssertionError('PID %d survived SIGKILL' % pid)

    def server_log(self):
        """Everything the server logged (its log file and its output)."""
        paths = [self.out_log, self.server.data_dir / 'log.txt']
        if self.server.server_log:
            paths.append(self.server.server_log)
        return ''.join(path.read_text(errors='replace') for path in paths
                       if path.exists())

    def local_d(self):
        return pathlib.Path(self.app.local_d())

    # -- after each test on the shared server ----------------------------

    def _holdings(self):
        client = self.app.client
        return {'dbs': set(client.all_dbs()), 'users': set(_user_ids(client)),
                'admins': set(client.config_get('admins') or {}),
                'files': set(os.listdir(self.local_d()))}

    def clean(self):
        """Remove what the last test added; start a server it stopped."""
        if self.app.client.health() is not couch.Health.UP:
            self.app.start_db()
        client = self.app.client
        if self.api_version == '3':
            client.config_delete('couchdb', 'maintenance_mode',
                                 missing_ok=True)
        now = self._holdings()
        for db in sorted(now['dbs'] - self._baseline['dbs']):
            client.request('DELETE', [db])
        for doc_id in sorted(now['users'] - self._baseline['users']):
            doc = client.request('GET', [system.USERS_DB, doc_id])
            client.request('DELETE', [system.USERS_DB, doc_id],
                           params={'rev': doc['_rev']})
        for name in sorted(now['admins'] - self._baseline['admins']):
            client.config_delete('admins', name, missing_ok=True)
        for name in sorted(now['files'] - self._baseline['files']):
            os.unlink(self.local_d() / name)
        self.app.credentials.clear_root_password()


def _user_ids(client):
    rows = client.all_docs(system.USERS_DB)['rows']
    return [row['id'] for row in rows if not row['id'].startswith('_')]


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'servers(*kinds): run the test on these servers of '
        'integration/services/servers.py only (default: all of them)')


def pytest_generate_tests(metafunc):
    """``server_kind`` of every test: the kinds of its ``servers`` mark,
    or every kind.  The parameter is the session-scoped fixture's, so one
    prepared server of each kind serves every module."""
    if 'server_kind' not in metafunc.fixturenames:
        return
    mark = metafunc.definition.get_closest_marker('servers')
    kinds = mark.args if mark else servers.KINDS
    metafunc.parametrize('server_kind', kinds, indirect=True,
                        scope='session')


@pytest.fixture(scope='session')
def server_kind(request):
    """The server of the test: each test runs on both, the real CouchDB
    3.5 first."""
    return request.param


def _stopped(agent):
    try:
        agent.server.stop()
    finally:
        if agent.server_pid() and base.group_exists(agent.server_pid()):
            raise AssertionError('the server of %s is still running'
                                 % agent.workdir)


def _agent_or_fail(kind, workdir):
    try:
        return Agent(kind, workdir)
    except base.ServiceNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope='session')
def shared_agent(server_kind, tmp_path_factory):
    agent = _agent_or_fail(server_kind, tmp_path_factory.mktemp(server_kind))
    try:
        with agent.configured():
            agent.boot()
        yield agent
    finally:
        _stopped(agent)


@pytest.fixture
def agent(shared_agent):
    """The module's prepared server of ``server_kind``, CONF in force."""
    with shared_agent.configured():
        yield shared_agent
        shared_agent.clean()


@pytest.fixture
def fresh(server_kind, tmp_path):
    """A server of ``server_kind`` of the test's own, not started yet."""
    agent = _agent_or_fail(server_kind, tmp_path)
    try:
        with agent.configured():
            yield agent
    finally:
        _stopped(agent)


@pytest.fixture(scope='module')
def module_agents(tmp_path_factory):
    """``module_agents(kind, name)``: another guest, not started, for the
    whole module (configure it with ``with agent.configured():``)."""
    made = []

    def make(kind, name):
        agent = _agent_or_fail(kind, tmp_path_factory.mktemp(name))
        made.append(agent)
        return agent

    try:
        yield make
    finally:
        with contextlib.ExitStack() as stack:
            for agent in made:
                stack.callback(_stopped, agent)
