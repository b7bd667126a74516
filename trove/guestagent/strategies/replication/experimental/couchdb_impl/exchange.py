"""The exchange: the database through which a source and its replicas talk.

A replica must learn what its source holds (the databases, their
``_security``, the users with their password hashes), and the source must
learn which replicas follow it; the replication account, not an admin,
is all a replica has.  CouchDB 3.x gives a non-admin no way to list
databases (``/_all_dbs`` answers 401) and no access to ``_users`` (its
``_security`` is admin-only: a user cannot even read its own document), so
the source keeps both in a database of its own, ``trove_replication``:

- ``_security`` makes the replication account its only member (server
  admins always pass): tenant users cannot read it, whatever the server
  version's defaults;
- ``_design/trove_exchange``'s ``validate_doc_update`` lets the account
  write only documents ``replica:<guest id>`` (its registrations); the
  publication is written by the source's admin alone;
- ``source``: ``{"guest_id", "databases": {db: _security}, "users": {name:
  {name, type, roles, hash fields}}}``, rewritten by the source's upkeep
  when it changes;
- ``replica:<guest id>``: ``{"since"}``, written by a replica when it
  attaches, deleted when it detaches or by Trove's
  ``cleanup_source_on_replica_detach`` on the source.

The name is reserved (``names.is_tenant_database``): the tenant can neither
create nor delete it through the guest API, ``list_databases`` hides it,
the source never publishes it, so no replica replicates it, and it never
gets the guard of the tenant's databases.
"""

import copy
import time

from oslo_log import log as logging

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.strategies.replication.experimental.couchdb_impl import (
    shared)

LOG = logging.getLogger(__name__)

DB = system.REPLICATION_DB
PUBLICATION_ID = 'source'
REGISTRATION_PREFIX = 'replica:'
# Fields an agent of an earlier version kept in the account's _users
# document: its publication and the replicas' registrations.
LEGACY_PUBLISHED_FIELD = 'trove_source'
LEGACY_REPLICAS_FIELD = 'trove_replicas'

SECURITY = {'admins': {'names': [], 'roles': []},
            'members': {'names': [system.REPLICATION_USER], 'roles': []}}
VALIDATOR_PATH = ['_design', 'trove_exchange']
VALIDATOR_FUNCTION = """function (newDoc, oldDoc, userCtx, secObj) {
  if ((userCtx.roles || []).indexOf('_admin') !== -1) {
    return;
  }
  if (userCtx.name !== '%(user)s' || newDoc._id.indexOf('%(prefix)s') !== 0) {
    throw({forbidden: 'The replication account writes only the ' +
                      'registrations of replicas here.'});
  }
}""" % {'user': system.REPLICATION_USER, 'prefix': REGISTRATION_PREFIX}
VALIDATOR_DDOC = {'language': 'javascript',
                  'validate_doc_update': VALIDATOR_FUNCTION}


def _registration_id(guest_id):
    return REGISTRATION_PREFIX + guest_id


def _put_if_changed(client, path, wanted, attempts=3):
    """Read-modify-write one document: True if it was written."""
    for attempt in range(attempts):
        current = client.get_or_none(path)
        body = copy.deepcopy(wanted)
        if current is not None:
            if all(current.get(k) == v for k, v in body.items()):
                return False
            body['_rev'] = current['_rev']
        try:
            client.request('PUT', path, json=body)
            return True
        except exception.CouchDBConflict:
            if attempt == attempts - 1:
                raise
    return False


def _put_if_missing(client, path, body):
    """Create one document unless it is there: True if it was created."""
    if client.get_or_none(path) is not None:
        return False
    try:
        client.request('PUT', path, json=body)
    except exception.CouchDBConflict:
        return False
    return True


def _delete(client, path):
    """Delete one document if it is there: True if it was."""
    doc = client.get_or_none(path)
    if doc is None:
        return False
    client.request('DELETE', path, params={'rev': doc['_rev']},
                   expected=(200, 202, 404))
    return True


class SourceExchange:
    """The exchange as the source's admin keeps it."""

    def __init__(self, client):
        self.client = client

    def create(self, fresh=False):
        """The database, its _security and its validator; ``fresh``: a
        new source, so nothing an earlier one left counts."""
        if fresh:
            self.drop()
        self.client.request('PUT', [DB], expected=(201, 202, 412))
        if shared.security_of(self.client, DB) != SECURITY:
            self.client.request('PUT', [DB, '_security'], json=SECURITY)
        _put_if_changed(self.client, [DB] + VALIDATOR_PATH,
                        dict(VALIDATOR_DDOC, _id='/'.join(VALIDATOR_PATH)))

    def drop(self):
        self.client.request('DELETE', [DB], expected=(200, 202, 404))

    def publish(self, guest_id, databases, users):
        """Rewrite the publication if it changed (creating the exchange
        first when it has none)."""
        wanted = {'_id': PUBLICATION_ID, 'guest_id': guest_id,
                  'databases': databases, 'users': users}
        current = self.client.get_or_none([DB, PUBLICATION_ID])
        if current is None:
            self.create()
        elif all(current.get(k) == v for k, v in wanted.items()):
            return
        else:
            wanted['_rev'] = current['_rev']
        # The source's agent is the only writer (under its lock).
        self.client.request('PUT', [DB, PUBLICATION_ID], json=wanted)
        LOG.debug("Published %d databases and %d users to the replicas",
                  len(databases), len(users))

    def replicas(self):
        """The guest ids of the replicas registered here."""
        if not self.client.exists([DB]):
            return []
        return sorted(shared.docs_by_prefix(self.client, DB,
                                            REGISTRATION_PREFIX))

    def register(self, guest_id, since):
        """Record a replica (one an earlier agent version registered)."""
        _put_if_missing(self.client, [DB, _registration_id(guest_id)],
                        {'since': since})

    def forget(self, guest_id):
        if self.client.exists([DB]):
            _delete(self.client, [DB, _registration_id(guest_id)])


class ReplicaExchange:
    """The exchange as a replica reaches it: as the replication account."""

    def __init__(self, source):
        self.source = source

    def publication(self):
        """What the source publishes: {'databases': {db: _security},
        'users': {name: user fields}}; ReplicationError if nothing."""
        try:
            doc = self.source.get_or_none([DB, PUBLICATION_ID])
        except exception.CouchDBAuthError as exc:
            raise exception.ReplicationError(
                reason='the source refuses the replication account its '
                       'publication (%s): is it a replication source?'
                       % exc.status) from exc
        if not isinstance(doc, dict) or not isinstance(
                doc.get('databases'), dict):
            raise exception.ReplicationError(
                reason='the source has not published its databases: is it '
                       'a replication source?')
        return {'databases': doc['databases'],
                'users': doc.get('users') or {}}

    def register(self, guest_id):
        """Tell the source this replica follows it."""
        since = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
        _put_if_missing(self.source, [DB, _registration_id(guest_id)],
                        {'since': since})

    def unregister(self, guest_id):
        _delete(self.source, [DB, _registration_id(guest_id)])
