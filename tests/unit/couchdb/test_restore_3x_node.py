"""Restoring a CouchDB 3.x backup on a node with another node name.

The backup is made by the real backup strategy against one fake 3.x node
(``couchdb@old``); its data directory lands on another fake node
(``couchdb@new``) the way extraction would put the files there
(``fake.copy_data``: databases, ``_dbs``, ``_nodes``, never the
configuration), and the real restore strategy runs from ``restore()`` on:
stop, "extract", start through a fake service manager that reads
``local.d`` like CouchDB, shard maps, admins and uuid, verification.
Everything between the strategy and the fakes is HTTP.
"""

import json
import types

import pytest

from trove.common import exception
from trove.guestagent.backup import extract
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.strategies.backup.experimental import (
    couchdb_impl as backup_impl)
from trove.guestagent.strategies.restore.experimental import (
    couchdb_impl as restore_impl)

try:
    from . import fake_couchdb3 as fake
except ImportError:
    import fake_couchdb3 as fake

IMAGE_ADMIN = ('admin', 'image-Admin-1')
OLD, NEW = 'couchdb@old.example.net', 'couchdb@new.example.net'
DATABASES = {'orders': 3, 'team/notes': 1, 'empty': 0}


def _client(server):
    return couch.CouchDBClient(server.url, *IMAGE_ADMIN, timeout=5.0,
                               api_version='3')


def _local_writes(server):
    """The writes a server saw to its node-local databases."""
    return [(method, path) for method, path, _auth in server.requests_seen
            if method in ('PUT', 'DELETE', 'POST')
            and path.startswith(('/_node/_local/_dbs',
                                 '/_node/_local/_nodes'))]


@pytest.fixture
def servers():
    started = []

    def start(node):
        server = fake.FakeCouchDB('3', node=node)
        server.set_admin(*IMAGE_ADMIN)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def source(servers):
    """A 3.x node called couchdb@old with databases, users, replications."""
    server = servers(OLD)
    client = _client(server)
    for db in ('_users', '_replicator') + tuple(DATABASES):
        client.request('PUT', [db])
    for db, count in DATABASES.items():
        for i in range(count):
            client.request('PUT', [db, 'doc-%d' % i], json={'n': i})
    client.request('PUT', ['_replicator', 'to-elsewhere'], json={
        'source': 'http://127.0.0.1:1/orders', 'target': 'orders',
        'continuous': True})
    return server


def _backup_meta(server, **changes):
    """meta/backup.json as the backup strategy writes it for ``server``."""
    app = types.SimpleNamespace(client=_client(server))
    meta = backup_impl.CouchDBBackup(None, {'id': 'b-1'}, app,
                                     None).snapshot()
    meta.update(changes)
    return json.loads(json.dumps(meta))


class _Restore(restore_impl.CouchDBRestore):
    """The restore strategy with the download and tar replaced.

    ``_extract`` gives the target the source's data directory, as the
    extraction of the backup's files would, and the backup's metadata.
    """

    def __init__(self, app, source, target, meta):
        super().__init__(None, {'id': 'b-1', 'location': 'file:///b-1'},
                         '/var/lib/couchdb', app)
        self.source, self.target, self.meta = source, target, meta

    def _extract(self):
        fake.copy_data(self.source, self.target)
        extras = []
        if self.meta is not None:
            extras.append((backup_impl.META_NAME,
                           json.dumps(self.meta).encode()))
        return extract.ExtractResult(extras=extras)


@pytest.fixture
def target(conf, tmp_path, servers):
    """``target(node)``: a prepared instance (os_admin, system dbs)."""

    def make(node=NEW):
        server = servers(node)
        etc = tmp_path / 'etc'
        conf.config(group='couchdb', host='127.0.0.1', port=server.port,
                    config_dir=str(etc), http_timeout=5.0)
        conf.config(state_change_wait_time=5)
        manager = fake.FakeServiceManager(server, config_dir=str(etc))
        app = service.CouchDBApp(service_manager=manager)
        app.poll_interval = 0.02
        app.set_data_ownership = lambda path=None: None   # chown -R, root
        app.secure()
        app.ensure_system_databases()
        server.requests_seen.clear()
        return server, app

    return make


def _generation(doc):
    return int(doc['_rev'].split('-', 1)[0])


def _restore(app, source, server, meta):
    _Restore(app, source, server, meta).restore()


# -- another node name ----------------------------------------------------

def test_shard_maps_are_moved_to_the_new_node(source, target):
    source.set_shard_map(dict(source.shard_map_of('orders'),
                              props={'partitioned': True}))
    source.set_shard_map({'_id': '_design/_auth', 'language': 'javascript'})
    before = _client(source).request(
        'GET', '/_node/_local/_dbs/_all_docs',
        params={'include_docs': 'true'})['rows']
    before = {row['id']: row['doc'] for row in before}
    meta = _backup_meta(source)
    server, app = target(NEW)

    _restore(app, source, server, meta)

    after = {db: server.shard_map_of(db) for db in before}
    assert set(after) == {'_users', '_replicator', '_design/_auth',
                          *DATABASES}
    assert after['_design/_auth'] == before['_design/_auth']
    for db in set(before) - {'_design/_auth'}:
        old, new = before[db], after[db]
        ranges = list(fake.Q2_RANGES)
        assert new['by_node'] == {NEW: ranges}
        assert new['by_range'] == {r: [NEW] for r in ranges}
        assert new['changelog'] == [['add', r, NEW] for r in ranges]
        # Everything else as it was; a new revision after the old one.
        for field in ('_id', 'shard_suffix', 'props'):
            assert new[field] == old[field]
        assert set(new) == set(old)
        assert _generation(new) == _generation(old) + 1
    assert after['orders']['props'] == {'partitioned': True}
    # One PUT per database, each accepted with its _rev (the fake answers
    # 409 to a missing or stale one), and the old node leaves _nodes.
    puts = [p for m, p in _local_writes(server) if m == 'PUT']
    assert sorted(puts) == sorted(
        '/_node/_local/_dbs/' + couch.quote_segment(db)
        for db in set(before) - {'_design/_auth'})
    membership = app.client.request('GET', '/_membership')
    assert membership == {'all_nodes': [NEW], 'cluster_nodes': [NEW]}
    # The databases open, with their documents.
    for db, count in DATABASES.items():
        assert app.client.request('GET', [db])['doc_count'] == count


def test_the_backup_uuid_is_the_servers_from_its_first_start(source,
                                                             target):
    meta = _backup_meta(source)
    server, app = target(NEW)
    assert app.client.server_info()['uuid'] != meta['uuid']

    _restore(app, source, server, meta)

    assert app.client.server_info()['uuid'] == meta['uuid']
    # CouchDB came up on the restored data already with the backup's uuid,
    # before its replicator could hash another one into replication ids.
    assert server.start_uuids[-1] == meta['uuid']
    runtime = (app.local_d() + '/' + service.RUNTIME_INI_FILE)
    with open(runtime) as stream:
        assert 'uuid = %s\n' % meta['uuid'] in stream.read()


def test_without_the_move_the_restored_databases_do_not_open(source,
                                                             target):
    meta = _backup_meta(source)
    server, app = target(NEW)
    strategy = _Restore(app, source, server, meta)
    strategy._adopt_shard_maps = lambda meta: None

    with pytest.raises(exception.CouchDBError) as caught:
        strategy.restore()
    assert caught.value.status == 500


def test_backup_without_node_name_takes_it_from_the_shard_maps(source,
                                                               target):
    meta = _backup_meta(source)
    del meta['node']                      # made before backups recorded it
    server, app = target(NEW)

    _restore(app, source, server, meta)

    assert server.shard_map_of('orders')['by_node'] == {
        NEW: list(fake.Q2_RANGES)}
    assert app.client.request('GET', ['orders'])['doc_count'] == 3


def test_upstream_backup_without_metadata_is_moved_too(source, target):
    server, app = target(NEW)

    _restore(app, source, server, None)

    assert server.shard_map_of('team/notes')['by_range'] == {
        r: [NEW] for r in fake.Q2_RANGES}


def test_shard_maps_are_read_page_by_page(source, target, monkeypatch):
    monkeypatch.setattr(restore_impl, 'SHARD_MAP_PAGE', 2)
    meta = _backup_meta(source)
    server, app = target(NEW)

    _restore(app, source, server, meta)

    maps = server.local_dbs['_dbs']
    assert len(maps) == 5
    assert all(doc['by_node'] == {NEW: list(fake.Q2_RANGES)}
               for doc in maps.values())
    pages = [p for m, p, _a in server.requests_seen
             if m == 'GET' and '/_dbs/_all_docs' in p]
    assert len(pages) == 3


def test_a_map_changed_meanwhile_is_read_again(source, target):
    server, app = target(NEW)
    fake.copy_data(source, server)
    stale = server.shard_map_of('orders')
    server.set_shard_map(dict(stale, props={'q': 2}))     # a newer _rev
    strategy = _Restore(app, source, server, None)

    strategy._move_shard_map(app.client, stale, OLD, NEW)

    moved = server.shard_map_of('orders')
    assert moved['by_node'] == {NEW: list(fake.Q2_RANGES)}
    assert moved['props'] == {'q': 2}
    assert moved['_rev'].startswith('3-')
    assert [m for m, _p in _local_writes(server)] == ['PUT', 'PUT']


# -- the same node name ---------------------------------------------------

def test_same_node_name_writes_nothing(servers, target):
    source = servers(NEW)
    _client(source).request('PUT', ['orders'])
    meta = _backup_meta(source)
    before = source.shard_map_of('orders')
    server, app = target(NEW)

    _restore(app, source, server, meta)

    assert _local_writes(server) == []
    assert server.shard_map_of('orders') == before


# -- a cluster's backup ---------------------------------------------------

@pytest.mark.parametrize('recorded', [True, False])
def test_backup_of_a_two_node_cluster_is_refused(source, target, recorded):
    a, b = 'couchdb@a.example.net', 'couchdb@b.example.net'
    meta = _backup_meta(source, node=a if recorded else None)
    # The data directory of node a of a cluster: every range on a and b.
    for db in list(source.local_dbs['_dbs']):
        source.set_shard_map(fake.shard_map(db, [a, b]))
    server, app = target(NEW)

    with pytest.raises(exception.GuestStateError) as caught:
        _restore(app, source, server, meta)

    message = str(caught.value)
    assert message == (
        "The backup's shard maps place databases on 2 nodes, %s, %s%s: a "
        "backup of a CouchDB cluster cannot be restored on the single "
        "node %s." % (a, b, ' (the backup was made on %s)' % a
                      if recorded else '', NEW))
    assert 'cluster' in message
    assert _local_writes(server) == []
    assert server.local_dbs['_dbs'] == source.local_dbs['_dbs']


def test_databases_spread_over_two_nodes_without_record_are_refused(
        source, target):
    a, b = 'couchdb@a.example.net', 'couchdb@b.example.net'
    meta = _backup_meta(source)
    del meta['node']
    source.set_shard_map(fake.shard_map('orders', a))
    source.set_shard_map(fake.shard_map('empty', b))
    server, app = target(NEW)

    with pytest.raises(exception.GuestStateError, match=a) as caught:
        _restore(app, source, server, meta)

    assert b in str(caught.value)
    assert _local_writes(server) == []


# -- the backup side and the helpers --------------------------------------

def test_backup_records_the_node_name(source):
    meta = _backup_meta(source)
    assert meta['node'] == OLD
    assert meta['uuid'] == source.config['couchdb']['uuid']
    assert meta['databases']['orders'] == 3


def test_rename_node_changes_only_the_node_names():
    doc = dict(fake.shard_map('db', ['n1@h', 'n2@h']), _rev='4-abc',
               changelog=[['add', '0-7', 'n1@h'], ['add', '0-7', 'n2@h'],
                          ['delete', '8-f', 'n1@h']], extra=[1])
    renamed = restore_impl.rename_node(doc, 'n1@h', 'x@h')
    assert list(renamed['by_node']) == ['x@h', 'n2@h']
    assert all(nodes == ['x@h', 'n2@h']
               for nodes in renamed['by_range'].values())
    assert renamed['changelog'] == [['add', '0-7', 'x@h'],
                                    ['add', '0-7', 'n2@h'],
                                    ['delete', '8-f', 'x@h']]
    for field in ('_id', '_rev', 'shard_suffix', 'props', 'extra'):
        assert renamed[field] == doc[field]
    assert doc['by_node'] == {'n1@h': list(fake.Q2_RANGES),
                              'n2@h': list(fake.Q2_RANGES)}
