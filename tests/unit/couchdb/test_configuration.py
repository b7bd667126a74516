"""Configuration groups against the CouchDB fake: rules, file, live.

The rules of each API version are those of its file (validation-rules.json
for 3.x, validation-rules-1.6.json for 1.6); the agent reads the file of the
version its server speaks."""

import configparser
import json
import os

import pytest

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import configuration
from trove.guestagent.datastore.experimental.couchdb import service

try:
    from . import fake_couchdb3 as fake
except ImportError:
    import fake_couchdb3 as fake


def _app(conf, tmp_path, version):
    server = fake.FakeCouchDB(version)
    if version == '3':
        server.set_admin('admin', 'image-Admin-1')    # 3.x needs one
    server.start()
    etc = tmp_path / 'etc'
    conf.config(group='couchdb', host='127.0.0.1', port=server.port,
                config_dir=str(etc), http_timeout=5.0)
    conf.config(state_change_wait_time=5)
    app = service.CouchDBApp(
        service_manager=fake.FakeServiceManager(server, config_dir=str(etc)))
    app.poll_interval = 0.02
    app.secure()
    return server, app


@pytest.fixture
def app(conf, tmp_path):
    server, app = _app(conf, tmp_path, '3')
    yield app
    server.stop()


@pytest.fixture(params=['1', '3'])
def any_app(request, conf, tmp_path):
    """An app on a 1.6 fake, then on a 3.x one."""
    server, app = _app(conf, tmp_path, request.param)
    yield app
    server.stop()


@pytest.fixture
def overrides(app):
    return configuration.Overrides(app)


def _ini(app):
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(app.local_d() + '/' + configuration.OVERRIDES_INI_FILE)
    return {'%s/%s' % (s, k): v for s in parser.sections()
            for k, v in parser[s].items()}


def _check(given, api_version='3'):
    return configuration.Overrides(None, api_version=api_version).check(given)


@pytest.mark.parametrize('api_version', ['1', '3'])
def test_every_rule_is_well_formed(api_version):
    raw = json.loads(configuration.RULES_FILES[api_version].read_text())
    rules = configuration.load_rules(api_version)
    assert len(rules) == len(raw['configuration-parameters'])
    for rule in rules.values():
        assert rule.section and rule.key, rule.name
        assert rule.type in ('integer', 'float', 'boolean', 'string')
        if rule.type == 'integer':
            assert rule.min is not None and rule.max is not None
            assert rule.min <= rule.max
    for name in configuration.CHOICES[api_version]:
        assert rules[name].type == 'string'
        assert rules[name].choices


# Keys only CouchDB 1.6 reads, with a value it takes: 3.x has no delayed
# commits (it always fsyncs) and no compaction daemon (smoosh replaced it),
# and it moved the [httpd] and [couch_httpd_auth] settings to [chttpd] and
# [chttpd_auth].
ONLY_1_6 = {
    'couchdb/delayed_commits': False,
    'compactions/_default': '[{db_fragmentation, "70%"}]',
    'compaction_daemon/check_interval': 300,
    'compaction_daemon/min_file_size': 131072,
    'httpd/max_connections': 2048,
    'httpd/enable_cors': True,
    'couch_httpd_auth/timeout': 600,
}
# Their 3.x counterparts, and what 1.6 lacks (the replication scheduler
# came with 2.1, the lockout of repeated failed logins with 3.4).
ONLY_3 = {
    'chttpd/enable_cors': True,
    'chttpd/max_http_request_size': 65536,
    'chttpd_auth/timeout': 600,
    'chttpd_auth_lockout/threshold': 5,
    'chttpd_auth_lockout/max_lifetime': 300000,
    'replicator/max_jobs': 500,
}


def test_no_3x_rule_is_of_a_section_3x_left_behind():
    sections = {rule.section for rule in configuration.load_rules().values()}
    assert not sections & {'httpd', 'couch_httpd_auth', 'compactions',
                           'compaction_daemon'}


@pytest.mark.parametrize('name, value, own, other', [
    (name, value, '1', '3') for name, value in ONLY_1_6.items()] + [
    (name, value, '3', '1') for name, value in ONLY_3.items()])
def test_a_key_of_one_version_is_refused_by_the_other(name, value, own,
                                                      other):
    assert tuple(name.split('/')) in _check({name: value}, own)
    with pytest.raises(exception.BadRequest) as raised:
        _check({name: value}, other)
    assert "Unknown configuration parameter '%s'" % name in str(raised.value)
    assert configuration.RULES_FILES[other].name in str(raised.value)


@pytest.mark.parametrize('api_version, level, ok', [
    ('3', 'notice', True), ('3', 'critical', True), ('1', 'warning', True),
    ('1', 'notice', False), ('1', 'critical', False), ('3', 'loud', False),
])
def test_log_levels_are_those_of_the_version(api_version, level, ok):
    if ok:
        assert _check({'log/level': level}, api_version) == {
            ('log', 'level'): level}
    else:
        with pytest.raises(exception.BadRequest, match='it must be one of'):
            _check({'log/level': level}, api_version)


@pytest.mark.parametrize('given, stored', [
    ({'couchdb/max_dbs_open': 200}, {('couchdb', 'max_dbs_open'): '200'}),
    ({'couchdb/max_dbs_open': '200'}, {('couchdb', 'max_dbs_open'): '200'}),
    ({'chttpd/enable_cors': True}, {('chttpd', 'enable_cors'): 'true'}),
    ({'cors/credentials': 'off'}, {('cors', 'credentials'): 'false'}),
    ({'log/level': 'debug'}, {('log', 'level'): 'debug'}),
])
def test_values_become_couchdb_strings(given, stored):
    assert _check(given) == stored


@pytest.mark.parametrize('given, words', [
    ({'couchdb/nope': 1}, "Unknown configuration parameter 'couchdb/nope'"),
    ({'admins/root': 'x'}, "Unknown configuration parameter"),
    ({'couchdb/max_dbs_open': 5}, 'the minimum is 10'),
    ({'couchdb/max_dbs_open': 10 ** 9}, 'the maximum is 100000'),
    ({'couchdb/max_dbs_open': True}, 'it must be an integer'),
    ({'couchdb/max_dbs_open': 'many'}, 'it must be an integer'),
    ({'chttpd/enable_cors': 'perhaps'}, 'it must be true or false'),
    ({'log/level': 'loud'}, 'it must be one of debug'),
    ({'uuids/algorithm': 'bogus'}, 'it must be one of random'),
    ({'cors/origins': 'a\nb'}, 'control characters'),
    ({'cors/origins': ''}, 'non-empty string'),
])
def test_bad_values_are_refused_with_a_clear_error(given, words):
    with pytest.raises(exception.BadRequest) as raised:
        _check(given)
    assert words in str(raised.value)


def test_the_agent_reads_the_rules_of_the_version_its_server_speaks(
        any_app):
    overrides = configuration.Overrides(any_app)
    version = any_app.client.api_version
    own, other = (('couchdb/delayed_commits', 'chttpd/enable_cors')
                  if version == '1'
                  else ('chttpd/enable_cors', 'couchdb/delayed_commits'))
    assert overrides.check({own: True}) == {tuple(own.split('/')): 'true'}
    with pytest.raises(exception.BadRequest, match='Unknown configuration'):
        overrides.check({other: True})
    overrides.update({own: True})
    assert _ini(any_app) == {own: 'true'}
    with pytest.raises(exception.BadRequest, match='Unknown configuration'):
        overrides.update({other: True})
    assert _ini(any_app) == {own: 'true'}


def test_before_the_server_answers_a_group_of_either_version_passes(app):
    app.service_manager.stop()
    assert app.client.health() is couch.Health.DOWN
    overrides = configuration.Overrides(app)
    assert overrides.check({'couchdb/delayed_commits': True}) == {
        ('couchdb', 'delayed_commits'): 'true'}
    assert overrides.check({'chttpd/enable_cors': True}) == {
        ('chttpd', 'enable_cors'): 'true'}
    with pytest.raises(exception.BadRequest, match="'couchdb/nope'"):
        overrides.check({'couchdb/nope': 1})
    with pytest.raises(exception.BadRequest, match='the minimum is 10'):
        overrides.check({'couchdb/max_dbs_open': 5})
    app.service_manager.start()
    with pytest.raises(exception.BadRequest, match='Unknown configuration'):
        overrides.check({'couchdb/delayed_commits': True})


def test_update_keeps_the_group_in_its_own_file_until_a_restart(
        app, overrides):
    overrides.update({'couchdb/max_dbs_open': 300, 'log/level': 'debug'})
    assert _ini(app) == {'couchdb/max_dbs_open': '300',
                         'log/level': 'debug'}
    assert fake.file_mode(app.local_d() + '/' +
                          configuration.OVERRIDES_INI_FILE) == 0o640
    assert overrides.current() == {'couchdb/max_dbs_open': '300',
                                   'log/level': 'debug'}
    assert overrides.restart_pending
    overrides.restarted()
    assert not overrides.restart_pending


def test_apply_sets_dynamic_values_live_and_leaves_the_rest_for_a_restart(
        app, overrides):
    group = {'couchdb/max_dbs_open': 300,
             'chttpd_auth_lockout/max_lifetime': 60000}
    overrides.update(group)
    waiting = overrides.apply(group)
    assert waiting == ['chttpd_auth_lockout/max_lifetime']
    assert app.client.config_get('couchdb', 'max_dbs_open') == '300'
    assert app.client.get_or_none(app.client._config_segments(
        'chttpd_auth_lockout', 'max_lifetime')) is None
    assert overrides.restart_pending
    overrides.update(group)          # nothing changed: still pending
    assert overrides.restart_pending


def test_a_dynamic_group_releases_restart_required_once_applied(
        app, overrides):
    group = {'log/level': 'warning'}
    overrides.update(group)
    assert overrides.restart_pending
    assert overrides.apply(group) == []
    assert not overrides.restart_pending
    assert app.client.config_get('log', 'level') == 'warning'


def test_remove_empties_the_file_and_unsets_the_live_values(app, overrides):
    group = {'couchdb/max_dbs_open': 300}
    overrides.update(group)
    overrides.apply(group)
    overrides.update({}, remove=True)
    # Emptied, not deleted: CouchDB 3.x re-reads the files it started with.
    path = os.path.join(app.local_d(), configuration.OVERRIDES_INI_FILE)
    assert os.path.exists(path)
    assert _ini(app) == {}
    assert overrides.current() == {}
    assert app.client.get_or_none(
        app.client._config_segments('couchdb', 'max_dbs_open')) is None


def test_a_bad_group_changes_nothing(app, overrides):
    good = {'couchdb/max_dbs_open': 300}
    overrides.update(good)
    overrides.apply(good)
    bad = {'couchdb/max_dbs_open': 400, 'log/level': 'loud'}
    for call in (overrides.update, overrides.apply):
        with pytest.raises(exception.BadRequest):
            call(bad)
    assert _ini(app) == {'couchdb/max_dbs_open': '300'}
    assert app.client.config_get('couchdb', 'max_dbs_open') == '300'
    assert app.client.get_or_none(
        app.client._config_segments('log', 'level')) is None
