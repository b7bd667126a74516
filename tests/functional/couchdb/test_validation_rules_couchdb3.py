"""Every rule of validation-rules.json against a real CouchDB 3.5 node.

Two things are shown for each rule.  Its key is a setting CouchDB 3.5 has:
in the node's configuration or in the release's ``etc/default.ini``, which
documents most settings commented out (``;max_dbs_open = 500``); the
configuration API takes any key and any string, so that is the check that
counts for the name.  And every bound of the rule (min and max, true and
false, each allowed value), written as the agent writes it, is a value
CouchDB honours: it changes what CouchDB does, or what CouchDB reports it
uses.  Reading a value back proves nothing: a bad integer or boolean makes
CouchDB fall back to its default (or stop following the setting), a bad
choice makes it refuse writes or stop.  So a wrong min, max, choice or
type in the rules file fails a test here.

Each test names the rules it gives evidence for (``@evidence``), and every
rule must have some.  Where CouchDB shows nothing over HTTP (the logger's
level, a replication job's options, the query servers' timeout, the
lockout's lifetime) a test asks the node's own Erlang runtime, through the
release's ``erl_call`` and the node's cookie.

One node serves the module (a missing server fails the tests, it never
skips them); each test deletes what it set.  Two settings CouchDB reads
only at start are shown across restarts of that node.
"""

import configparser
import contextlib
import os
import re
import secrets
import subprocess
import time

import pytest
import requests

from integration.services import base
from integration.services import couchdb3
from integration.services.fixtures import start_or_fail
from trove.guestagent.datastore.experimental.couchdb import configuration

RULES = configuration.load_rules('3')
RULES_1_6 = configuration.load_rules('1')
# A value for each free-form string setting (the others have their
# allowed values).
SAMPLE_STRINGS = {
    'cors/origins': 'https://app.example.com, https://admin.example.com',
    'cors/methods': 'GET, PUT, POST, HEAD, DELETE',
    'cors/headers': 'accept, authorization, content-type, origin',
}
# "[section]" or ";[section]", and "key = value" or ";key = value": a
# commented setting has no space after its semicolon, prose has one.
_SECTION = re.compile(r'^;?\[([^\]]+)\]\s*$')
_SETTING = re.compile(r'^;?([^\s;=\[][^=]*?)\s*=')
# The node's replication scheduler looks at its jobs every second, not
# every minute (it starts a job beyond max_jobs - 1 only then).
TEST_SETTINGS = """\
[replicator]
interval = 1000
"""
TIMEOUT = 30
WAIT = 30
EVIDENCE = set()


def evidence(*names):
    """Mark a test as the evidence for the rules ``names``."""
    EVIDENCE.update(names)
    return lambda test: test


def default_ini_settings(path):
    """{section: {key}} of default.ini, commented settings included."""
    settings, section = {}, None
    for line in path.read_text(encoding='utf-8').splitlines():
        header = _SECTION.match(line)
        if header:
            section = header.group(1)
            settings.setdefault(section, set())
            continue
        setting = _SETTING.match(line)
        if setting and section is not None:
            settings[section].add(setting.group(1))
    return settings


def bounds(rule):
    """The values of ``rule``'s bounds, as the agent writes them."""
    if rule.type in ('integer', 'float'):
        return [rule.check(rule.min), rule.check(rule.max)]
    if rule.type == 'boolean':
        return [rule.check(True), rule.check(False)]
    if rule.choices:
        return [rule.check(choice) for choice in rule.choices]
    assert rule.name in SAMPLE_STRINGS, (
        "%s is a free-form string: give it a value in SAMPLE_STRINGS"
        % rule.name)
    return [rule.check(SAMPLE_STRINGS[rule.name])]


def live(name):
    """The rule ``name``, which must say CouchDB takes it at run time."""
    rule = RULES[name]
    assert not rule.restart_required, (
        '%s is shown here taking effect without a restart' % name)
    return rule


def wait_for(predicate, what, timeout=WAIT):
    """``predicate()``'s first true value within ``timeout`` (scaled)."""
    for _ in base.polling_loop(base.scaled(timeout), interval=0.2):
        value = predicate()
        if value:
            return value
    raise AssertionError('%s: not within %s s' % (what, timeout))


# -- the node -----------------------------------------------------------------

class Node:
    """The module's CouchDB 3.5 node, as its server admin."""

    def __init__(self, server):
        self.server = server
        self.url = server.url
        self.session = server.session()

    def request(self, method, path, **kwargs):
        kwargs.setdefault('timeout', TIMEOUT)
        return self.session.request(method, self.url + path, **kwargs)

    def config_url(self, name):
        return '/_node/_local/_config/' + name

    def set(self, name, value):
        """Set ``name`` to ``value`` through the configuration API."""
        answer = self.request('PUT', self.config_url(name), json=value)
        assert answer.status_code == 200, (name, value, answer.text)

    @contextlib.contextmanager
    def configured(self, values):
        """{rule name: value as the agent writes it} set through the
        configuration API while in the block, deleted after."""
        try:
            for name, value in values.items():
                self.set(name, value)
            yield
        finally:
            for name in values:
                self.request('DELETE', self.config_url(name))

    def log_size(self):
        return self.server.log.stat().st_size

    def logged_since(self, offset):
        """What CouchDB logged after ``offset`` bytes of its log."""
        with open(self.server.log, 'rb') as log:
            log.seek(offset)
            return log.read().decode(errors='replace')

    def restart(self):
        """Stop the node and start it again (its files stay)."""
        self.server.stop()
        start_or_fail(self.server)

    def erlang(self, expression):
        """What the Erlang ``expression`` evaluates to in the node, as the
        text erl_call prints (``{ok, Value}`` unwrapped)."""
        home = self.server.workdir / 'erl_call'
        cookie = home / '.erlang.cookie'
        if not cookie.exists():
            home.mkdir(mode=0o700, exist_ok=True)
            vm_args = (self.server.config_dir / 'vm.args').read_text()
            cookie.write_text(re.search(r'^-setcookie (\S+)', vm_args,
                                        re.M).group(1))
            cookie.chmod(0o400)
        erl_call = sorted(couchdb3.couchdb_home().glob('erts-*/bin/erl_call'))
        assert erl_call, 'the CouchDB release has no erl_call'
        env = dict(os.environ, HOME=str(home),
                   ERL_EPMD_PORT=str(self.server.epmd_port),
                   ERL_EPMD_ADDRESS='127.0.0.1')
        done = subprocess.run(
            [str(erl_call[-1]), '-name', self.server.node, '-e'],
            input=expression + '\n', capture_output=True, text=True,
            env=env, timeout=base.scaled(30), check=True)
        answer = re.fullmatch(r'\{ok, (.*)\}', done.stdout.strip(), re.S)
        assert answer, (expression, done.stdout, done.stderr)
        return answer.group(1)

    def create_db(self, name, **params):
        answer = self.request('PUT', '/' + name, params=params)
        assert answer.status_code in (201, 202), (name, answer.text)

    def delete_db(self, name):
        self.request('DELETE', '/' + name)

    def sizes(self, db):
        return self.request('GET', '/' + db).json()['sizes']


@pytest.fixture(scope='module')
def node(tmp_path_factory):
    server = couchdb3.CouchDB3Server(tmp_path_factory.mktemp('couchdb3'))
    try:
        start_or_fail(_with_test_settings(server))
        couch = Node(server)
        for db in ('_users', '_replicator'):
            couch.create_db(db)
        yield couch
    finally:
        server.stop()


def _with_test_settings(server):
    """``server`` laid out with TEST_SETTINGS in its local.d."""
    try:
        server.install()
    except base.ServiceNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)
    (server.config_dir / 'local.d' / '10-tests.ini').write_text(
        TEST_SETTINGS)
    return server


@pytest.fixture
def scratch(node):
    """``scratch(name)``: a new database of the test, deleted after."""
    made = []

    def make(name, **params):
        name = '%s-%s' % (name, secrets.token_hex(3))
        node.create_db(name, **params)
        made.append(name)
        return name

    yield make
    for name in made:
        node.delete_db(name)


@pytest.fixture(scope='module')
def known_settings(node):
    """{section: {key}} the node has or its default.ini documents."""
    settings = default_ini_settings(couchdb3.couchdb_home() / 'etc' /
                                    'default.ini')
    answer = node.request('GET', '/_node/_local/_config')
    answer.raise_for_status()
    for section, values in answer.json().items():
        settings.setdefault(section, set()).update(values)
    return settings


# -- the keys -----------------------------------------------------------------

def test_default_ini_is_read_with_its_commented_settings():
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    path = couchdb3.couchdb_home() / 'etc' / 'default.ini'
    parser.read(path)
    settings = default_ini_settings(path)
    assert set(parser['chttpd']) <= settings['chttpd']
    assert {'max_dbs_open', 'file_compression'} <= settings['couchdb']
    assert 'min_priority' in settings['smoosh.ratio_dbs']
    assert 'timeout' not in settings['couch_httpd_auth']   # prose there


@pytest.mark.parametrize('name', sorted(RULES))
def test_every_rule_is_a_couchdb_3_5_setting(known_settings, name):
    rule = RULES[name]
    assert rule.key in known_settings.get(rule.section, ()), (
        "CouchDB 3.5 has no setting %s" % name)


@pytest.mark.parametrize('name', sorted(set(RULES_1_6) - set(RULES)))
def test_every_rule_left_to_1_6_is_no_couchdb_3_5_setting(known_settings,
                                                          name):
    rule = RULES_1_6[name]
    assert rule.key not in known_settings.get(rule.section, ())


def test_every_rule_has_couchdb_evidence_for_its_bounds():
    assert sorted(set(RULES) - EVIDENCE) == []
    assert sorted(EVIDENCE - set(RULES)) == []


# -- [couchdb] ----------------------------------------------------------------

@evidence('couchdb/max_document_size')
def test_a_document_above_max_document_size_is_refused(node, scratch):
    rule = live('couchdb/max_document_size')
    db = scratch('docs')
    # Above CouchDB's default limit, 8,000,000 bytes.
    big = {'v': 'x' * 9000000}
    low, high = bounds(rule)
    with node.configured({rule.name: low}):
        answer = node.request('PUT', '/%s/small' % db, json={})
        assert (answer.status_code, answer.json().get('error')) == (
            413, 'document_too_large')
    with node.configured({rule.name: high}):
        assert node.request('PUT', '/%s/big' % db,
                            json=big).status_code == 201
    assert node.request('PUT', '/%s/big-again' % db,
                        json=big).status_code == 413


def _open_files(node):
    """The database and index files CouchDB has open."""
    system = node.request('GET', '/_node/_local/_system').json()
    return system['message_queues']['couch_file'].get('count', 0)


@evidence('couchdb/max_dbs_open')
def test_max_dbs_open_bounds_the_open_database_files(node, scratch):
    """CouchDB divides max_dbs_open among its couch_server processes, one
    per scheduler (at least one database each); each closes its least
    recently used idle database to open another."""
    rule = live('couchdb/max_dbs_open')
    schedulers = int(node.erlang('erlang:system_info(schedulers).'))
    count = 3 * max(rule.min, schedulers)
    for value in bounds(rule):
        limit = schedulers * max(1, int(value) // schedulers)
        with node.configured({rule.name: value}):
            before = _open_files(node)
            for n in range(count):
                db = scratch('open-%d' % n, q=1)
                assert node.request('PUT', '/%s/doc' % db,
                                    json={}).status_code == 201
            opened = _open_files(node) - before
        if limit < count:
            assert opened <= limit, (value, opened)
        else:
            assert opened >= count, (value, opened)


def _compressed_size(node, db):
    """sizes.active of ``db`` after one compressible 120 KB document."""
    words = ['couch', 'relax', 'replica', 'trove', 'shard', 'node', 'view']
    text = ' '.join(words[(n * 7919) % len(words)] for n in range(20000))
    assert node.request('PUT', '/%s/doc' % db,
                        json={'text': text}).status_code == 201
    sizes = node.sizes(db)
    return sizes['active'], sizes['external']


@evidence('couchdb/file_compression')
def test_every_file_compression_is_applied_to_new_databases(node, scratch):
    """A method CouchDB does not know makes every write fail with 500."""
    rule = live('couchdb/file_compression')
    active = {}
    for value in bounds(rule):
        with node.configured({rule.name: value}):
            db = scratch('compressed', q=1)
            active[value], external = _compressed_size(node, db)
    assert active['none'] >= external
    assert active['snappy'] < external
    deflate = [v for v in active if v.startswith('deflate_')]
    assert all(active[v] < active['snappy'] for v in deflate)
    assert active['deflate_1'] > active['deflate_9']


def _attachment_overhead(node, db):
    """sizes.active less the attachment of 256 KiB, sent in 512-byte HTTP
    chunks: CouchDB writes each attachment_stream_buffer_size bytes it
    holds as one piece, and every piece costs a little."""
    data = os.urandom(256 * 1024)

    def chunks():
        for start in range(0, len(data), 512):
            yield data[start:start + 512]

    answer = node.request('PUT', '/%s/doc/blob' % db, data=chunks(),
                          headers={'Content-Type':
                                   'application/octet-stream'})
    assert answer.status_code == 201, answer.text
    return node.sizes(db)['active'] - len(data)


@evidence('couchdb/attachment_stream_buffer_size')
def test_attachments_are_written_in_pieces_of_the_buffer_size(node,
                                                              scratch):
    rule = live('couchdb/attachment_stream_buffer_size')
    low, high = bounds(rule)
    overhead = {}
    for name, value in (('min', low), ('default', None), ('max', high)):
        with node.configured({rule.name: value} if value else {}):
            overhead[name] = _attachment_overhead(node, scratch('att', q=1))
    # CouchDB's default is 4096 bytes: the minimum writes more pieces,
    # the maximum one.
    assert overhead['min'] > overhead['default'] > overhead['max']


# -- [chttpd] and [cors] ------------------------------------------------------

@evidence('chttpd/max_http_request_size')
def test_a_request_above_max_http_request_size_is_refused(node, scratch):
    rule = live('chttpd/max_http_request_size')
    db = scratch('requests')
    low, high = bounds(rule)
    # A request body just under 2 KiB, one of about 900 bytes.
    large, small = {'v': 'x' * 2000}, {'v': 'x' * 900}
    with node.configured({rule.name: low}):
        assert node.request('PUT', '/%s/small' % db,
                            json=small).status_code == 201
        assert node.request('PUT', '/%s/large' % db,
                            json=large).status_code == 413
    with node.configured({rule.name: high}):
        assert node.request('PUT', '/%s/large' % db,
                            json=large).status_code == 201


def _preflight(node, origin, method='GET', headers=None):
    """The CORS headers of a preflight request from ``origin``."""
    request_headers = {'Origin': origin,
                       'Access-Control-Request-Method': method}
    if headers:
        request_headers['Access-Control-Request-Headers'] = headers
    answer = node.request('OPTIONS', '/', headers=request_headers)
    return {k.lower(): v for k, v in answer.headers.items()
            if k.lower().startswith('access-control-')}


def _allowed_origin(node):
    """The origin a CORS preflight from https://app.example.com is
    allowed, or None."""
    return _preflight(node, 'https://app.example.com').get(
        'access-control-allow-origin')


@evidence('chttpd/enable_cors')
def test_cors_is_switched_on_and_off_live_as_its_rule_says(node):
    enable = live('chttpd/enable_cors')
    on, off = bounds(enable)
    with node.configured({'cors/origins': 'https://app.example.com'}):
        assert _allowed_origin(node) is None
        with node.configured({enable.name: on}):
            assert _allowed_origin(node) == 'https://app.example.com'
        with node.configured({enable.name: off}):
            assert _allowed_origin(node) is None


@evidence('cors/origins', 'cors/methods', 'cors/headers')
def test_cors_answers_with_the_origins_methods_and_headers_set(node):
    names = ('cors/origins', 'cors/methods', 'cors/headers')
    values = {name: bounds(live(name))[0] for name in names}
    with node.configured(dict(values, **{'chttpd/enable_cors': 'true'})):
        for origin in values['cors/origins'].split(', '):
            answer = _preflight(node, origin, 'PUT', 'authorization')
            assert answer['access-control-allow-origin'] == origin
            assert answer['access-control-allow-methods'] == values[
                'cors/methods']
            assert answer['access-control-allow-headers'] == 'authorization'
        assert _preflight(node, 'https://elsewhere.example.com') == {}
        assert 'access-control-allow-methods' not in _preflight(
            node, 'https://app.example.com', 'PATCH')
        assert 'access-control-allow-headers' not in _preflight(
            node, 'https://app.example.com', 'GET', 'x-not-listed')


@evidence('cors/credentials')
def test_cors_credentials_are_allowed_as_set(node):
    rule = live('cors/credentials')
    origin = 'https://app.example.com'
    with node.configured({'chttpd/enable_cors': 'true',
                          'cors/origins': origin}):
        for value in bounds(rule):
            with node.configured({rule.name: value}):
                answer = node.request('GET', '/', headers={'Origin': origin})
                allowed = answer.headers.get(
                    'Access-Control-Allow-Credentials')
            assert allowed == ('true' if value == 'true' else None), value


# -- [chttpd_auth] and [chttpd_auth_lockout] ----------------------------------

def _login(node, name, password):
    """The status of a Basic-auth GET /_session as ``name``."""
    return requests.get(node.url + '/_session', auth=(name, password),
                        timeout=TIMEOUT).status_code


@evidence('chttpd_auth/timeout')
def test_a_session_cookie_lasts_the_auth_timeout(node):
    rule = live('chttpd_auth/timeout')
    for value in bounds(rule):
        with node.configured({rule.name: value}):
            answer = requests.post(
                node.url + '/_session', timeout=TIMEOUT,
                json=dict(zip(('name', 'password'), node.server.admin,
                              strict=True)))
        assert answer.status_code == 200
        assert 'Max-Age=%s;' % value in answer.headers['Set-Cookie']


@pytest.fixture
def make_user(node):
    """``make_user()``: a new _users user's (name, password)."""
    made = []

    def make():
        name, password = 'user-%s' % secrets.token_hex(4), 'Pw-1'
        doc_id = '/_users/org.couchdb.user:' + name
        answer = node.request('PUT', doc_id, json={
            'name': name, 'password': password, 'roles': [],
            'type': 'user'})
        assert answer.status_code in (201, 202), answer.text
        made.append(doc_id)
        wait_for(lambda: _login(node, name, password) == 200,
                 'user %s logs in' % name)
        return name, password

    yield make
    for doc_id in made:
        rev = node.request('GET', doc_id).json()['_rev']
        node.request('DELETE', doc_id, params={'rev': rev})


def _fail_logins(node, name, times):
    for _ in range(times):
        assert _login(node, name, 'wrong-password') == 401


@evidence('chttpd_auth_lockout/threshold')
def test_a_user_is_locked_out_after_threshold_failed_logins(node,
                                                            make_user):
    rule = live('chttpd_auth_lockout/threshold')
    for value in bounds(rule):
        with node.configured({rule.name: value}):
            name, password = make_user()
            _fail_logins(node, name, int(value) - 1)
            assert _login(node, name, password) == 200
            name, password = make_user()
            _fail_logins(node, name, int(value))
            assert _login(node, name, password) == 403


# -- [log], [uuids], [query_server_config] ------------------------------------

@evidence('log/level')
def test_the_logger_takes_every_log_level(node):
    """CouchDB logs each request at notice level; an unknown level makes
    its logger fall back to info."""
    rule = live('log/level')
    for value in bounds(rule):
        probe = '/log-probe-%s-%s' % (value, secrets.token_hex(3))
        with node.configured({rule.name: value}):
            assert node.erlang('couch_log_config:get(level).') == value
            node.request('GET', probe)
            if rule.choices.index(value) <= rule.choices.index('notice'):
                wait_for(lambda probe=probe:
                         probe in node.server.log.read_text(),
                         'the request %s in the log' % probe)


def _uuids(node):
    return node.request('GET', '/_uuids', params={'count': 10}).json()[
        'uuids']


def _from_now(hex_micros):
    """How far the time in ``hex_micros`` (microseconds since 1970) is
    from now, in seconds."""
    return abs(int(hex_micros, 16) / 1e6 - time.time())


# The shape of the ids of each algorithm, as default.ini documents them.
UUID_SHAPES = {
    'random': lambda ids: len({i[:26] for i in ids}) == len(ids),
    'sequential': lambda ids: (len({i[:26] for i in ids}) == 1
                               and ids == sorted(ids)),
    'utc_random': lambda ids: (ids == sorted(ids)
                               and _from_now(ids[0][:14]) < 86400),
    'utc_id': lambda ids: (all(len(i) == 14 for i in ids)
                           and _from_now(ids[0]) < 86400),
}


@evidence('uuids/algorithm')
def test_uuids_are_made_by_every_algorithm(node):
    """An unknown algorithm stops CouchDB 3.5 at once."""
    rule = live('uuids/algorithm')
    for value in bounds(rule):
        with node.configured({rule.name: value}):
            ids = _uuids(node)
        assert all(re.fullmatch('[0-9a-f]+', i) for i in ids), ids
        assert len(set(ids)) == len(ids)
        assert value in UUID_SHAPES, (
            'CouchDB 3.5 documents no uuids algorithm %s' % value)
        assert UUID_SHAPES[value](ids), (value, ids)
        if value != 'utc_id':
            assert all(len(i) == 32 for i in ids), (value, ids)


# A reduce function whose output grows tenfold.
GROWING_REDUCE = ('function(keys, values, rereduce) { var out = []; '
                  'for (var i = 0; i < 10; i++) out = out.concat(values); '
                  'return out; }')


@evidence('query_server_config/reduce_limit')
def test_a_growing_reduce_is_refused_under_the_reduce_limit(node, scratch):
    rule = live('query_server_config/reduce_limit')
    db = scratch('reduce')
    docs = [{'_id': 'doc-%03d' % n, 'n': n} for n in range(200)]
    node.request('POST', '/%s/_bulk_docs' % db, json={'docs': docs})
    for value in bounds(rule):
        with node.configured({rule.name: value}):
            # A new index, built under this setting.
            node.request('PUT', '/%s/_design/%s' % (db, value), json={
                'views': {'v': {'map': 'function(doc) { emit(doc.n, 1); }',
                                'reduce': GROWING_REDUCE}}})
            rows = node.request('GET', '/%s/_design/%s/_view/v'
                                % (db, value)).json()['rows']
        error = rows[0].get('error')
        assert error == ('reduce_overflow_error' if value == 'true'
                         else None), (value, rows[0])


# -- [replicator] -------------------------------------------------------------

# The option of a replication job each rule sets the default of.
JOB_OPTIONS = {
    'replicator/worker_processes': 'worker_processes',
    'replicator/http_connections': 'http_connections',
    'replicator/connection_timeout': 'connection_timeout',
    'replicator/retries_per_request': 'retries',
    'replicator/checkpoint_interval': 'checkpoint_interval',
}
# The options of the node's replication jobs, as its scheduler holds them.
READ_JOB_OPTIONS = """
Keys = [%s],
Find = fun F(T) when is_tuple(T), tuple_size(T) =:= 2,
                     is_atom(element(1, T)) ->
               case lists:member(element(1, T), Keys) of
                   true -> [T];
                   false -> F(element(2, T))
               end;
           F(T) when is_tuple(T) -> F(tuple_to_list(T));
           F([H | R]) -> F(H) ++ F(R);
           F(_) -> []
       end,
[lists:usort(Find(Job)) || Job <- ets:tab2list(couch_replicator_scheduler)].
""" % ', '.join(sorted(JOB_OPTIONS.values()))
SOURCE_DOCS = 3


@pytest.fixture
def replications(node, scratch):
    """``replications.start(target)``: a continuous replication of a
    database of 3 documents into ``target``; every one is cancelled
    after the test."""
    source = scratch('source')
    for n in range(SOURCE_DOCS):
        node.request('PUT', '/%s/doc-%d' % (source, n), json={'n': n})
    ids = []

    def endpoint(db):
        user, password = node.server.admin
        return {'url': '%s/%s' % (node.url, db),
                'auth': {'basic': {'username': user, 'password': password}}}

    def start(target):
        answer = node.request('POST', '/_replicate', json={
            'source': endpoint(source), 'target': endpoint(target),
            'create_target': True, 'continuous': True})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()['_local_id'])
        return ids[-1]

    yield start
    for replication_id in ids:
        node.request('POST', '/_replicate', json={
            'replication_id': replication_id, 'cancel': True})


def _jobs(node):
    return node.request('GET', '/_scheduler/jobs').json()['jobs']


def _replicated(node, target):
    """Whether ``target`` has the source's documents; fails at once when
    CouchDB reports the job crashed."""
    for job in _jobs(node):
        crashes = [h for h in job['history'] if h['type'] == 'crashed']
        assert not crashes, crashes
    answer = node.request('GET', '/' + target)
    return answer.status_code == 200 and answer.json()[
        'doc_count'] == SOURCE_DOCS


@evidence(*JOB_OPTIONS)
@pytest.mark.parametrize('bound', ['min', 'max'])
def test_a_replication_runs_with_the_bounds_of_the_replicator_rules(
        node, scratch, replications, bound):
    rules = [live(name) for name in JOB_OPTIONS]
    values = {rule.name: rule.check(getattr(rule, bound)) for rule in rules}
    target = 'replica-%s-%s' % (bound, secrets.token_hex(3))
    with node.configured(values):
        replications(target)
        try:
            wait_for(lambda: _replicated(node, target),
                     'the documents replicated')
            options = dict(re.findall(r'\{(\w+), (\d+)\}',
                                      node.erlang(READ_JOB_OPTIONS)))
            tasks = node.request('GET', '/_active_tasks').json()
        finally:
            node.delete_db(target)
    assert options == {key: values[name]
                       for name, key in JOB_OPTIONS.items()}
    assert [task['checkpoint_interval'] for task in tasks] == [
        int(values['replicator/checkpoint_interval'])]


@evidence('replicator/max_jobs')
def test_max_jobs_bounds_the_running_replications(node, replications):
    """CouchDB starts a new job at once while fewer than max_jobs - 1 run,
    and at its next look at the jobs up to max_jobs.  (It stops following
    max_jobs for a while when the setting is deleted, so one bound
    replaces the other.)"""
    rule = live('replicator/max_jobs')
    started = int(rule.min) + 1
    try:
        for value in bounds(rule):
            offset = node.log_size()
            node.set(rule.name, value)
            wait_for(lambda value=value, offset=offset:
                     'couch_replicator_scheduler: max_jobs set to '
                     '%s\n' % value in node.logged_since(offset),
                     'the scheduler taking max_jobs %s' % value)
            ids = [replications('jobs-%d-%s' % (n, secrets.token_hex(3)))
                   for n in range(started)]

            def running(ids=ids):
                return [job['id'] for job in _jobs(node)
                        if job['id'] in ids and job['pid']]

            allowed = min(int(value), started)
            wait_for(lambda allowed=allowed: len(running()) >= allowed,
                     '%d replications running' % allowed)
            assert len(running()) == allowed, (value, running())
            for replication_id in ids:
                node.request('POST', '/_replicate', json={
                    'replication_id': replication_id, 'cancel': True})
    finally:
        node.request('DELETE', node.config_url(rule.name))


# -- read at start ------------------------------------------------------------

# What CouchDB holds for them: the timeout its query server processes get
# (couch_proc_manager's configuration), and the lifetime of the lockout's
# failure counts (the state of its cache, couch_lockout_lru).
PROC_TIMEOUT = ('proplists:get_value(<<"timeout">>, '
                'element(1, element(2, sys:get_state(couch_proc_manager)))).')
LOCKOUT_LIFETIME = ('{st, _, _, _, _, _, Lifetime, _, _} = '
                    'sys:get_state(couch_lockout_lru), Lifetime.')
# An update function that runs 1.5 s: longer than the minimum
# os_process_timeout, shorter than CouchDB's default (5 s).
SLOW_UPDATE = ('function(doc, req) { var t = Date.now(); '
               'while (Date.now() - t < 1500) {} return [null, "ok"]; }')


def _lock_out(node, name):
    """Fail logins as ``name`` until CouchDB locks it out."""
    wait_for(lambda: _login(node, name, 'wrong-password') == 403,
             'the lockout of %s' % name)


def _slow_update(node, db):
    """The status and error of the slow update function."""
    answer = node.request('POST', '/%s/_design/slow/_update/run' % db)
    return answer.status_code, (answer.json().get('error')
                                if answer.status_code != 200 else None)


@evidence('couchdb/os_process_timeout', 'chttpd_auth_lockout/max_lifetime')
def test_settings_read_at_start_take_effect_after_a_restart(
        node, scratch, make_user):
    """The query server processes keep the timeout couch_proc_manager read
    at start (it reads it again only for a [query_server_config] change);
    the lockout's cache is made at start."""
    timeout = RULES['couchdb/os_process_timeout']
    lifetime = RULES['chttpd_auth_lockout/max_lifetime']
    assert timeout.restart_required and lifetime.restart_required
    db = scratch('slow')
    node.request('PUT', '/%s/_design/slow' % db,
                 json={'updates': {'run': SLOW_UPDATE}})
    low = {rule.name: bounds(rule)[0] for rule in (timeout, lifetime)}
    high = {rule.name: bounds(rule)[1] for rule in (timeout, lifetime)}
    # One failed login locks a user out: several would take longer than
    # the shortest lifetime (each hashes the password 600,000 times).
    threshold = {'chttpd_auth_lockout/threshold': '1'}
    low.update(threshold)
    high.update(threshold)
    with node.configured(low):
        assert _slow_update(node, db) == (200, None)
        assert node.erlang(LOCKOUT_LIFETIME) != low[lifetime.name]
        node.restart()
        assert node.erlang(PROC_TIMEOUT) == low[timeout.name]
        assert _slow_update(node, db) == (500, 'os_process_error')
        assert node.erlang(LOCKOUT_LIFETIME) == low[lifetime.name]
        name, password = make_user()
        _lock_out(node, name)
        wait_for(lambda: _login(node, name, password) == 200,
                 'the lockout of %s ending' % name)
    with node.configured(high):
        node.restart()
        assert node.erlang(PROC_TIMEOUT) == high[timeout.name]
        assert _slow_update(node, db) == (200, None)
        assert node.erlang(LOCKOUT_LIFETIME) == high[lifetime.name]
        name, password = make_user()
        _lock_out(node, name)
        assert _login(node, name, password) == 403
