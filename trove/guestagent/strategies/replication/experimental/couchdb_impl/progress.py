"""How far a replica has got, measured rather than guessed.

For each database the replica keeps the source sequence up to which every
change is verified to be on the replica: it reads the source's ``_changes``
since that sequence (as the replication account) and asks its own
``_revs_diff`` which of those revisions it lacks.  The verified sequence
advances to the last change before the first one missing.  This holds on
CouchDB 1.x (integer sequences) and 3.x (opaque ``"N-..."`` strings, which
are handed back to the source as they came) alike.

The verified sequences are kept in the replication state: Trove's eject
ranks replicas by them when their source is gone.
"""

import json
import time

from oslo_log import log as logging

from trove.common import cfg
from trove.guestagent.strategies.replication.experimental.couchdb_impl import (
    shared)

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

# How many changes one _changes/_revs_diff round checks, and how many
# rounds a check may take per database: the periodic upkeep takes one
# (enough to see progress, and light on both servers while a replica
# catches up), wait_for_txn and get_last_txn take up to CHECK_ROUNDS.
CHECK_BATCH = 1000
CHECK_ROUNDS = 20


class DatabaseProgress:
    """How far one replicated database has got, seen from the replica."""

    def __init__(self, verified_seq=0):
        self.verified_seq = verified_seq   # every source change up to here
        self.source_seq = 0                # the source's update_seq seen last
        self.last_progress = time.monotonic()

    @property
    def verified(self):
        return shared.seq_number(self.verified_seq)

    @property
    def behind(self):
        return max(0, shared.seq_number(self.source_seq) - self.verified)

    def to_dict(self):
        return {'source_seq': self.source_seq,
                'replicated_seq': self.verified_seq,
                'behind': self.behind}


def _since(seq):
    """A sequence as _changes' ``since`` wants it (3.x's strings as is)."""
    return seq if isinstance(seq, str) else json.dumps(seq)


def _revisions(results):
    revs = {}
    for row in results:
        revs.setdefault(row['id'], []).extend(
            c['rev'] for c in row.get('changes', []))
    return revs


class ProgressTracker:
    """The verified progress of every database of one replica."""

    def __init__(self, state, problems):
        self.state = state
        self.problems = problems
        self._dbs = {}

    def _progress(self, db):
        progress = self._dbs.get(db)
        if progress is None:
            saved = self.state.read().get('progress') or {}
            progress = self._dbs[db] = DatabaseProgress(saved.get(db, 0))
        return progress

    def check(self, source, replica, db, rounds=CHECK_ROUNDS):
        """Advance ``db``'s verified sequence as far as the replica has it;
        a database without progress for too long is a problem."""
        progress = self._progress(db)
        source_seq = source.request('GET', [db]).get('update_seq', 0)
        progress.source_seq = source_seq
        before = progress.verified
        if (self._advance(source, replica, db, progress, rounds)
                and shared.seq_number(source_seq) > progress.verified):
            # update_seq also counts changes that have no row in _changes
            # (a _security change, on 1.x and 3.x alike).  The feed, read
            # after update_seq, is all on the replica: so is every change
            # up to update_seq.
            progress.verified_seq = source_seq
        self._judge(db, progress, before)

    def _advance(self, source, replica, db, progress, rounds):
        """Verify batches of changes; True once the feed's end is reached."""
        for _round in range(rounds):
            changes = source.request('GET', [db, '_changes'], params={
                'since': _since(progress.verified_seq),
                'limit': str(CHECK_BATCH)})
            results = changes.get('results') or []
            if not results:
                progress.verified_seq = changes.get('last_seq',
                                                    progress.verified_seq)
                return True
            missing = replica.request('POST', [db, '_revs_diff'],
                                      json=_revisions(results)) or {}
            for row in results:
                if row['id'] in missing:
                    return False
                progress.verified_seq = row['seq']
            if len(results) < CHECK_BATCH:
                return True
        return False

    def _judge(self, db, progress, before):
        if progress.verified > before or not progress.behind:
            progress.last_progress = time.monotonic()
            self.problems.clear(db)
            return
        stalled = time.monotonic() - progress.last_progress
        if stalled > CONF.couchdb.replication_stall_timeout:
            self.problems.note(db, 'no progress for %d seconds, %d changes '
                                   'behind the source'
                               % (CONF.couchdb.replication_stall_timeout,
                                  progress.behind))

    def forget(self, db):
        self._dbs.pop(db, None)

    def clear(self):
        self._dbs.clear()

    def save(self):
        """Keep the verified sequences: eject ranks replicas by them."""
        verified = {db: p.verified_seq for db, p in self._dbs.items()}
        if verified != self.state.read().get('progress'):
            self.state.update(progress=verified)

    def saved(self):
        """{database: verified sequence} as recorded last."""
        return dict(self.state.read().get('progress') or {})

    def behind(self, txn):
        """The databases of ``txn`` ({db: sequence}) not verified that far."""
        return {db: seq for db, seq in txn.items()
                if db not in self._dbs
                or self._dbs[db].verified < shared.seq_number(seq)}

    def status(self):
        return {db: p.to_dict() for db, p in self._dbs.items()}
