"""A CouchDB 3.5 backup restored on a node with another Erlang node name.

Two real CouchDB 3.5 nodes: the source, a prepared guest with databases,
a replication document and a root admin, backed up once by the real
backup strategy into local storage; and for each test a target, another
prepared guest whose node name differs, restored by the real restore
strategy (download, decrypt, extract, start, shard maps, admins and uuid,
verification).  Only what a test varies is changed: the backup's metadata
as the extraction hands it over, or the shard-map move left out.

What only a cluster shows (shard maps placing databases on several
nodes) is in test_restore_cluster_backup.py, on a real node too.
"""

import json
import logging

import pytest

from trove.common import exception
from trove.guestagent.backup.storage import local
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.strategies.backup.experimental import (
    couchdb_impl as backup_impl)
from trove.guestagent.strategies.restore.experimental import (
    couchdb_impl as restore_impl)

pytestmark = pytest.mark.servers('couchdb3')
DATABASES = {'orders': 3, 'team/notes': 1, 'empty': 0}
ROOT_PASSWORD = 'Source-Root-1'
CONTAINER = 'backups'


def _shard_maps(client):
    rows = client.request('GET', '/_node/_local/_dbs/_all_docs',
                          params={'include_docs': 'true'})['rows']
    return {row['id']: row['doc'] for row in rows
            if not row['id'].startswith('_design/')}


def _make_backup(agent, backup_id):
    """Back ``agent`` up with the real strategy; its backup_info."""
    storage = local.LocalStorage(None, CONTAINER)
    result = backup_impl.CouchDBBackup(None, {'id': backup_id}, agent.app,
                                       storage).run()
    return {'id': backup_id, 'location': result.location,
            'checksum': result.checksum}


@pytest.fixture(scope='module')
def backup_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('backups'))


@pytest.fixture(scope='module')
def source(module_agents, backup_dir):
    """The backed-up guest: its node, backup, metadata and shard maps."""
    agent = module_agents('couchdb3', 'source')
    with agent.configured():
        agent.set(backup_local_dir=backup_dir)
        agent.boot()
        client = agent.app.client
        agent.admin.create_database(list(DATABASES))
        for db, count in DATABASES.items():
            for i in range(count):
                client.request('PUT', [db, 'doc-%d' % i], json={'n': i})
        client.request('PUT', ['_replicator', 'to-elsewhere'], json={
            'source': 'http://127.0.0.1:1/orders',
            'target': 'http://127.0.0.1:1/orders-copy',
            'continuous': True})
        agent.admin.enable_root(ROOT_PASSWORD)
        meta = backup_impl.CouchDBBackup(None, {'id': 'b-1'}, agent.app,
                                         None).snapshot()
        info = _make_backup(agent, 'b-1')
        agent.source_maps = _shard_maps(client)
        agent.backup_info, agent.meta = info, meta
        agent.uuid = client.server_info()['uuid']
    return agent


@pytest.fixture
def target(fresh, backup_dir):
    """A prepared guest of its own, with another node name."""
    fresh.set(backup_local_dir=backup_dir)
    return fresh.boot()


class _Restore(restore_impl.CouchDBRestore):
    """The real restore; ``edit_meta(meta)`` changes the metadata the
    extraction found (None: a backup without it, as upstream made)."""

    def __init__(self, agent, backup_info, edit_meta=None):
        super().__init__(None, backup_info, str(agent.server.data_dir),
                         agent.app)
        self.edit_meta = edit_meta

    def _extract(self, chain):
        result = super()._extract(chain)
        if self.edit_meta is None:
            return result
        meta = json.loads(result.extra(backup_impl.META_NAME))
        meta = self.edit_meta(meta)
        result.extras = [(name, data) for name, data in result.extras
                         if name != backup_impl.META_NAME]
        if meta is not None:
            result.extras.append((backup_impl.META_NAME,
                                  json.dumps(meta).encode()))
        return result


def _placed_on(doc, node):
    ranges = sorted(doc['by_range'])
    return (doc['by_node'] == {node: ranges}
            and all(nodes == [node] for nodes in doc['by_range'].values())
            and all(entry[2] == node for entry in doc['changelog']))


def _generation(doc):
    return int(doc['_rev'].split('-', 1)[0])


def _doc_counts(client):
    return {db: client.request('GET', [db])['doc_count'] for db in DATABASES}


# -- another node name ----------------------------------------------------

def test_restore_on_another_node_moves_every_shard_map(
        source, target, monkeypatch, caplog):
    monkeypatch.setattr(restore_impl, 'SHARD_MAP_PAGE', 2)   # 3 pages
    caplog.set_level(logging.WARNING)
    old, new = source.server.node, target.server.node
    assert old != new
    client = target.app.client
    assert client.server_info()['uuid'] != source.uuid

    _Restore(target, source.backup_info).restore()

    after = _shard_maps(client)
    assert set(after) == set(source.source_maps)
    for db, before in source.source_maps.items():
        moved = after[db]
        assert _placed_on(moved, new), db
        for field in ('_id', 'shard_suffix', 'props'):
            assert moved.get(field) == before.get(field)
        assert set(moved) == set(before)
        assert _generation(moved) == _generation(before) + 1
    assert client.request('GET', '/_membership') == {
        'all_nodes': [new], 'cluster_nodes': [new]}
    assert _doc_counts(client) == DATABASES
    assert client.request('GET', ['_replicator', 'to-elsewhere'])
    # The backup's uuid was in force from CouchDB's first start on it.
    assert client.server_info()['uuid'] == source.uuid
    runtime = target.local_d() / service.RUNTIME_INI_FILE
    assert 'uuid = %s' % source.uuid in runtime.read_text()
    assert not [r for r in caplog.records if 'not the backup' in
                r.getMessage()]
    # The backup's admins came back; the agent's own os_admin stayed.
    root = target.client_as('root', ROOT_PASSWORD)
    assert '_admin' in root.session_info()['userCtx']['roles']
    assert target.app.secure() is False


def test_without_the_move_the_databases_do_not_open(source, target):
    """And moving a map that changed meanwhile reads it again."""
    old, new = source.server.node, target.server.node
    strategy = _Restore(target, source.backup_info)
    strategy._adopt_shard_maps = lambda meta: None

    with pytest.raises(exception.CouchDBError) as caught:
        strategy.restore()

    # CouchDB 3.5: GET /{db} of a database whose shards it places on
    # another node.
    assert (caught.value.method, caught.value.status, caught.value.error,
            caught.value.reason) == ('GET', 500, 'nodedown',
                                     'progress not possible')
    client = target.app.client
    segments = ['_node', '_local', '_dbs', 'orders']
    stale = client.request('GET', segments)
    client.request('PUT', segments, json=dict(stale, props={'q': 2}))

    strategy._move_shard_map(client, stale, old, new)

    moved = client.request('GET', segments)
    assert _placed_on(moved, new)
    assert moved['props'] == {'q': 2}
    assert _generation(moved) == _generation(stale) + 2
    opened = None
    for _attempt in couch.polling_loop(30, 0.2):
        opened = client.get_or_none(['orders'])
        if opened:
            break
    assert opened['doc_count'] == 3


def test_backup_without_node_name_takes_it_from_the_shard_maps(source,
                                                               target):
    def without_node(meta):
        del meta['node']              # made before backups recorded it
        return meta

    _Restore(target, source.backup_info, without_node).restore()

    client = target.app.client
    assert _placed_on(_shard_maps(client)['orders'], target.server.node)
    assert _doc_counts(client) == DATABASES


def test_upstream_backup_without_metadata_is_moved_too(source, target):
    _Restore(target, source.backup_info, lambda meta: None).restore()

    client = target.app.client
    assert all(_placed_on(doc, target.server.node)
               for doc in _shard_maps(client).values())
    assert client.request('GET', ['team/notes'])['doc_count'] == 1


# -- the same node name ---------------------------------------------------

def test_same_node_name_writes_nothing(target):
    client = target.app.client
    target.admin.create_database(['orders'])
    client.request('PUT', ['orders', 'doc-0'], json={'n': 0})
    info = _make_backup(target, 'b-self')
    before = _shard_maps(client)
    nodes = client.request('GET', '/_node/_local/_nodes/_all_docs')['rows']

    _Restore(target, info).restore()

    assert _shard_maps(client) == before              # same revisions
    assert client.request('GET', '/_node/_local/_nodes/_all_docs')[
        'rows'] == nodes
    assert client.request('GET', ['orders'])['doc_count'] == 1


# -- the backup side ------------------------------------------------------

def test_backup_records_the_node_name(source):
    meta = source.meta
    assert meta['node'] == source.server.node
    assert meta['uuid'] == source.uuid
    assert meta['api_version'] == '3' and meta['version'] == '3.5.0'
    assert {db: meta['databases'][db] for db in DATABASES} == DATABASES
    assert meta['admins']['root'].startswith('-pbkdf2')
