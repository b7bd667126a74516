"""The source side: the replication account, the guard, the publication.

A source hands its replicas the ``_users`` account ``os_replicator`` with
the role ``trove_replicator``, never a server admin.  Its upkeep puts the
guard into every tenant database and lets the role read it, then publishes
the databases, their ``_security`` and the users (password hashes, never a
password) in the exchange (see ``exchange``).

Reading: CouchDB 3.x creates databases admin-only (``_security`` members
roles ``["_admin"]``), so those get the role added to their members and the
account reads them as a member.  A database whose ``_security`` names no
member at all is open to everyone, the account included, on 1.x and 3.x
alike; adding the role there would close it to the tenant's other users,
so it is left open.  Writing: the guard refuses the role everything but the
``_local`` checkpoints, which CouchDB never validates.

When Trove's ``cleanup_source_on_replica_detach`` removes the last
registered replica, the account's password is rotated; ``demote`` deletes
the account and the exchange.
"""

from oslo_log import log as logging
from oslo_utils import netutils

from trove.common import cfg
from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import admin
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.strategies.replication.experimental.couchdb_impl import (
    exchange, guard, shared)

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

_WILDCARD_ADDRESSES = ('0.0.0.0', '::', '')
_ACCOUNT_PATH = [system.USERS_DB, shared.USER_DOC_ID]


def public_url():
    """The URL replicas reach this instance's CouchDB at."""
    host = CONF.couchdb.replication_host
    if not host:
        host = CONF.couchdb.bind_address
        if host in _WILDCARD_ADDRESSES:
            host = netutils.get_my_ipv4()
    if ':' in host and not host.startswith('['):
        host = '[%s]' % host
    return 'http://%s:%d' % (host, CONF.couchdb.port)


def _with_role(security):
    """``security`` with the replication role among the members of a
    database that has members (an open one stays open)."""
    if shared.is_restricted(security):
        roles = security['members'].setdefault('roles', [])
        if system.REPLICATION_ROLE not in roles:
            roles.append(system.REPLICATION_ROLE)
    return security


class SourceSide:
    """What a source does, through the agent's admin client."""

    def __init__(self, app, state):
        self.app = app
        self.state = state

    @property
    def client(self):
        return self.app.client

    @property
    def exchange(self):
        return exchange.SourceExchange(self.client)

    # -- the account ----------------------------------------------------

    def ensure(self):
        """The account and the exchange exist and the password is known:
        return the password."""
        password = self.state.source_password
        account = self._account()
        self.exchange.create(fresh=password is None)
        if account is not None and password is not None:
            self._adopt_legacy(account)
            return password
        password = service.generate_password()
        self._write_account(account, password)
        LOG.info("Created the replication account %s",
                 system.REPLICATION_USER)
        return password

    def _account(self):
        return self.client.get_or_none(_ACCOUNT_PATH)

    def _write_account(self, current, password):
        """The account with ``password`` (and nothing else of ``current``
        but its revision), then the state."""
        doc = {'_id': shared.USER_DOC_ID, 'name': system.REPLICATION_USER,
               'type': 'user', 'roles': [system.REPLICATION_ROLE],
               'password': password}
        if current is not None:
            doc['_rev'] = current['_rev']
        self.client.request('PUT', _ACCOUNT_PATH, json=doc)
        self.state.update(source_password=password)

    def _adopt_legacy(self, account):
        """Move the registrations an earlier agent version kept in the
        account's own _users document into the exchange; drop its old
        publication there (it held the users' password hashes)."""
        fields = (exchange.LEGACY_PUBLISHED_FIELD,
                  exchange.LEGACY_REPLICAS_FIELD)
        if account is None or not any(f in account for f in fields):
            return
        replicas = account.get(exchange.LEGACY_REPLICAS_FIELD) or {}
        self.exchange.create()
        for guest_id, info in sorted(replicas.items()):
            self.exchange.register(guest_id, (info or {}).get('since'))
        for field in fields:
            account.pop(field, None)
        try:
            self.client.request('PUT', _ACCOUNT_PATH, json=account)
        except exception.CouchDBConflict:
            LOG.debug("The replication account changed meanwhile")
        LOG.info("Moved %d replica registration(s) of an earlier agent "
                 "version into %s", len(replicas), exchange.DB)

    def forget_replica(self, replica_id):
        """A replica has gone: forget it; after the last, a new password.
        Returns the replicas left."""
        self._adopt_legacy(self._account())
        self.exchange.forget(replica_id)
        left = self.exchange.replicas()
        if not left:
            old = self.state.source_password
            new = service.generate_password()
            self._write_account(self._account(), new)
            # Until CouchDB's cache of _users follows, the old password
            # would still log the detached replicas in.
            admin.wait_for_password(self.client, system.REPLICATION_USER,
                                    new, old_password=old,
                                    interval=self.app.poll_interval)
            LOG.info("The last replica detached: rotated the password of "
                     "the replication account %s", system.REPLICATION_USER)
        return left

    def demote(self):
        """Stop being a source: the account and the exchange go."""
        doc = self._account()
        if doc is not None:
            self.client.request('DELETE', _ACCOUNT_PATH,
                                params={'rev': doc['_rev']},
                                expected=(200, 404))
        self.exchange.drop()
        self.state.update(source_password=None)

    # -- the databases --------------------------------------------------

    def upkeep(self):
        """Guard every database, let the account read it, publish."""
        published = {}
        for db in shared.tenant_databases(self.client):
            try:
                published[db] = self._guard(db)
            except exception.CouchDBError as exc:
                if exc.status != 404:
                    raise
                LOG.debug("Database %s was deleted during the upkeep", db)
        users = {name: {k: doc[k] for k in shared.USER_FIELDS if k in doc}
                 for name, doc in shared.user_docs(self.client).items()}
        self.exchange.publish(CONF.guest_id, published, users)

    def _guard(self, db):
        """Guard ``db``, let the account read it; return its _security."""
        guard.ensure_guard(self.client, db)
        security, changed = shared.change_security(self.client, db,
                                                   _with_role)
        if changed:
            LOG.info("Database %s: its members now include the "
                     "replication role", db)
        return shared.without_read_only(security)
