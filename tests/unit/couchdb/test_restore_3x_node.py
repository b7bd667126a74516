"""The restore's helpers for CouchDB 3.x shard maps, without a server.

A restore onto another node name (the shard maps moved, uuid, admins,
verification) runs on two real CouchDB 3.5 nodes in
tests/functional/couchdb/test_restore_node.py; the backup of a cluster's
node, refused, in tests/functional/couchdb/test_restore_cluster_backup.py.
"""

from trove.guestagent.strategies.restore.experimental import (
    couchdb_impl as restore_impl)

try:
    from . import fake_couchdb3 as fake
except ImportError:
    import fake_couchdb3 as fake


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
