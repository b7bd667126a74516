"""The CouchDB helper of the scenario tests.

It reaches an instance the way a tenant does, over CouchDB's HTTP API with
a user's credentials, and knows CouchDB's side of every scenario: the data
sets are documents in the helper user's database, names follow CouchDB's
rules, configuration values are read back as root from the server's
configuration API (``/_node/_local/_config`` on 3.x, ``/_config`` on 1.x).
"""

import hashlib
from urllib import parse

import requests

from integration.scenario.helpers import test_helper

TIMEOUT = 30


class CouchDBError(AssertionError):
    """CouchDB answered a request with an error."""


class CouchDBClient:
    """One user's HTTP session on one instance's CouchDB."""

    def __init__(self, host, username, password):
        self.host = host.rstrip('/')
        self.username = username
        self.session = requests.Session()
        self.session.auth = (username, password)

    def url(self, *segments):
        return '/'.join([self.host] + [parse.quote(s, safe='')
                                       for s in segments])

    def request(self, method, *segments, expect=(200, 201, 202), **kwargs):
        kwargs.setdefault('timeout', TIMEOUT)
        answer = self.session.request(method, self.url(*segments), **kwargs)
        if expect and answer.status_code not in expect:
            raise CouchDBError('%s %s as %s: %s %s' % (
                method, '/'.join(segments) or '/', self.username,
                answer.status_code, answer.text.strip()[:300]))
        return answer

    def get(self, *segments, **kwargs):
        return self.request('GET', *segments, **kwargs).json()

    def config(self, *segments):
        """The path of the server's configuration API, or of a value in it:
        3.x answers ``GET /_up``, 1.x has no such endpoint."""
        up = requests.get(self.url('_up'), timeout=TIMEOUT)
        prefix = (('_node', '_local', '_config') if up.status_code == 200
                  else ('_config',))
        return prefix + segments

    def status(self, method, *segments, **kwargs):
        """The HTTP status CouchDB answers, whatever it is."""
        return self.request(method, *segments, expect=(), **kwargs
                            ).status_code

    def can_read(self, database):
        return self.status('GET', database) == 200

    def write(self, database, doc_id, body):
        """Write one document; CouchDB's status (201, 401, 403...)."""
        return self.status('PUT', database, doc_id, json=body)

    def bulk_docs(self, database, docs):
        rows = self.request('POST', database, '_bulk_docs',
                            json={'docs': docs}).json()
        failed = [row for row in rows if 'error' in row]
        if failed:
            raise CouchDBError('%d of %d documents refused in %s: %s' % (
                len(failed), len(docs), database, failed[:3]))
        return rows

    def docs_with_prefix(self, database, prefix):
        """Every document whose id starts with ``prefix``, in id order."""
        rows = self.get(database, '_all_docs', params={
            'startkey': '"%s"' % prefix, 'endkey': '"%s\ufff0"' % prefix,
            'include_docs': 'true'})['rows']
        return [row['doc'] for row in rows]

    def config_value(self, section, key):
        """A server setting, or None (needs an admin: root)."""
        answer = self.request('GET', *self.config(section, key),
                              expect=(200, 404))
        return answer.json() if answer.status_code == 200 else None


class CouchDBHelper(test_helper.TestHelper):
    """CouchDB's answers to what the scenario runners ask."""

    def __init__(self):
        self.credentials = {'name': 'lite', 'password': 'litepass',
                            'database': 'firstdb'}
        self.root_credentials = {'name': 'root',
                                 'password': 'scenario-root-pw'}

    def create_client(self, host, username, password):
        return CouchDBClient(host, username, password)

    def get_helper_credentials(self):
        return dict(self.credentials)

    def get_helper_credentials_root(self):
        return dict(self.root_credentials)

    # The data sets: one document per item in the helper's database.
    @staticmethod
    def _doc(label, n):
        return {'_id': '%s-%08d' % (label, n), 'set': label, 'n': n,
                # Not compressible to nothing, so backups have some size.
                'payload': hashlib.sha256(
                    b'%s:%d' % (label.encode(), n)).hexdigest() * 2}

    def add_actual_data(self, client, label, start, size, batch=1000):
        database = self.credentials['database']
        for first in range(start, start + size, batch):
            last = min(first + batch, start + size)
            client.bulk_docs(database, [self._doc(label, n)
                                        for n in range(first, last)])

    def verify_actual_data(self, client, label, start, size):
        docs = client.docs_with_prefix(self.credentials['database'],
                                       label + '-')
        expected = [self._doc(label, n) for n in range(start, start + size)]
        if len(docs) != size:
            raise AssertionError('the %s data set on %s has %d documents, '
                                 'not %d' % (label, client.host, len(docs),
                                             size))
        for doc, want in zip(docs, expected, strict=True):
            got = {k: v for k, v in doc.items() if not k.startswith('_')}
            if doc['_id'] != want['_id'] or got != {
                    k: v for k, v in want.items() if k != '_id'}:
                raise AssertionError('the %s data set on %s: %s differs' % (
                    label, client.host, doc['_id']))

    def count_actual_data(self, client, label):
        database = self.credentials['database']
        if not client.can_read(database):
            return 0
        return len(client.docs_with_prefix(database, label + '-'))

    def remove_actual_data(self, client, label, start, size):
        database = self.credentials['database']
        docs = client.docs_with_prefix(database, label + '-')
        client.bulk_docs(database, [
            {'_id': d['_id'], '_rev': d['_rev'], '_deleted': True}
            for d in docs])

    # Names: valid ones for the actions groups, and the ones CouchDB (and
    # so the agent) must refuse, shell metacharacters included.
    def get_valid_database_definitions(self):
        return ['scenario_db1', 'scenario-db2', 'scenario$(db3)+']

    def get_invalid_database_names(self):
        return ['Upper', '_system', 'has space', 'db;rm -rf /', '../etc']

    def get_valid_user_definitions(self):
        return [{'name': 'scenario_user1', 'password': 'user1-pw',
                 'databases': ['scenario_db1']},
                {'name': 'scenario_user2', 'password': 'user2-pw',
                 'databases': []}]

    def get_invalid_user_names(self):
        return ['eve;id', 'os_admin', 'has space']

    # Configuration groups: values CouchDB applies live, one that needs a
    # restart, and groups the validation rules refuse.
    def get_dynamic_group(self):
        return {'couchdb/max_dbs_open': 321, 'log/level': 'warning'}

    def get_non_dynamic_group(self, kind):
        """A setting CouchDB reads only at start, in the rules of the
        server's version (validation-rules.json for 3.x, the 1.6 file)."""
        if kind == 'pouchdb':
            return {'httpd/max_connections': 512}
        return {'chttpd_auth_lockout/max_lifetime': 120000}

    def get_invalid_groups(self):
        return [{'couchdb/max_dbs_open': 1},
                {'couchdb/max_dbs_open': 400, 'admins/root': 'x'},
                {'no_such/setting': 1}]

    def get_configuration_value(self, name, host):
        section, key = name.split('/', 1)
        return self.root_client(host).config_value(section, key)
