"""tools/bench_couchdb_data.py: its documents, sizes and file kinds.

The node itself is not started here (building a data directory takes a
real CouchDB and tens of seconds: run the tool by hand).
"""

import argparse
import gzip
import importlib.util
import json
import os
import random

import pytest

from integration.services import base

_SPEC = importlib.util.spec_from_file_location(
    'bench_couchdb_data', base.REPO_ROOT / 'tools' / 'bench_couchdb_data.py')
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


@pytest.fixture(scope='module')
def vocab():
    return bench.Vocabulary(7)


def _docs(vocab, seed=7, count=200):
    out = {}
    for name, kind, auto_id, share in bench.DATABASES:
        db = bench.Database(name, kind, auto_id, share, 1, vocab, seed, 1)
        out[name] = [db.gen.document() for _ in range(count)]
    return out


def test_parse_size():
    assert bench.parse_size('256MiB') == 256 * 2 ** 20
    assert bench.parse_size('1G') == 2 ** 30
    assert bench.parse_size('300MB') == 300 * 10 ** 6
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_size('lots')


def test_documents_look_like_a_shop(vocab):
    docs = _docs(vocab)
    assert len(docs) == 20
    raw = b''
    for name, batch in docs.items():
        sizes = [len(json.dumps(d, separators=(',', ':'))) for d in batch]
        mean = sum(sizes) / len(sizes)
        assert 500 <= mean <= 1500, (name, mean)
        assert len({json.dumps(d, sort_keys=True) for d in batch}) == len(
            batch), name
        raw += b'\n'.join(json.dumps(d).encode() for d in batch)
    ratio = len(raw) / len(gzip.compress(raw, compresslevel=6))
    assert 2.5 < ratio < 4.5, ratio
    # The fields the views read are there.
    assert all(d['customer']['city'] for d in docs['orders'])
    assert all(d['address']['city'] for d in docs['customers'])
    assert all(d['created_at'][:4].isdigit() for d in docs['payments'])
    assert all('_id' not in d for d in docs['events'])
    assert len({d['_id'] for d in docs['orders']}) == len(docs['orders'])


def test_documents_are_deterministic(vocab):
    assert _docs(vocab, count=20) == _docs(bench.Vocabulary(7), count=20)
    assert _docs(vocab, count=20) != _docs(vocab, seed=8, count=20)


def test_update_is_a_second_revision(vocab):
    db = bench.Database('orders', 'order', False, 0.5, 1, vocab, 7, 4)
    docs, updates, body = db.next_batch()
    assert updates == 0 and len(json.loads(body)['docs']) == 4
    db.absorb(docs, 0, body, [{'ok': True, 'id': d['_id'], 'rev': '1-a'}
                              for d in docs])
    pending = len(db.pending)
    _docs2, updates, body = db.next_batch()
    assert updates == pending
    sent = json.loads(body)['docs'][4:]
    assert all(d['_rev'] == '1-a' and 'history' in d for d in sent)
    with pytest.raises(RuntimeError):
        db.absorb(docs, 0, body, [{'id': 'x', 'error': 'conflict'}])


def test_weights_are_lognormal_shares():
    weights = bench._split_weights(random.Random(7), 20)
    assert abs(sum(weights) - 1) < 1e-9
    assert max(weights) > 5 * min(weights)


def test_sizes_by_kind(tmp_path):
    files = {'_dbs.couch': 10,
             'shards/00000000-7fffffff/orders.1.couch': 100,
             'shards/00000000-7fffffff/_users.1.couch': 7,
             '.shards/00000000-7fffffff/orders.1_design/mrview/ab.view': 30}
    for rel, size in files.items():
        path = tmp_path / rel
        os.makedirs(path.parent, exist_ok=True)
        path.write_bytes(b'x' * size)
    assert bench.directory_size(tmp_path) == 147
    assert bench.sizes_by_kind(str(tmp_path)) == {
        'system': [2, 17], 'database': [1, 100], 'view': [1, 30]}
