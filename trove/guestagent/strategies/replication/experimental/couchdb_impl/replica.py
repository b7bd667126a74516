"""The replica side: attach, follow the source, detach.

A replica first checks that the source answers, accepts the replication
account and has published what it holds; bad input changes nothing.  It
then registers in the source's exchange, keeps one job per source database
and, on every pass, follows the source: databases created there are
created here with their job, databases deleted there lose their job and are
deleted here, ``_security`` and the users (with their password hashes) are
copied, a job whose credentials changed is replaced, and each database's
progress is verified.  The replica's own databases are read-only while it
is one (see ``guard``).
"""

from oslo_log import log as logging

from trove.common import cfg
from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.strategies.replication.experimental.couchdb_impl import (
    exchange, guard, jobs as jobs_mod, progress as progress_mod, shared)

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def check_source(source, master):
    """The source answers and accepts the account, and has published what
    it holds: else ReplicationError, and nothing has changed."""
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
    exchange.ReplicaExchange(source).publication()


class ReplicaSide:
    """What a replica does, through the agent's admin client."""

    def __init__(self, app, state, problems):
        self.app = app
        self.state = state
        self.problems = problems
        self.progress = progress_mod.ProgressTracker(state, problems)
        self.jobs = jobs_mod.Jobs(app, state)

    @property
    def client(self):
        return self.app.client

    # -- attach and detach ----------------------------------------------

    def attach(self, master):
        """Follow ``master``; on failure, undo what was done."""
        current = self.state.master
        source = master.client()
        try:
            check_source(source, master)
            exchange.ReplicaExchange(source).register(CONF.guest_id)
        finally:
            source.close()
        before = self.state.read()
        self.state.update(master=master.to_dict(), read_only=True)
        try:
            self.jobs.lock_database()
            guard.set_read_only(self.client, self.state, True)
            self.run_pass(master)
        except Exception:
            LOG.exception("Attaching to %s failed; undoing it",
                          master.guest_id)
            self._undo_attach(before)
            if current is None:
                self.unregister(master)
            raise

    def _undo_attach(self, before):
        # The state first, and each step on its own: a step that fails
        # must not leave this instance believing it is a replica.
        steps = (lambda: self.state.update(
                     master=before.get('master'),
                     read_only=before.get('read_only', False)),
                 self.jobs.stop_all,
                 lambda: guard.set_read_only(
                     self.client, self.state, bool(before.get('read_only'))))
        for step in steps:
            try:
                step()
            except Exception:
                LOG.exception("Could not undo the failed attach completely")

    def detach(self, for_failover):
        """Stop the jobs and forget the source; the data stays."""
        master = self.state.master
        self.jobs.stop_all()
        self.state.update(master=None, progress=None, seed=None)
        self.progress.clear()
        self.problems.clear()
        if master is not None:
            self.unregister(master)
        if not for_failover:
            guard.set_read_only(self.client, self.state, False)
        return master

    def unregister(self, master):
        """Tell the source this replica left (best effort: it may be
        gone, and Trove's cleanup on the source does it too)."""
        source = master.client(timeout=shared.BEST_EFFORT_TIMEOUT)
        try:
            exchange.ReplicaExchange(source).unregister(CONF.guest_id)
        except exception.TroveError as exc:
            LOG.warning("Could not tell the source %s that this replica "
                        "left (%s); Trove's cleanup on the source does it",
                        master.guest_id, exc)
        finally:
            source.close()

    # -- following the source -------------------------------------------

    def run_pass(self, master, rounds=progress_mod.CHECK_ROUNDS):
        """Follow the source: jobs, databases, _security, users, progress."""
        source = master.client()
        try:
            published = self._publication(source, master)
            self.problems.clear('source')
            databases = published['databases']
            self._follow_users(published['users'], master)
            jobs = self.jobs.current()
            read_only = self.state.read_only
            for db, security in sorted(databases.items()):
                self._follow(db, security, master, jobs.get(db), read_only)
                self._check_progress(source, db, rounds)
            # A database of the seed the source has deleted since its
            # backup has no job yet: it goes too.
            seeded = set(self.state.read().get('seed') or {})
            for db in sorted((set(jobs) | seeded) - set(databases)):
                self._drop(db, jobs.get(db))
            for db, reason in self.jobs.failing(databases, jobs).items():
                self.problems.note(db, reason)
            self.progress.save()
        finally:
            source.close()

    def _publication(self, source, master):
        try:
            return exchange.ReplicaExchange(source).publication()
        except exception.CouchDBError as exc:
            raise exception.ReplicationError(
                reason='cannot read the source %s: %s'
                       % (master.url, exc)) from exc

    def _check_progress(self, source, db, rounds):
        try:
            self.progress.check(source, self.client, db, rounds)
        except exception.CouchDBError as exc:
            if exc.status != 404:
                raise
            # Deleted on the source since it published its list: the
            # next pass drops it here.
            LOG.debug("Database %s is gone from the source", db)

    def _follow(self, db, security, master, job, read_only):
        if not self.client.exists([db]):
            self.client.request('PUT', [db], expected=(201, 202, 412))
            LOG.info("Database %s: created to replicate it from %s", db,
                     master.guest_id)
        guard.ensure_guard(self.client, db)
        wanted = shared.replica_security(security, read_only)
        shared.change_security(self.client, db, lambda _current: wanted)
        self.jobs.ensure(db, master, job)

    def _follow_users(self, users, master):
        """Make this server's users those of the source (hashes included)."""
        local = shared.user_docs(self.client)
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

    def _drop(self, db, job):
        """The source deleted ``db``: stop its job and delete it here too."""
        self.jobs.stop(db, job)
        if self.client.exists([db]):
            self.client.request('DELETE', [db], expected=(200, 404))
        self.progress.forget(db)
        self.problems.clear(db)
        seed = self.state.read().get('seed') or {}
        if db in seed:
            self.state.update(seed={k: v for k, v in seed.items() if k != db}
                              or None)
        LOG.info("Database %s: deleted on the source, deleted here", db)

    # -- progress -------------------------------------------------------

    def verified(self, master):
        """{database: verified sequence}, checked against the source now
        or, when it cannot be reached, as recorded last."""
        try:
            self.run_pass(master)
        except exception.TroveError as exc:
            # Eject asks this when the source is gone: answer with the
            # progress verified last.
            LOG.warning("Cannot check the progress against the source "
                        "(%s); reporting the progress recorded last", exc)
        return self.progress.saved()
