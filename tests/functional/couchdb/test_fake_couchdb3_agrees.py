"""The fake CouchDB 3.x of the unit tests answers as a real 3.5 node does
where it models 3.x's security.

The same requests go to a real CouchDB 3.5 node and to
tests/unit/couchdb/fake_couchdb3.py, set up alike, as a server admin, a
user and nobody; the statuses and CouchDB's ``error`` must agree.
"""

import importlib.util
import pathlib

import pytest
import requests

from integration.services import couchdb3


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
BOB = ('bob', 'bob-pw')
BOB_ID = 'org.couchdb.user:bob'
WHO = {'admin': ADMIN, 'bob': BOB, 'nobody': None}
# (method, path, body): ``{who}`` in a path is the caller's name.
REQUESTS = [
    ('GET', '/_all_dbs', None),
    ('GET', '/_scheduler/docs', None),
    ('GET', '/_scheduler/docs/_replicator', None),
    ('GET', '/_node/_local/_config', None),
    ('PUT', '/new-{who}', None),
    ('GET', '/_users/' + BOB_ID, None),
    ('GET', '/_users/_security', None),
    ('GET', '/_replicator/_security', None),
    ('GET', '/_users/_all_docs', None),
    ('GET', '/_replicator/_all_docs', None),
    ('GET', '/_replicator/job', None),
    ('GET', '/shop/_changes', None),
    ('GET', '/shop', None),
    ('GET', '/shop/_security', None),
    ('PUT', '/shop/_security', {'members': {'roles': ['_admin']},
                                'admins': {'roles': ['_admin']}}),
    ('PUT', '/shop/doc-{who}', {'v': 1}),
    ('GET', '/open', None),
    ('PUT', '/open/doc-{who}', {'v': 1}),
    ('GET', '/granted', None),
    ('PUT', '/granted/doc-{who}', {'v': 1}),
    ('PUT', '/granted/_design/{who}', {'language': 'javascript'}),
    ('PUT', '/granted/_security', {'members': {'names': ['bob']}}),
    ('GET', '/_session', None),
]


def _set_up(url):
    """_users, _replicator, user bob, databases shop (as 3.x makes it:
    admin-only), open (no members) and granted (bob a member)."""
    admin = requests.Session()
    admin.auth = ADMIN
    for db in ('_users', '_replicator', 'shop', 'open', 'granted'):
        assert admin.put(url + '/' + db, timeout=30).status_code in (201, 202)
    assert admin.put(url + '/_users/' + BOB_ID, timeout=30, json={
        'name': 'bob', 'type': 'user', 'roles': [],
        'password': BOB[1]}).status_code in (201, 202)
    assert admin.put(url + '/open/_security', json={}, timeout=30).ok
    assert admin.put(url + '/granted/_security', timeout=30, json={
        'members': {'names': ['bob'], 'roles': []},
        'admins': {'names': [], 'roles': []}}).ok


def _answers(url):
    answers = {}
    for who, auth in WHO.items():
        session = requests.Session()
        session.auth = auth
        for method, path, body in REQUESTS:
            path = path.format(who=who)
            answer = session.request(method, url + path, json=body,
                                     timeout=30)
            error = answer.json().get('error') if (
                answer.status_code >= 400) else None
            answers[(who, method, path)] = (answer.status_code, error)
    return answers


@pytest.fixture
def real(tmp_path):
    node = couchdb3.CouchDB3Server(tmp_path / 'couchdb', admin=ADMIN)
    node.start()
    yield node
    node.stop()


@pytest.fixture
def imitation():
    server = fake.FakeCouchDB('3')
    server.set_admin(*ADMIN)
    server.start()
    yield server
    server.stop()


def test_the_fake_answers_as_couchdb_3_5_does(real, imitation):
    for server in (real, imitation):
        _set_up(server.url)
    expected, seen = _answers(real.url), _answers(imitation.url)
    differences = {key: (expected[key], seen[key]) for key in expected
                   if expected[key] != seen[key]}
    assert differences == {}, '\n'.join(
        '%s %s as %s: CouchDB %s, the fake %s' % (m, p, w, e, f)
        for (w, m, p), (e, f) in sorted(differences.items()))
