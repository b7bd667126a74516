"""The fake CouchDB of the unit tests answers as a real 3.5 node does.

tests/unit/couchdb/fake_couchdb3.py stands in for a server only where a
real one does not answer on demand (a server error, CouchDB 1.6's
``/_restart``).  What those tests read from it as 3.x, the same requests
to a real CouchDB 3.5 node must answer alike, status and body: ``GET
/_up`` (the health the agent reads), ``GET /`` anonymously and as the
server admin, and a 401 for a wrong password; and ``shard_map()`` must
build the ``_dbs`` document the node keeps for a database of two shards.
"""

import importlib.util
import pathlib
import re

import pytest
import requests

from integration.services import couchdb3
from integration.services.fixtures import start_or_fail


def _load_fake():
    """tests/unit/couchdb/fake_couchdb3.py (the tests are no package)."""
    path = (pathlib.Path(__file__).resolve().parents[2] / 'unit' /
            'couchdb' / 'fake_couchdb3.py')
    spec = importlib.util.spec_from_file_location('fake_couchdb3', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fake = _load_fake()
ADMIN = ('admin', 'admin-secret')
WHO = {'admin': ADMIN, 'nobody': None, 'wrong password': ('admin', 'no')}
# The server's own fields of GET /: the fake's uuid is its own.
ROOT_FIELDS = ('couchdb', 'version', 'vendor')


@pytest.fixture(scope='module')
def real(tmp_path_factory):
    node = couchdb3.CouchDB3Server(tmp_path_factory.mktemp('couchdb'),
                                   admin=ADMIN)
    try:
        yield start_or_fail(node)
    finally:
        node.stop()


@pytest.fixture(scope='module')
def imitation():
    server = fake.FakeCouchDB('3')
    server.set_admin(*ADMIN)
    server.start()
    yield server
    server.stop()


def _answer(url, path, who):
    answer = requests.get(url + path, auth=WHO[who], timeout=30)
    return answer.status_code, answer.json()


@pytest.mark.parametrize('who', sorted(WHO))
def test_up_answers_as_couchdb_3_5(real, imitation, who):
    assert _answer(imitation.url, '/_up', who) == _answer(real.url, '/_up',
                                                          who)


@pytest.mark.parametrize('who', sorted(WHO))
def test_the_root_answers_as_couchdb_3_5(real, imitation, who):
    (status, body), (expected_status, expected) = (
        _answer(imitation.url, '/', who), _answer(real.url, '/', who))
    assert status == expected_status
    if status != 200:
        assert body == expected
        return
    assert {k: body[k] for k in ROOT_FIELDS} == {
        k: expected[k] for k in ROOT_FIELDS}
    assert set(body) <= set(expected)
    assert re.fullmatch('[0-9a-f]{32}', body['uuid'])


def test_shard_map_is_the_dbs_document_of_couchdb_3_5(real):
    session = real.session()
    url = real.url + '/orders'
    assert session.put(url, params={'q': 2}, timeout=30).status_code == 201
    stored = session.get(real.url + '/_node/_local/_dbs/orders',
                         timeout=30).json()
    created = ''.join(map(chr, stored['shard_suffix']))
    assert re.fullmatch(r'\.\d+', created), stored['shard_suffix']
    built = fake.shard_map('orders', real.node, created=int(created[1:]))
    assert built == {k: v for k, v in stored.items() if k != '_rev'}
