"""CouchDB read replicas with CouchDB's own replication.

The source (Trove's "master") hands its replicas a dedicated ``_users``
account, ``os_replicator`` with the role ``trove_replicator``: never a server
admin.  Every user database of the source carries the design document
``_design/trove_replication``, whose ``validate_doc_update`` refuses writes by
that role, and the role is added to the members of every database that has
members, so the account can read everything and write nothing but the
``_local`` checkpoints replication keeps.  The source publishes the list of
its databases and their ``_security`` in the account's own ``_users``
document (CouchDB 3.x lets only admins list databases), and replicas register
themselves there too, so the source knows when the last one has gone and
rotates the password.

A replica keeps one persistent job per source database, a ``_replicator``
document ``trove-<db>`` (continuous; credentials in the URLs on CouchDB 1.x,
``auth`` objects on 2.x/3.x), and an upkeep pass of the agent follows the
source: it adds jobs for new databases, removes the jobs and the databases
deleted on the source, copies each ``_security``, and checks how far each
database has got.  Progress is measured, not guessed: the source's
``_changes`` since the last verified sequence are checked against the
replica with ``_revs_diff``, so "caught up to sequence N" means every change
up to N is on the replica, whatever the server version.

Read-only is a field of ``_security`` (``trove_read_only``) that the same
design document reads: while it is set, only the agent's own admin (which the
replication jobs write as) may write.  CouchDB has no server-wide switch.
"""

import copy
import json
import threading
import time
from urllib import parse

from oslo_log import log as logging
from oslo_utils import netutils

from trove.common import cfg
from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

STRATEGY = system.REPLICATION_STRATEGY
USER_DOC_ID = system.USER_DOC_PREFIX + system.REPLICATION_USER
# Fields of the replication account's _users document.
PUBLISHED_FIELD = 'trove_source'
REPLICAS_FIELD = 'trove_replicas'
# How many changes one _changes/_revs_diff round checks, and how many
# rounds a check may take per database: the periodic upkeep takes one
# (enough to see progress, and light on both servers while a replica
# catches up), wait_for_txn and get_last_txn take up to CHECK_ROUNDS.
CHECK_BATCH = 1000
CHECK_ROUNDS = 20
# Timeout of the calls a replica makes to a source that may be gone.
BEST_EFFORT_TIMEOUT = 5.0
_WILDCARD_ADDRESSES = ('0.0.0.0', '::', '')
_FAILED_JOB_STATES = ('error', 'crashing', 'failed')
# What a replica copies of the source's users: who they are, their roles
# and their password hash (never a clear password).
USER_FIELDS = ('name', 'type', 'roles') + service.HASH_FIELDS

GUARD_FUNCTION = """function (newDoc, oldDoc, userCtx, secObj) {
  var roles = userCtx.roles || [];
  var admin = roles.indexOf('_admin') !== -1;
  if (!admin && roles.indexOf('%(role)s') !== -1) {
    throw({forbidden: 'The replication account of this instance only reads.'});
  }
  var readOnly = secObj && secObj.%(field)s;
  if (readOnly && !(admin && userCtx.name === readOnly.writer)) {
    throw({forbidden: 'This database is read-only: it is a replica. ' +
                      'Write to the replication source.'});
  }
}""" % {'role': system.REPLICATION_ROLE, 'field': system.READ_ONLY_FIELD}
GUARD_PATH = system.GUARD_DDOC_ID.split('/')
GUARD_DDOC = {'language': 'javascript',
              'validate_doc_update': GUARD_FUNCTION}


def seq_number(seq):
    """The numeric part of an update sequence (int on 1.x, "N-..." on 3.x)."""
    if isinstance(seq, bool):
        return 0
    if isinstance(seq, int):
        return seq
    if isinstance(seq, str):
        head = seq.split('-', 1)[0]
        return int(head) if head.isdigit() else 0
    if isinstance(seq, list) and seq:
        return seq_number(seq[0])
    return 0


def _url_with_credentials(url, user, password):
    """http://user:password@host/... for CouchDB 1.x replication."""
    parts = parse.urlsplit(url)
    netloc = '%s:%s@%s' % (parse.quote(user, safe=''),
                           parse.quote(password, safe=''), parts.netloc)
    return parse.urlunsplit(parts._replace(netloc=netloc))


def _db_url(base_url, db):
    return '%s/%s' % (base_url.rstrip('/'), couch.quote_segment(db))


def _endpoint(api_version, url, user, password):
    """A replication endpoint in the form the local server understands."""
    if api_version == couch.API_V3:
        return {'url': url, 'auth': {'basic': {'username': user,
                                               'password': password}}}
    return _url_with_credentials(url, user, password)


def _job_id(db):
    return system.REPLICATOR_DOC_PREFIX + db


def _without_read_only(security):
    security = dict(security or {})
    security.pop(system.READ_ONLY_FIELD, None)
    return security


def _update_account_doc(client, change, attempts=5):
    """Read-modify-write the replication account's _users document as
    ``client`` (the source's admin, or the account itself: CouchDB lets a
    user change its own document but not its roles).  Returns the document,
    or None when the account does not exist."""
    for attempt in range(attempts):
        doc = client.get_or_none([system.USERS_DB, USER_DOC_ID])
        if doc is None:
            return None
        before = copy.deepcopy(doc)
        change(doc)
        if doc == before:
            return doc
        try:
            client.request('PUT', [system.USERS_DB, USER_DOC_ID], json=doc)
            return doc
        except exception.CouchDBConflict:
            if attempt == attempts - 1:
                raise
    return None


def _restricted(security):
    members = (security or {}).get('members') or {}
    return bool(members.get('names') or members.get('roles'))


class MasterInfo:
    """What a replica needs to know of its source (the wire ``master``)."""

    KEYS = ('guest_id', 'url', 'user', 'password', 'api_version')

    def __init__(self, guest_id, url, user, password, api_version):
        self.guest_id = guest_id
        self.url = url
        self.user = user
        self.password = password
        self.api_version = api_version

    @classmethod
    def from_replica_info(cls, replica_info):
        """Check a replica_info (or a replication snapshot) and read it."""
        if not isinstance(replica_info, dict):
            raise exception.ReplicationError(
                reason='the replica information is not a dictionary')
        strategy = replica_info.get('replication_strategy')
        if strategy not in (None, STRATEGY):
            raise exception.ReplicationError(
                reason="the source uses the replication strategy '%s'; "
                       "this instance speaks only %s" % (strategy, STRATEGY))
        master = replica_info.get('master')
        if not isinstance(master, dict):
            raise exception.ReplicationError(
                reason="the replica information has no 'master' section")
        return cls.from_dict(master)

    @classmethod
    def from_dict(cls, data):
        missing = [k for k in cls.KEYS if not isinstance(data.get(k), str)
                   or not data.get(k)]
        if missing:
            raise exception.ReplicationError(
                reason='the source description lacks %s'
                       % ', '.join(missing))
        url = data['url'].rstrip('/')
        parts = parse.urlsplit(url)
        if (parts.scheme not in ('http', 'https') or not parts.hostname
                or parts.username is not None or parts.query):
            raise exception.ReplicationError(
                reason='the source URL must be http(s)://host:port without '
                       'credentials')
        if data['api_version'] not in (couch.API_V1, couch.API_V3):
            raise exception.ReplicationError(
                reason="unknown source API version '%s'"
                       % data['api_version'])
        return cls(data['guest_id'], url, data['user'], data['password'],
                   data['api_version'])

    def to_dict(self):
        return {k: getattr(self, k) for k in self.KEYS}

    def client(self, timeout=None):
        return couch.CouchDBClient(self.url, self.user, self.password,
                                   timeout=timeout,
                                   api_version=self.api_version)


class ReplicationState(service.StateFile):
    """The agent's replication state.

    ``source_password``: the replication account's password while this
    instance is a source; ``master``: the source of this replica;
    ``read_only``: whether this instance refuses writes; ``progress``: the
    verified sequence of each replicated database.
    """

    file_name = system.REPLICATION_STATE_FILE

    @property
    def master(self):
        data = self.read().get('master')
        return MasterInfo.from_dict(data) if data else None

    @property
    def source_password(self):
        return self.read().get('source_password')

    @property
    def read_only(self):
        return bool(self.read().get('read_only'))


class DatabaseProgress:
    """How far one replicated database has got, seen from the replica."""

    def __init__(self, verified_seq=0):
        self.verified_seq = verified_seq   # every source change up to here
        self.source_seq = 0                # the source's update_seq seen last
        self.last_progress = time.monotonic()

    @property
    def verified(self):
        return seq_number(self.verified_seq)

    @property
    def behind(self):
        return max(0, seq_number(self.source_seq) - self.verified)

    def to_dict(self):
        return {'source_seq': self.source_seq,
                'replicated_seq': self.verified_seq,
                'behind': self.behind}


class CouchDBReplication:
    """Source and replica sides of CouchDB replication for one instance."""

    def __init__(self, app, state=None):
        self.app = app
        self.state = state or ReplicationState()
        self._lock = threading.RLock()
        self._progress = {}
        self._problems = {}
        self._reported = {}

    @property
    def client(self):
        return self.app.client

    # -- what Trove asks ---------------------------------------------------

    def backup_required_for_replication(self):
        """No: a new replica pulls every document itself."""
        return False

    def snapshot_for_replication(self, snapshot_info):
        """Trove's snapshot: the source's replica context, no backup."""
        return {'dataset': {'snapshot_id': None},
                'replication_strategy': STRATEGY,
                'master': self.get_replica_context()['master'],
                'replica_conf': None}

    def get_replica_context(self):
        """Make this instance a source and say how to replicate from it."""
        with self._lock:
            password = self._ensure_source()
            self._source_upkeep()
            master = MasterInfo(CONF.guest_id, self._public_url(),
                                system.REPLICATION_USER, password,
                                self.client.api_version)
            return {'replication_strategy': STRATEGY,
                    'master': dict(master.to_dict(),
                                   databases=self.latest_txn())}

    def enable_as_master(self):
        with self._lock:
            if self.state.master is not None:
                raise exception.ReplicationError(
                    reason='this instance still replicates from %s: detach '
                           'it first' % self.state.master.guest_id)
            self._ensure_source()
            self._source_upkeep()
            LOG.info("This instance is a replication source")

    def demote_master(self):
        """Stop being a source: the replication account goes."""
        with self._lock:
            doc = self.client.get_or_none([system.USERS_DB, USER_DOC_ID])
            if doc is not None:
                self.client.request('DELETE', [system.USERS_DB, USER_DOC_ID],
                                    params={'rev': doc['_rev']})
            self.state.update(source_password=None)
            LOG.info("This instance is no longer a replication source; its "
                     "replication account %s is deleted",
                     system.REPLICATION_USER)

    def cleanup_source_on_replica_detach(self, replica_info):
        """A replica has gone: forget it, and after the last one rotate
        the password."""
        replica_id = (replica_info or {}).get('replica_id')
        with self._lock:
            if self.state.source_password is None:
                LOG.info("Replica %s detached from an instance that is no "
                         "longer a source", replica_id)
                return
            doc = self._update_account(
                lambda d: (d.get(REPLICAS_FIELD) or {}).pop(replica_id, None))
            left = sorted((doc or {}).get(REPLICAS_FIELD) or {})
            LOG.info("Replica %s detached; %d replica(s) left", replica_id,
                     len(left))
            if not left:
                self._rotate_password()

    def attach(self, replica_info):
        """Replicate every database of the source in ``replica_info``."""
        master = MasterInfo.from_replica_info(replica_info)
        with self._lock:
            if master.guest_id == CONF.guest_id:
                raise exception.ReplicationError(
                    reason='an instance cannot replicate from itself')
            current = self.state.master
            if current is not None and current.guest_id != master.guest_id:
                raise exception.ReplicationError(
                    reason='this instance already replicates from %s: '
                           'detach it first' % current.guest_id)
            source = master.client()
            try:
                self._check_source(source, master)
                self._register(source)
            finally:
                source.close()
            before = self.state.read()
            self.state.update(master=master.to_dict(), read_only=True)
            try:
                self._lock_replicator_db()
                self._set_read_only(True)
                self._replica_pass(master)
            except Exception:
                LOG.exception("Attaching to %s failed; undoing it",
                              master.guest_id)
                self._undo_attach(before)
                if current is None:
                    self._unregister(master)
                raise
            LOG.info("This instance replicates from %s at %s",
                     master.guest_id, master.url)

    def detach(self, for_failover=False):
        """Stop replicating; the replicated databases and documents stay."""
        with self._lock:
            master = self.state.master
            self._remove_jobs()
            self.state.update(master=None, progress=None)
            self._progress.clear()
            self._problems.clear()
            if master is not None:
                self._unregister(master)
            if not for_failover:
                self._set_read_only(False)
            LOG.info("Detached from replication source %s%s",
                     master.guest_id if master else '(none)',
                     ' for a failover' if for_failover else '')
            return {'replication_strategy': STRATEGY,
                    'replica_id': CONF.guest_id,
                    'master_id': master.guest_id if master else None}

    def make_read_only(self, read_only):
        with self._lock:
            self._set_read_only(bool(read_only))

    def latest_txn(self):
        """{database: update_seq} of every user database here."""
        return {db: self.client.request('GET', [db]).get('update_seq', 0)
                for db in self._user_databases()}

    def applied_txn(self):
        """Trove's get_latest_txn_id: on a source, {database: update_seq};
        on a replica, {database: the source's sequence verified here}."""
        with self._lock:
            master = self.state.master
            if master is None:
                return self.latest_txn()
            return self._verified(master)

    def last_txn(self):
        """[source guest id, changes replicated]: Trove's eject ranking."""
        with self._lock:
            master = self.state.master
            if master is None:
                return [None, 0]
            verified = self._verified(master)
            return [master.guest_id,
                    sum(seq_number(s) for s in verified.values())]

    def txn_count(self):
        return sum(seq_number(s) for s in self.applied_txn().values())

    def _verified(self, master):
        """{database: verified sequence}, checked against the source now
        or, when it cannot be reached, as recorded last."""
        try:
            self._replica_pass(master)
        except exception.TroveError as exc:
            # Eject asks this when the source is gone: answer with the
            # progress verified last.
            LOG.warning("Cannot check the progress against the source "
                        "(%s); reporting the progress recorded last", exc)
        return dict(self.state.read().get('progress') or {})

    def wait_for_txn(self, txn, timeout=None):
        """Return once every database has caught up to ``txn``."""
        if not isinstance(txn, dict):
            raise exception.ReplicationError(
                reason='a transaction point is a {database: sequence} '
                       'dictionary, not %s' % type(txn).__name__)
        timeout = timeout or CONF.couchdb.replication_wait_timeout
        behind = {}
        for _attempt in couch.polling_loop(timeout, 0.5):
            with self._lock:
                master = self.state.master
                if master is None:
                    raise exception.ReplicationError(
                        reason='this instance is not a replica')
                self._replica_pass(master)
                behind = {db: seq for db, seq in txn.items()
                          if db in self._progress
                          and self._progress[db].verified < seq_number(seq)}
                behind.update({db: seq for db, seq in txn.items()
                               if db not in self._progress})
            if not behind:
                return
        raise exception.ReplicationError(
            reason='the replica did not catch up within %s seconds; behind '
                   'in %s' % (timeout, ', '.join(sorted(behind))))

    def status(self):
        """Per database: the source's sequence and how far this replica is."""
        with self._lock:
            return {db: p.to_dict() for db, p in self._progress.items()}

    def problems(self):
        """{database or 'source': reason} of what keeps replication back."""
        with self._lock:
            return dict(self._problems)

    def periodic(self):
        """The upkeep pass the agent runs every replication_sync_interval."""
        with self._lock:
            state = self.state.read()
            if not state.get('master') and not state.get('source_password'):
                # Neither a source nor a replica (any more).
                self._problems.clear()
                self._report_problems()
                return
            if self.client.health() is not couch.Health.UP:
                return      # the heartbeat reports a stopped CouchDB
            try:
                master = self.state.master
                if master is not None:
                    self._replica_pass(master, rounds=1)
                if self.state.source_password is not None:
                    self._source_upkeep()
            except exception.TroveError as exc:
                self._note_problem('source', str(exc))
            self._report_problems()

    # -- source side ---------------------------------------------------------

    def _ensure_source(self):
        """The replication account exists and its password is known."""
        password = self.state.source_password
        doc = self.client.get_or_none([system.USERS_DB, USER_DOC_ID])
        if doc is not None and password is not None:
            return password
        password = service.generate_password()
        new = {'_id': USER_DOC_ID, 'name': system.REPLICATION_USER,
               'type': 'user', 'roles': [system.REPLICATION_ROLE],
               'password': password}
        if doc is not None:
            new['_rev'] = doc['_rev']
            new[REPLICAS_FIELD] = doc.get(REPLICAS_FIELD) or {}
        self.state.update(source_password=password)
        self.client.request('PUT', [system.USERS_DB, USER_DOC_ID], json=new)
        LOG.info("Created the replication account %s",
                 system.REPLICATION_USER)
        return password

    def _rotate_password(self):
        password = service.generate_password()

        def change(doc):
            for field in service.HASH_FIELDS:
                doc.pop(field, None)
            doc['password'] = password
            doc[REPLICAS_FIELD] = {}

        self._update_account(change)
        self.state.update(source_password=password)
        LOG.info("The last replica detached: rotated the password of the "
                 "replication account %s", system.REPLICATION_USER)

    def _update_account(self, change):
        """Read-modify-write the replication account's _users document."""
        return _update_account_doc(self.client, change)

    def _source_upkeep(self):
        """Guard every database, let the account read it, publish the list."""
        published = {}
        for db in self._user_databases():
            try:
                published[db] = self._guard_source_database(db)
            except exception.CouchDBError as exc:
                if exc.status != 404:
                    raise
                LOG.debug("Database %s was deleted during the upkeep", db)

        users = self._users_to_publish()

        def publish(doc):
            doc[PUBLISHED_FIELD] = {'databases': published, 'users': users}

        self._update_account(publish)

    def _guard_source_database(self, db):
        """Guard ``db``, let the account read it; return its _security."""
        self._ensure_guard(db)
        security = self._security(db)
        if (_restricted(security) and system.REPLICATION_ROLE
                not in security['members'].get('roles', [])):
            security['members'].setdefault('roles', []).append(
                system.REPLICATION_ROLE)
            self.client.request('PUT', [db, '_security'], json=security)
            LOG.info("Database %s: its members now include the "
                     "replication role", db)
        return _without_read_only(security)

    def _docs_by_prefix(self, db, prefix):
        """{id without prefix: document} of the documents of ``db`` whose
        id starts with ``prefix``."""
        rows = self.client.all_docs(db, startkey=prefix,
                                    endkey=prefix + '\ufff0',
                                    include_docs=True)['rows']
        return {row['id'][len(prefix):]: row['doc'] for row in rows
                if row.get('doc')}

    def _user_docs(self):
        """{name: _users document} of this server's users (not the agent's)."""
        docs = self._docs_by_prefix(system.USERS_DB, system.USER_DOC_PREFIX)
        docs.pop(system.REPLICATION_USER, None)
        return docs

    def _users_to_publish(self):
        """The users with their password hashes: replicas log them in too."""
        return {name: {k: doc[k] for k in USER_FIELDS if k in doc}
                for name, doc in self._user_docs().items()}

    def _public_url(self):
        host = CONF.couchdb.replication_host
        if not host:
            host = CONF.couchdb.bind_address
            if host in _WILDCARD_ADDRESSES:
                host = netutils.get_my_ipv4()
        if ':' in host and not host.startswith('['):
            host = '[%s]' % host
        return 'http://%s:%d' % (host, CONF.couchdb.port)

    # -- replica side --------------------------------------------------------

    def _check_source(self, source, master):
        """The source answers and accepts the account: else nothing changes."""
        try:
            info = source.session_info()
        except exception.CouchDBUnavailable as exc:
            raise exception.ReplicationError(
                reason='the source %s cannot be reached: %s'
                       % (master.url, exc.reason)) from exc
        except exception.CouchDBAuthError as exc:
            raise exception.ReplicationError(
                reason='the source %s refuses the replication credentials'
                       % master.url) from exc
        user_ctx = (info or {}).get('userCtx') or {}
        if user_ctx.get('name') != master.user:
            raise exception.ReplicationError(
                reason='the source %s refuses the replication credentials'
                       % master.url)
        self._published(source)

    def _published(self, source):
        """What the source publishes: {'databases': {db: _security},
        'users': {name: user fields}}."""
        doc = source.get_or_none([system.USERS_DB, USER_DOC_ID])
        published = (doc or {}).get(PUBLISHED_FIELD)
        if not isinstance(published, dict) or not isinstance(
                published.get('databases'), dict):
            raise exception.ReplicationError(
                reason='the source has not published its databases: is it '
                       'a replication source?')
        published.setdefault('users', {})
        return published

    def _register(self, source):
        """Tell the source this replica follows it (its own account doc)."""
        def add(doc):
            doc.setdefault(REPLICAS_FIELD, {})[CONF.guest_id] = {
                'since': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
        _update_account_doc(source, add)

    def _unregister(self, master):
        source = master.client(timeout=BEST_EFFORT_TIMEOUT)
        try:
            _update_account_doc(
                source,
                lambda d: (d.get(REPLICAS_FIELD) or {}).pop(CONF.guest_id,
                                                           None))
        except exception.TroveError as exc:
            LOG.warning("Could not tell the source %s that this replica "
                        "left (%s); Trove's cleanup on the source does it",
                        master.guest_id, exc)
        finally:
            source.close()

    def _undo_attach(self, before):
        # The state first, and each step on its own: a step that fails
        # must not leave this instance believing it is a replica.
        steps = (lambda: self.state.update(
                     master=before.get('master'),
                     read_only=before.get('read_only', False)),
                 self._remove_jobs,
                 lambda: self._set_read_only(bool(before.get('read_only'))))
        for step in steps:
            try:
                step()
            except Exception:
                LOG.exception("Could not undo the failed attach completely")

    def _lock_replicator_db(self):
        """Only admins may read _replicator: its documents hold passwords."""
        security = self._security(system.REPLICATOR_DB)
        members = security.setdefault('members', {})
        names = members.setdefault('names', [])
        if system.ADMIN_USER not in names:
            names.append(system.ADMIN_USER)
            members.setdefault('roles', [])
            security.setdefault('admins', {'names': [], 'roles': []})
            self.client.request('PUT', [system.REPLICATOR_DB, '_security'],
                                json=security)

    def _replica_pass(self, master, rounds=CHECK_ROUNDS):
        """Follow the source: jobs, databases, _security, progress."""
        source = master.client()
        try:
            try:
                published = self._published(source)
            except exception.CouchDBError as exc:
                raise exception.ReplicationError(
                    reason='cannot read the source %s: %s'
                           % (master.url, exc)) from exc
            self._problems.pop('source', None)
            databases = published['databases']
            self._follow_users(published['users'], master)
            jobs = self._jobs()
            read_only = self.state.read_only
            for db, security in sorted(databases.items()):
                self._follow(db, security, master, jobs.get(db), read_only)
                try:
                    self._check_progress(source, db, rounds)
                except exception.CouchDBError as exc:
                    if exc.status != 404:
                        raise
                    # Deleted on the source since it published its list:
                    # the next pass drops it here.
                    LOG.debug("Database %s is gone from the source", db)
            for db in sorted(set(jobs) - set(databases)):
                self._drop(db, jobs[db])
            self._check_jobs(databases, jobs)
            self._save_progress()
        finally:
            source.close()

    def _follow(self, db, security, master, job, read_only):
        if not self.client.exists([db]):
            self.client.request('PUT', [db], expected=(201, 202, 412))
            LOG.info("Database %s: created to replicate it from %s", db,
                     master.guest_id)
        self._ensure_guard(db)
        wanted = _without_read_only(security)
        if read_only:
            wanted[system.READ_ONLY_FIELD] = {'writer': system.ADMIN_USER}
        if self._security(db) != wanted:
            self.client.request('PUT', [db, '_security'], json=wanted)
        body = self._job_body(db, master)
        if job is not None and all(job.get(k) == v for k, v in body.items()):
            return
        if job is not None:
            # A triggered job is replaced, not edited: CouchDB 1.6 refuses
            # most changes to a running replication document.
            self.client.request('DELETE', [system.REPLICATOR_DB, _job_id(db)],
                                params={'rev': job['_rev']},
                                expected=(200, 404))
        self.client.request('PUT', [system.REPLICATOR_DB, _job_id(db)],
                            json=body)
        LOG.info("Database %s: replication job %s from %s", db,
                 'restarted' if job else 'started', master.guest_id)

    def _follow_users(self, users, master):
        """Make this server's users those of the source (hashes included)."""
        local = self._user_docs()
        for name, fields in sorted(users.items()):
            wanted = dict(fields, _id=system.USER_DOC_PREFIX + name,
                          trove_source=master.guest_id)
            current = local.get(name)
            if current is not None:
                if all(current.get(k) == v for k, v in wanted.items()):
                    continue
                wanted['_rev'] = current['_rev']
            self.client.request('PUT', [system.USERS_DB, wanted['_id']],
                                json=wanted)
            LOG.info("User %s: copied from the source", name)
        for name, doc in sorted(local.items()):
            if name not in users and doc.get('trove_source'):
                self.client.request('DELETE', [system.USERS_DB, doc['_id']],
                                    params={'rev': doc['_rev']},
                                    expected=(200, 404))
                LOG.info("User %s: deleted on the source, deleted here",
                         name)

    def _job_body(self, db, master):
        api = self.client.api_version
        admin_user, admin_password = self.app.credentials.load()
        return {
            'source': _endpoint(api, _db_url(master.url, db), master.user,
                                master.password),
            'target': _endpoint(api, _db_url(self.app.base_url(), db),
                                admin_user, admin_password),
            'continuous': True,
            'trove_source': master.guest_id,
        }

    def _jobs(self):
        """{database: _replicator document} of this agent's jobs."""
        return self._docs_by_prefix(system.REPLICATOR_DB,
                                    system.REPLICATOR_DOC_PREFIX)

    def _drop(self, db, job):
        """The source deleted ``db``: stop its job and delete it here too."""
        self.client.request('DELETE', [system.REPLICATOR_DB, _job_id(db)],
                            params={'rev': job['_rev']}, expected=(200, 404))
        if self.client.exists([db]):
            self.client.request('DELETE', [db], expected=(200, 404))
        self._progress.pop(db, None)
        self._problems.pop(db, None)
        LOG.info("Database %s: deleted on the source, deleted here", db)

    def _remove_jobs(self):
        for db, job in self._jobs().items():
            self.client.request('DELETE', [system.REPLICATOR_DB, _job_id(db)],
                                params={'rev': job['_rev']},
                                expected=(200, 404))
            LOG.info("Database %s: replication job stopped", db)

    def _save_progress(self):
        """Keep the verified sequences: eject ranks replicas by them."""
        verified = {db: p.verified_seq for db, p in self._progress.items()}
        if verified != self.state.read().get('progress'):
            self.state.update(progress=verified)

    def _check_progress(self, source, db, rounds=CHECK_ROUNDS):
        """Advance ``db``'s verified sequence as far as the replica has it."""
        progress = self._progress.get(db)
        if progress is None:
            saved = self.state.read().get('progress') or {}
            progress = self._progress[db] = DatabaseProgress(saved.get(db, 0))
        source_seq = source.request('GET', [db]).get('update_seq', 0)
        progress.source_seq = source_seq
        before = progress.verified
        caught_up = False
        for _round in range(rounds):
            changes = source.request('GET', [db, '_changes'], params={
                'since': json.dumps(progress.verified_seq)
                if not isinstance(progress.verified_seq, str)
                else progress.verified_seq,
                'limit': str(CHECK_BATCH)})
            results = changes.get('results') or []
            if not results:
                progress.verified_seq = changes.get('last_seq',
                                                    progress.verified_seq)
                caught_up = True
                break
            revs = {}
            for row in results:
                revs.setdefault(row['id'], []).extend(
                    c['rev'] for c in row.get('changes', []))
            missing = self.client.request('POST', [db, '_revs_diff'],
                                          json=revs) or {}
            complete = True
            for row in results:
                if row['id'] in missing:
                    complete = False
                    break
                progress.verified_seq = row['seq']
            if not complete:
                break
            if len(results) < CHECK_BATCH:
                caught_up = True
                break
        if caught_up and seq_number(source_seq) > progress.verified:
            # update_seq also counts changes that have no row in _changes
            # (a _security change, on 1.x and 3.x alike).  The feed, read
            # after update_seq, is all on the replica: so is every change
            # up to update_seq.
            progress.verified_seq = source_seq
        if progress.verified > before or not progress.behind:
            progress.last_progress = time.monotonic()
            self._problems.pop(db, None)
        elif (time.monotonic() - progress.last_progress
              > CONF.couchdb.replication_stall_timeout):
            self._note_problem(db, 'no progress for %d seconds, %d changes '
                                   'behind the source'
                               % (CONF.couchdb.replication_stall_timeout,
                                  progress.behind))

    def _check_jobs(self, published, jobs):
        """Record jobs CouchDB itself says are failing."""
        if self.client.api_version == couch.API_V3:
            states = self._scheduler_states()
        else:
            states = {db: (job.get('_replication_state'),
                           job.get('_replication_state_reason'))
                      for db, job in jobs.items()}
        for db in published:
            state, reason = states.get(db, (None, None))
            if state in _FAILED_JOB_STATES:
                self._note_problem(db, 'replication job %s: %s'
                                   % (state, reason or 'no reason given'))

    def _scheduler_states(self):
        """{database: (state, reason)} from CouchDB 3.x's /_scheduler/docs."""
        body = self.client.request('GET', ['_scheduler', 'docs',
                                           system.REPLICATOR_DB])
        prefix = system.REPLICATOR_DOC_PREFIX
        states = {}
        for doc in (body or {}).get('docs', []):
            doc_id = doc.get('doc_id') or ''
            if not doc_id.startswith(prefix):
                continue
            info = doc.get('info') or {}
            reason = info.get('error') if isinstance(info, dict) else None
            states[doc_id[len(prefix):]] = (doc.get('state'),
                                            reason or doc.get('last_error'))
        return states

    def _note_problem(self, key, reason):
        self._problems[key] = reason

    def _report_problems(self):
        for key, reason in self._problems.items():
            if self._reported.get(key) != reason:
                LOG.warning("Replication problem in %s: %s", key, reason)
        for key in set(self._reported) - set(self._problems):
            LOG.info("Replication of %s is healthy again", key)
        self._reported = dict(self._problems)

    # -- both ------------------------------------------------------------

    def _user_databases(self):
        hidden = set(CONF.couchdb.ignore_dbs)
        return [db for db in self.client.all_dbs()
                if db not in hidden and not db.startswith('_')]

    def _security(self, db):
        return self.client.request('GET', [db, '_security']) or {}

    def _ensure_guard(self, db):
        doc = self.client.get_or_none([db] + GUARD_PATH)
        if doc is not None and all(doc.get(k) == v
                                   for k, v in GUARD_DDOC.items()):
            return
        body = dict(GUARD_DDOC, _id=system.GUARD_DDOC_ID)
        if doc is not None:
            body['_rev'] = doc['_rev']
        try:
            self.client.request('PUT', [db] + GUARD_PATH, json=body)
        except exception.CouchDBConflict:
            LOG.debug("Database %s: the guard arrived meanwhile", db)

    def _set_read_only(self, read_only):
        self.state.update(read_only=read_only)
        for db in self._user_databases():
            self._ensure_guard(db)
            security = self._security(db)
            wanted = _without_read_only(security)
            if read_only:
                wanted[system.READ_ONLY_FIELD] = {'writer': system.ADMIN_USER}
            if wanted != security:
                self.client.request('PUT', [db, '_security'], json=wanted)
        LOG.info("This instance is %s", 'read-only' if read_only
                 else 'writable')
