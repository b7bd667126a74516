"""The backup of one node of a CouchDB cluster is refused by the restore.

A real CouchDB 3.5 node holds the data directory of a cluster's node: its
shard maps name a second node, written as a cluster writes them (``PUT
/_node/_local/_dbs/{db}``, ``by_node``, ``by_range`` and ``changelog``).
The real backup strategy backs it up into local storage, and the real
restore strategy, on another prepared node, must refuse the backup before
it writes anything: the shard maps there stay the backup's, revision for
revision, and no node is dropped from ``_nodes``.

Two data directories: every database on this node and on the other one
(``replicated``), and each database on one node only, ``orders`` on the
other (``spread``).  A database wholly on another node does not open here,
so the backup of ``spread`` keeps the metadata taken while the node still
held every database (on a cluster the other node would answer).  A restore
on another node name that works runs in test_restore_node.py.
"""

import json

import pytest

from trove.common import exception
from trove.guestagent.backup.storage import local
from trove.guestagent.strategies.backup.experimental import (
    couchdb_impl as backup_impl)
from trove.guestagent.strategies.restore.experimental import (
    couchdb_impl as restore_impl)

pytestmark = pytest.mark.servers('couchdb3')
DATABASES = {'orders': 3, 'team/notes': 1, 'empty': 0}
OTHER_NODE = 'couchdb@b.example.net'
SHARD_MAPS = ['_node', '_local', '_dbs']


class _Backup(backup_impl.CouchDBBackup):
    """The real backup strategy; ``meta`` replaces what snapshot() would
    record (None: record it now)."""

    def __init__(self, agent, backup_id, meta=None):
        super().__init__(None, {'id': backup_id}, agent.app,
                         local.LocalStorage(None, 'backups'))
        self.meta = meta

    def snapshot(self):
        if self.meta is None:
            return super().snapshot()
        return dict(self.meta, backup_id=self.backup_id)


def _placed(doc, nodes):
    """``doc`` (a shard map) with every range on ``nodes``."""
    ranges = sorted(doc['by_range'])
    return dict(doc, by_node={node: ranges for node in nodes},
                by_range={rng: list(nodes) for rng in ranges},
                changelog=[['add', rng, node] for node in nodes
                           for rng in ranges])


def _maps(client):
    """{database: shard map} of the node, revisions included."""
    rows = client.request('GET', SHARD_MAPS + ['_all_docs'],
                          params={'include_docs': 'true'})['rows']
    return {row['id']: row['doc'] for row in rows}


def _place(client, placements):
    """Write the shard maps of {database: nodes}."""
    for db, nodes in placements.items():
        doc = client.request('GET', SHARD_MAPS + [db])
        client.request('PUT', SHARD_MAPS + [db], json=_placed(doc, nodes))


def _nodes(client):
    rows = client.request('GET', ['_node', '_local', '_nodes', '_all_docs'])
    return {row['id'] for row in rows['rows']}


def _backed_up(agent, backup_id, meta=None):
    """backup_info of a backup of ``agent``, with its shard maps and
    nodes then."""
    result = _Backup(agent, backup_id, meta).run()
    client = agent.app.client
    return {'id': backup_id, 'location': result.location,
            'checksum': result.checksum, 'maps': _maps(client),
            'nodes': _nodes(client)}


@pytest.fixture(scope='module')
def backup_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('backups'))


def _prepared(module_agents, name, backup_dir):
    """A guest of the module, booted, backing up into ``backup_dir``."""
    agent = module_agents('couchdb3', name)
    with agent.configured():
        agent.set(backup_local_dir=backup_dir)
        agent.boot()
    return agent


@pytest.fixture(scope='module')
def source(module_agents, backup_dir):
    """A node with databases, backed up as ``replicated`` and ``spread``;
    ``meta`` is its metadata while it held every database alone."""
    agent = _prepared(module_agents, 'cluster-node', backup_dir)
    with agent.configured():
        agent.set(backup_local_dir=backup_dir)
        client = agent.app.client
        agent.admin.create_database(list(DATABASES))
        for db, count in DATABASES.items():
            client.request('POST', [db, '_bulk_docs'], json={'docs': [
                {'_id': 'doc-%d' % n, 'n': n} for n in range(count)]})
        here = agent.server.node
        agent.meta = backup_impl.CouchDBBackup(
            None, {'id': 'meta'}, agent.app, None).snapshot()
        _place(client, {db: [here, OTHER_NODE] for db in DATABASES})
        agent.backups = {'replicated': _backed_up(agent, 'replicated')}
        _place(client, dict({db: [here] for db in DATABASES},
                            orders=[OTHER_NODE]))
        agent.backups['spread'] = _backed_up(agent, 'spread', agent.meta)
    return agent


@pytest.fixture(scope='module')
def target(module_agents, backup_dir):
    """A prepared node of its own name, restored by each test."""
    return _prepared(module_agents, 'target', backup_dir)


def _refused_restore(target, backup, edit_meta=None):
    """The GuestStateError of restoring ``backup`` on ``target``, whose
    shard maps must be the backup's then, and its nodes all there."""
    strategy = restore_impl.CouchDBRestore(None, backup,
                                           str(target.server.data_dir),
                                           target.app)
    extract = strategy._extract

    def edited(chain):
        result = extract(chain)
        if edit_meta:
            extras = dict(result.extras)
            extras[backup_impl.META_NAME] = json.dumps(edit_meta(json.loads(
                extras[backup_impl.META_NAME]))).encode()
            result.extras = list(extras.items())
        return result

    strategy._extract = edited
    with pytest.raises(exception.GuestStateError) as caught:
        strategy.restore()
    client = target.app.client
    assert _maps(client) == backup['maps']
    assert backup['nodes'] <= _nodes(client)
    return str(caught.value)


def _without_node(meta):
    del meta['node']              # made before backups recorded it
    return meta


@pytest.mark.parametrize('recorded', [True, False])
def test_backup_of_a_two_node_cluster_is_refused(source, target, recorded,
                                                 backup_dir):
    here, new = source.server.node, target.server.node
    with target.configured():
        target.set(backup_local_dir=backup_dir)
        message = _refused_restore(target, source.backups['replicated'],
                                   None if recorded else _without_node)
    assert message == (
        "The backup's shard maps place databases on 2 nodes, %s: a backup "
        "of a CouchDB cluster cannot be restored on the single node %s."
        % (', '.join(sorted([here, OTHER_NODE])) + (
            ' (the backup was made on %s)' % here if recorded else ''),
           new))


def test_databases_each_on_another_node_without_record_are_refused(
        source, target, backup_dir):
    with target.configured():
        target.set(backup_local_dir=backup_dir)
        message = _refused_restore(target, source.backups['spread'],
                                   _without_node)
    assert 'cluster' in message
    assert source.server.node in message and OTHER_NODE in message
