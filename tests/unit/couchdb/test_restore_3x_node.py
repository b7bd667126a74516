"""Restoring the backup of a CouchDB 3.x cluster's node: refused.

Only this needs the fake: shard maps that place databases on several
nodes, which one real node cannot hold.  A restore on another node name
(the shard maps moved, uuid, admins, verification) runs on two real
CouchDB 3.5 nodes in tests/functional/couchdb/test_restore_node.py.

The backup metadata is the real backup strategy's, from one fake 3.x node
(``couchdb@old``); its data directory lands on another fake node
(``couchdb@new``) the way extraction would put the files there
(``fake.copy_data``: databases and ``_dbs``, never the configuration),
and the real restore strategy runs from ``restore()`` on.
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

    def _chain(self):
        return [restore_impl.Link('file:///b-1', None, None)]

    def _extract(self, chain):
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


def _restore(app, source, server, meta):
    _Restore(app, source, server, meta).restore()


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


# -- the helpers ----------------------------------------------------------

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
