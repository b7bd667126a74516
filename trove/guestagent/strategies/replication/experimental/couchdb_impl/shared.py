"""What both sides of CouchDB replication use.

The wire description of a source (:class:`MasterInfo`), the agent's
replication state file, update sequences, ``_security`` helpers, the
listing of the tenant's databases and users, and the record of what keeps
replication back (:class:`Problems`).
"""

import copy
from urllib import parse

from oslo_log import log as logging

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import (
    admin as couch_admin)
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import names
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system

LOG = logging.getLogger(__name__)

STRATEGY = system.REPLICATION_STRATEGY
USER_DOC_ID = system.USER_DOC_PREFIX + system.REPLICATION_USER
# What a replica copies of the source's users: who they are, their roles
# and their password hash (never a clear password).
USER_FIELDS = ('name', 'type', 'roles') + service.HASH_FIELDS
# Timeout of the calls a replica makes to a source that may be gone.
BEST_EFFORT_TIMEOUT = 5.0


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


def db_url(base_url, db):
    return '%s/%s' % (base_url.rstrip('/'), couch.quote_segment(db))


# -- _security --------------------------------------------------------------

def security_of(client, db):
    return client.request('GET', [db, '_security']) or {}


def change_security(client, db, change):
    """Read-modify-write ``db``'s _security: ``change(security)`` returns
    the document wanted, written if it differs.  _security has no revision,
    so this holds the lock every change of the agent's holds (the tenant's
    grants too).  Returns (the document now, whether it was written)."""
    with couch_admin.SECURITY_LOCK:
        security = security_of(client, db)
        wanted = change(copy.deepcopy(security))
        if wanted == security:
            return security, False
        client.request('PUT', [db, '_security'], json=wanted)
        return wanted, True


def without_read_only(security):
    security = dict(security or {})
    security.pop(system.READ_ONLY_FIELD, None)
    return security


def replica_security(security, read_only):
    """``security`` as a replica keeps it: read-only while it is one."""
    wanted = without_read_only(security)
    if read_only:
        wanted[system.READ_ONLY_FIELD] = {'writer': system.ADMIN_USER}
    return wanted


def is_restricted(security):
    """Whether only members may read: CouchDB opens a database whose
    ``_security`` names no member name and no member role to everyone."""
    members = (security or {}).get('members') or {}
    return bool(members.get('names') or members.get('roles'))


# -- what a server holds ----------------------------------------------------

def tenant_databases(client):
    """The tenant's databases (no system database, not the agent's)."""
    return [db for db in client.all_dbs() if names.is_tenant_database(db)]


def docs_by_prefix(client, db, prefix):
    """{id without prefix: document} of the documents of ``db`` whose id
    starts with ``prefix``."""
    rows = client.all_docs(db, startkey=prefix, endkey=prefix + '\ufff0',
                           include_docs=True)['rows']
    return {row['id'][len(prefix):]: row['doc'] for row in rows
            if row.get('doc')}


def user_docs(client):
    """{name: _users document} of the server's users (not the account)."""
    docs = docs_by_prefix(client, system.USERS_DB, system.USER_DOC_PREFIX)
    docs.pop(system.REPLICATION_USER, None)
    return docs


# -- the source, as a replica knows it ------------------------------------

def _check_url(url):
    parts = parse.urlsplit(url)
    if (parts.scheme not in ('http', 'https') or not parts.hostname
            or parts.username is not None or parts.query):
        raise exception.ReplicationError(
            reason='the source URL must be http(s)://host:port without '
                   'credentials')


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
        _check_url(url)
        if data['api_version'] not in (couch.API_V1, couch.API_V3):
            raise exception.ReplicationError(
                reason="unknown source API version '%s'"
                       % data['api_version'])
        return cls(data['guest_id'], url, data['user'], data['password'],
                   data['api_version'])

    def to_dict(self):
        return {k: getattr(self, k) for k in self.KEYS}

    def client(self, timeout=None):
        """A client of the source, logged in as the replication account."""
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


class Problems:
    """What keeps replication back, by database (or 'source'): each one
    logged once when it appears or changes, and once when it is gone."""

    def __init__(self):
        self._current = {}
        self._reported = {}

    def note(self, key, reason):
        self._current[key] = reason

    def clear(self, key=None):
        if key is None:
            self._current.clear()
        else:
            self._current.pop(key, None)

    def current(self):
        return dict(self._current)

    def report(self):
        for key, reason in sorted(self._current.items()):
            if self._reported.get(key) != reason:
                LOG.warning("Replication problem in %s: %s", key, reason)
        for key in sorted(set(self._reported) - set(self._current)):
            LOG.info("Replication of %s is healthy again", key)
        self._reported = dict(self._current)
