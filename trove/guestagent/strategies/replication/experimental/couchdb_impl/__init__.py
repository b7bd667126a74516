"""CouchDB read replicas with CouchDB's own replication.

The design, and why:

- **The account.**  A source hands its replicas a ``_users`` account,
  ``os_replicator`` with the role ``trove_replicator``, never a server
  admin: a replica (or anyone who reads its ``_replicator``) must not be
  able to change the source.  ``source.py``.
- **Reading, not writing.**  Every tenant database of the source carries
  ``_design/trove_replication``, whose ``validate_doc_update`` refuses
  writes by that role (replication checkpoints are ``_local`` documents,
  which CouchDB never validates); the role is added to the members of every
  database that has members, which on CouchDB 3.x is every database the
  agent or the tenant creates (they are born admin-only).  ``guard.py``,
  ``source.py``.
- **The exchange.**  A replica must learn which databases the source holds,
  their ``_security`` and its users; the source must learn which replicas
  follow it.  CouchDB 3.x lets only admins list databases and read
  ``_users`` (an earlier version of this strategy kept all of it in the
  account's own ``_users`` document: 3.x refuses the account even that), so
  the source keeps it in a database of its own, ``trove_replication``,
  whose only member is the account and whose validator lets the account
  write only its registrations.  Weakening 3.x (opening ``_users`` or
  ``/_all_dbs``) would hand every tenant user the list of users with their
  password hashes.  The name is reserved and hidden from the tenant, and the
  database is never replicated.  ``exchange.py``.
- **The jobs.**  A replica keeps one continuous ``_replicator`` document
  per source database (credentials in URLs on 1.x, ``auth`` objects on
  3.x), which CouchDB restarts by itself; the agent's upkeep follows the
  source's publication: new databases, deleted ones, ``_security``, users.
  ``jobs.py``, ``replica.py``, ``upkeep.py``.
- **Read-only.**  CouchDB has no server-wide switch: a ``trove_read_only``
  field of each database's ``_security``, read by the same guard, lets
  only the agent's own admin (which the jobs write as) write.  ``guard.py``.
- **Progress is measured, not guessed**: the source's ``_changes`` since
  the last verified sequence are checked against the replica's
  ``_revs_diff``, so "caught up to N" means every change up to N is on the
  replica, on 1.x and 3.x alike.  ``progress.py``.

``strategy.py`` holds the class Trove's calls reach, ``shared.py`` what
every module uses.  The class is configured as ``[couchdb]
replication_strategy = CouchDBReplication`` in ``replication_namespace =
trove.guestagent.strategies.replication.experimental.couchdb_impl`` (and
the ``trove.guestagent.replication.strategies`` entry point).
"""

from trove.guestagent.strategies.replication.experimental.couchdb_impl import (
    shared, strategy)

CouchDBReplication = strategy.CouchDBReplication
MasterInfo = shared.MasterInfo
ReplicationState = shared.ReplicationState

__all__ = ['CouchDBReplication', 'MasterInfo', 'ReplicationState']
