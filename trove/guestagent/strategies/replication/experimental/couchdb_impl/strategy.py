"""``CouchDBReplication``: the replication calls Trove makes of a guest.

Every call takes the strategy's lock (the agent serves RPC messages on a
thread pool, and the periodic upkeep runs beside them) and hands the work
to the source side, the replica side or the progress tracker.
"""

import threading

from oslo_log import log as logging

from trove.common import cfg
from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.strategies.replication.experimental.couchdb_impl import (
    guard, replica, shared, source, upkeep)

CONF = cfg.CONF
LOG = logging.getLogger(__name__)
STRATEGY = shared.STRATEGY


class CouchDBReplication:
    """Source and replica sides of CouchDB replication for one instance."""

    def __init__(self, app, state=None):
        self.app = app
        self.state = state or shared.ReplicationState()
        self._lock = threading.RLock()
        self._problems = shared.Problems()
        self._source = source.SourceSide(app, self.state)
        self._replica = replica.ReplicaSide(app, self.state,
                                                self._problems)
        self._upkeep = upkeep.Upkeep(app, self.state, self._source,
                                         self._replica, self._problems)

    @property
    def client(self):
        return self.app.client

    # -- the source ------------------------------------------------------

    def backup_required_for_replication(self):
        """Yes, as every replication strategy of Trove 26 answers.

        Trove 26's replica flow ends with ``Backup.delete`` of the backup
        it made for the replica; when it made none it deletes with
        ``None``, which deletes every full backup of the tenant.  So the
        source makes that backup, and the new replica starts from it (see
        ``seed``) instead of pulling every document over HTTP.
        """
        return True

    def snapshot_for_replication(self, snapshot_info):
        """Trove's snapshot without its backup: the source's replica
        context, whose ``databases`` (read before the backup starts) say
        up to which sequence the backup holds each database."""
        master = self.get_replica_context()['master']
        return {'dataset': {'snapshot_id': None},
                'replication_strategy': STRATEGY,
                'master': master,
                'seed': {'since': dict(master['databases'])},
                'replica_conf': None}

    def get_replica_context(self):
        """Make this instance a source and say how to replicate from it."""
        with self._lock:
            password = self._source.ensure()
            self._source.upkeep()
            master = shared.MasterInfo(
                CONF.guest_id, source.public_url(),
                system.REPLICATION_USER, password, self.client.api_version)
            return {'replication_strategy': STRATEGY,
                    'master': dict(master.to_dict(),
                                   databases=self.latest_txn())}

    def enable_as_master(self):
        with self._lock:
            if self.state.master is not None:
                raise exception.ReplicationError(
                    reason='this instance still replicates from %s: detach '
                           'it first' % self.state.master.guest_id)
            self._source.ensure()
            self._source.upkeep()
            LOG.info("This instance is a replication source")

    def demote_master(self):
        """Stop being a source: the replication account goes."""
        with self._lock:
            self._source.demote()
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
            left = self._source.forget_replica(replica_id)
            LOG.info("Replica %s detached; %d replica(s) left", replica_id,
                     len(left))

    # -- the replica -----------------------------------------------------

    def attach(self, replica_info):
        """Replicate every database of the source in ``replica_info``."""
        master = shared.MasterInfo.from_replica_info(replica_info)
        with self._lock:
            if master.guest_id == CONF.guest_id:
                raise exception.ReplicationError(
                    reason='an instance cannot replicate from itself')
            current = self.state.master
            if current is not None and current.guest_id != master.guest_id:
                raise exception.ReplicationError(
                    reason='this instance already replicates from %s: '
                           'detach it first' % current.guest_id)
            self._replica.attach(master)
            LOG.info("This instance replicates from %s at %s",
                     master.guest_id, master.url)

    def seed(self, snapshot, backup_id):
        """This new replica was restored from the snapshot's backup: it
        holds every change of each source database up to the sequence the
        snapshot recorded.  Its jobs start there and its progress is
        verified from there; what the backup brought of the source's own
        replication (its account, its exchange) goes."""
        seed = (snapshot or {}).get('seed') or {}
        if seed.get('backup_id') != backup_id or not backup_id:
            LOG.info("The replication snapshot names backup %s, not the "
                     "restored %s: every document is replicated",
                     seed.get('backup_id'), backup_id)
            return
        since = seed.get('since')
        if not isinstance(since, dict):
            raise exception.ReplicationError(
                reason='the replication snapshot has no sequences')
        with self._lock:
            self._source.demote()
            self.state.update(seed=since, progress=since)
            LOG.info("Seeded from backup %s: %d database(s) replicate from "
                     "the sequences the backup holds", backup_id, len(since))

    def detach(self, for_failover=False):
        """Stop replicating; the replicated databases and documents stay."""
        with self._lock:
            master = self._replica.detach(for_failover)
            LOG.info("Detached from replication source %s%s",
                     master.guest_id if master else '(none)',
                     ' for a failover' if for_failover else '')
            return {'replication_strategy': STRATEGY,
                    'replica_id': CONF.guest_id,
                    'master_id': master.guest_id if master else None}

    def make_read_only(self, read_only):
        with self._lock:
            guard.set_read_only(self.client, self.state, bool(read_only))

    # -- transactions (promote and eject) -------------------------------

    def latest_txn(self):
        """{database: update_seq} of every tenant database here."""
        return {db: self.client.request('GET', [db]).get('update_seq', 0)
                for db in shared.tenant_databases(self.client)}

    def applied_txn(self):
        """Trove's get_latest_txn_id: on a source, {database: update_seq};
        on a replica, {database: the source's sequence verified here}."""
        with self._lock:
            master = self.state.master
            if master is None:
                return self.latest_txn()
            return self._replica.verified(master)

    def last_txn(self):
        """[source guest id, changes replicated]: Trove's eject ranking."""
        with self._lock:
            master = self.state.master
            if master is None:
                return [None, 0]
            verified = self._replica.verified(master)
            return [master.guest_id,
                    sum(shared.seq_number(s) for s in verified.values())]

    def txn_count(self):
        return sum(shared.seq_number(s) for s in self.applied_txn().values())

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
                self._replica.run_pass(master)
                behind = self._replica.progress.behind(txn)
            if not behind:
                return
        raise exception.ReplicationError(
            reason='the replica did not catch up within %s seconds; behind '
                   'in %s' % (timeout, ', '.join(sorted(behind))))

    # -- health and upkeep -----------------------------------------------

    def status(self):
        """Per database: the source's sequence and how far this replica is."""
        with self._lock:
            return self._replica.progress.status()

    def problems(self):
        """{database or 'source': reason} of what keeps replication back."""
        with self._lock:
            return self._problems.current()

    def periodic(self):
        """The upkeep pass the agent runs every replication_sync_interval."""
        with self._lock:
            self._upkeep.run()
