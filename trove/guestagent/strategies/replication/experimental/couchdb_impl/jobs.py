"""A replica's replication jobs: its ``_replicator`` documents.

One continuous document ``trove-<db>`` per source database, which CouchDB
restarts after a restart of its own or of the agent.  The source endpoint
logs in as the replication account, the target as the agent's own admin
(whom the guard lets write on a read-only replica): credentials inside the
URLs on CouchDB 1.x, ``auth`` objects on 2.x/3.x.  ``_replicator`` is made
readable by server admins only, since its documents hold passwords.

CouchDB says itself when a job fails: 1.x writes ``_replication_state``
into the document, 3.x reports ``crashing``/``failed`` in
``/_scheduler/docs``.
"""

from urllib import parse

from oslo_log import log as logging

from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import system
from trove.guestagent.strategies.replication.experimental.couchdb_impl import (
    shared)

LOG = logging.getLogger(__name__)

FAILED_STATES = ('error', 'crashing', 'failed')


def job_id(db):
    return system.REPLICATOR_DOC_PREFIX + db


def _url_with_credentials(url, user, password):
    """http://user:password@host/... for CouchDB 1.x replication."""
    parts = parse.urlsplit(url)
    netloc = '%s:%s@%s' % (parse.quote(user, safe=''),
                           parse.quote(password, safe=''), parts.netloc)
    return parse.urlunsplit(parts._replace(netloc=netloc))


def endpoint(api_version, url, user, password):
    """A replication endpoint in the form the local server understands."""
    if api_version == couch.API_V3:
        return {'url': url, 'auth': {'basic': {'username': user,
                                               'password': password}}}
    return _url_with_credentials(url, user, password)


class Jobs:
    """The agent's ``_replicator`` documents on this server."""

    def __init__(self, app, state):
        self.app = app
        self.state = state

    @property
    def client(self):
        return self.app.client

    def current(self):
        """{database: _replicator document} of this agent's jobs."""
        return shared.docs_by_prefix(self.client, system.REPLICATOR_DB,
                                     system.REPLICATOR_DOC_PREFIX)

    def body(self, db, master):
        api = self.client.api_version
        admin_user, admin_password = self.app.credentials.load()
        body = {
            'source': endpoint(api, shared.db_url(master.url, db),
                               master.user, master.password),
            'target': endpoint(api, shared.db_url(self.app.base_url(), db),
                               admin_user, admin_password),
            'continuous': True,
            'trove_source': master.guest_id,
        }
        since = (self.state.read().get('seed') or {}).get(db)
        if since is not None and api == couch.API_V3:
            # Restored from the source's backup up to this sequence: the
            # job reads the source's changes from there, not from 0 (1.x
            # has no since_seq; its _revs_diff finds every document here).
            body['since_seq'] = since
        return body

    def ensure(self, db, master, job):
        """Start ``db``'s job, or replace ``job`` if it is not the one
        wanted (new credentials, another source)."""
        body = self.body(db, master)
        if job is not None and all(job.get(k) == v for k, v in body.items()):
            return
        if job is not None:
            # A triggered job is replaced, not edited: CouchDB 1.6 refuses
            # most changes to a running replication document.
            self.stop(db, job)
        self.client.request('PUT', [system.REPLICATOR_DB, job_id(db)],
                            json=body)
        LOG.info("Database %s: replication job %s from %s", db,
                 'restarted' if job else 'started', master.guest_id)

    def stop(self, db, job):
        if job is None:
            return
        self.client.request('DELETE', [system.REPLICATOR_DB, job_id(db)],
                            params={'rev': job['_rev']}, expected=(200, 404))

    def stop_all(self):
        for db, job in self.current().items():
            self.stop(db, job)
            LOG.info("Database %s: replication job stopped", db)

    def lock_database(self):
        """Only admins may read _replicator: its documents hold passwords."""
        security = shared.security_of(self.client, system.REPLICATOR_DB)
        members = security.setdefault('members', {})
        names = members.setdefault('names', [])
        if system.ADMIN_USER in names:
            return
        names.append(system.ADMIN_USER)
        members.setdefault('roles', [])
        security.setdefault('admins', {'names': [], 'roles': []})
        self.client.request('PUT', [system.REPLICATOR_DB, '_security'],
                            json=security)

    def failing(self, dbs, jobs):
        """{database: reason} of the jobs of ``dbs`` CouchDB says fail."""
        if self.client.api_version == couch.API_V3:
            states = self._scheduler_states()
        else:
            states = {db: (job.get('_replication_state'),
                           job.get('_replication_state_reason'))
                      for db, job in jobs.items()}
        failing = {}
        for db in dbs:
            state, reason = states.get(db, (None, None))
            if state in FAILED_STATES:
                failing[db] = 'replication job %s: %s' % (
                    state, reason or 'no reason given')
        return failing

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
