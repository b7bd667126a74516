"""The upkeep pass the agent runs every ``replication_sync_interval``.

On a replica it follows the source (one batch of progress checks per
database: light on both servers while a replica catches up); on a source
it guards and publishes.  What fails is recorded as a problem, which the
heartbeat reports as ``blocked`` until it is gone, and logged once.
"""

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import client as couch


class Upkeep:
    """One instance's periodic replication pass."""

    def __init__(self, app, state, source, replica, problems):
        self.app = app
        self.state = state
        self.source = source
        self.replica = replica
        self.problems = problems

    def run(self):
        state = self.state.read()
        if not state.get('master') and not state.get('source_password'):
            # Neither a source nor a replica (any more).
            self.problems.clear()
            self.problems.report()
            return
        if self.app.client.health() is not couch.Health.UP:
            return      # the heartbeat reports a stopped CouchDB
        try:
            master = self.state.master
            if master is not None:
                self.replica.run_pass(master, rounds=1)
            if self.state.source_password is not None:
                self.source.upkeep()
        except exception.TroveError as exc:
            self.problems.note('source', str(exc))
        self.problems.report()
