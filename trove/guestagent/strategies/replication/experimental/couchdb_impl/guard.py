"""The guard of every replicated database, and read-only.

``_design/trove_replication`` holds one ``validate_doc_update`` that
CouchDB runs (1.x's SpiderMonkey, 3.x's QuickJS) on every write but those
of ``_local`` documents, including each document of a ``_bulk_docs`` and
every write of a replication job:

- writes by the replication role are refused: the account a source hands
  its replicas reads everything and writes nothing but the ``_local``
  checkpoints replication keeps;
- while ``_security`` holds ``trove_read_only: {"writer": <admin>}`` (a
  replica), only that server admin may write: the agent's own, which the
  replication jobs write as.  Tenant users and root get CouchDB's own
  ``403 forbidden`` with the reason below.

CouchDB has no server-wide read-only switch: read-only is this field of
each database's ``_security``, which only admins may change.
"""

from oslo_log import log as logging

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.strategies.replication.experimental.couchdb_impl import (
    shared)

LOG = logging.getLogger(__name__)

ACCOUNT_REFUSED = 'The replication account of this instance only reads.'
READ_ONLY_REFUSED = ('This database is read-only: it is a replica. Write '
                     'to the replication source.')
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


def ensure_guard(client, db):
    """Put (or update) the guard design document into ``db``."""
    doc = client.get_or_none([db] + GUARD_PATH)
    if doc is not None and all(doc.get(k) == v
                               for k, v in GUARD_DDOC.items()):
        return
    body = dict(GUARD_DDOC, _id=system.GUARD_DDOC_ID)
    if doc is not None:
        body['_rev'] = doc['_rev']
    try:
        client.request('PUT', [db] + GUARD_PATH, json=body)
    except exception.CouchDBConflict:
        LOG.debug("Database %s: the guard arrived meanwhile", db)


def set_read_only(client, state, read_only):
    """Make every tenant database of ``client``'s server read-only (or
    writable again), and remember it in the replication state."""
    state.update(read_only=read_only)
    for db in shared.tenant_databases(client):
        ensure_guard(client, db)
        shared.change_security(
            client, db, lambda s: shared.replica_security(s, read_only))
    LOG.info("This instance is %s", 'read-only' if read_only
             else 'writable')
