"""Replication states a real CouchDB 3.5 replica reaches only when someone
makes it: a revision missing in the middle of a database, a ``failed`` job.

One source and one attached replica serve the module, real nodes with the
agent's objects in this process (couchdb3_nodes.py), real jobs.  A replica
lacks a revision once ``_purge`` takes it out of its copy: the job does
not copy it again, its changes feed is past it.  CouchDB refuses a
malformed ``_replicator`` document when it is written (403); the one it
accepts and then marks ``failed``, for good, is a document whose
replication another document already runs (a copy of the agent's job
written first).  The rest of replication on real nodes is in
test_replication_couchdb3.py.
"""

import pytest

from trove.common import cfg
from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import system

try:
    from . import couchdb3_nodes as nodes
except ImportError:
    import couchdb3_nodes as nodes

CONF = cfg.CONF
COPY_ID = 'copy-of-trove-db2'


@pytest.fixture(scope='module')
def pair(tmp_path_factory):
    """(source, replica): db1 and db2 with documents, replica attached."""
    root = tmp_path_factory.mktemp('replication')
    started = []
    try:
        source = nodes.Node(root, 'source')
        started.append(source)
        replica = nodes.Node(root, 'replica')
        started.append(replica)
        source.admin.create_database(['db1', 'db2'])
        for db in ('db1', 'db2'):
            for n in range(3):
                source.write(db, 'doc-%d' % n, n=n)
        replica.agent.attach(source.agent.get_replica_context())
        yield source, replica
    finally:
        for node in started:
            node.stop()
        CONF.reset()


def _caught_up(source, replica):
    replica.agent.wait_for_txn(source.agent.latest_txn(), timeout=60)


def _arrived(replica, db, doc_id):
    return nodes.wait_until(lambda: replica.doc(db, doc_id), 30,
                            '%s/%s on the replica' % (db, doc_id))


def test_wait_for_txn_fails_while_a_revision_is_missing(pair):
    source, replica = pair
    _caught_up(source, replica)
    source.write('db1', 'gone', v=1)
    source.write('db1', 'after', v=1)
    gone = _arrived(replica, 'db1', 'gone')
    _arrived(replica, 'db1', 'after')
    purged = replica.client().request('POST', ['db1', '_purge'],
                                      json={'gone': [gone['_rev']]})
    assert purged['purged'] == {'gone': [gone['_rev']]}

    with pytest.raises(exception.ReplicationError) as err:
        replica.agent.wait_for_txn(source.agent.latest_txn(), timeout=1)
    assert 'behind in db1' in str(err.value)
    assert replica.doc('db1', 'after') is not None

    # A new revision on the source brings the document back.
    source.write('db1', 'gone', v=2, _rev=source.doc('db1', 'gone')['_rev'])
    _caught_up(source, replica)
    assert replica.doc('db1', 'gone')['v'] == 2


def _state(replica, doc_id):
    """What /_scheduler/docs says of a _replicator document, or None."""
    doc = replica.client().get_or_none(
        ['_scheduler', 'docs', system.REPLICATOR_DB, doc_id])
    return doc and doc['state']


def _delete(replica, doc_id):
    """Delete a _replicator document; return once CouchDB let it go."""
    client = replica.client()
    rev = client.request('GET', [system.REPLICATOR_DB, doc_id])['_rev']
    client.request('DELETE', [system.REPLICATOR_DB, doc_id],
                   params={'rev': rev})
    nodes.wait_until(lambda: _state(replica, doc_id) is None, 30,
                     '%s gone from /_scheduler/docs' % doc_id)


def _becomes(replica, doc_id, state):
    nodes.wait_until(lambda: _state(replica, doc_id) == state, 30,
                     '%s %s in /_scheduler/docs' % (doc_id, state))


def test_a_failed_job_is_a_problem_until_it_runs_again(pair):
    source, replica = pair
    _caught_up(source, replica)
    replica.agent.periodic()
    assert replica.agent.problems() == {}
    job = replica.jobs()['trove-db2']
    copy = {k: v for k, v in job.items() if not k.startswith('_')}
    # The copy takes the replication over; the upkeep writes the job
    # again, and CouchDB marks it failed.
    _delete(replica, 'trove-db2')
    replica.client().request('PUT', [system.REPLICATOR_DB, COPY_ID],
                             json=copy)
    _becomes(replica, COPY_ID, 'running')
    replica.agent.periodic()
    _becomes(replica, 'trove-db2', 'failed')
    replica.agent.periodic()
    problems = replica.agent.problems()
    assert list(problems) == ['db2']
    assert problems['db2'].startswith('replication job failed: ')
    assert problems['db2'].endswith(
        'specified by document `trove-db2` already started, triggered by '
        'document `%s` from db `_replicator`' % COPY_ID)
    # A failed job stays failed: once the copy is gone, its document is
    # deleted, and the upkeep writes it anew.
    _delete(replica, COPY_ID)
    replica.agent.periodic()
    assert list(replica.agent.problems()) == ['db2']
    _delete(replica, 'trove-db2')
    replica.agent.periodic()
    _becomes(replica, 'trove-db2', 'running')
    replica.agent.periodic()
    assert replica.agent.problems() == {}
