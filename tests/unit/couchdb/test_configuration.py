"""Configuration groups against the CouchDB 3.x fake: rules, file, live."""

import configparser
import json

import pytest

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import configuration
from trove.guestagent.datastore.experimental.couchdb import service

try:
    from . import fake_couchdb3 as fake
except ImportError:
    import fake_couchdb3 as fake


@pytest.fixture
def app(conf, tmp_path):
    server = fake.FakeCouchDB('3')
    server.set_admin('admin', 'image-Admin-1')    # 3.x needs one to start
    server.start()
    etc = tmp_path / 'etc'
    conf.config(group='couchdb', host='127.0.0.1', port=server.port,
                config_dir=str(etc), http_timeout=5.0)
    conf.config(state_change_wait_time=5)
    app = service.CouchDBApp(
        service_manager=fake.FakeServiceManager(server, config_dir=str(etc)))
    app.poll_interval = 0.02
    app.secure()
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


def test_every_rule_is_well_formed():
    raw = json.loads(configuration.RULES_FILE.read_text())
    rules = configuration.load_rules()
    assert len(rules) == len(raw['configuration-parameters'])
    for rule in rules.values():
        assert rule.section and rule.key, rule.name
        assert rule.type in ('integer', 'float', 'boolean', 'string')
        if rule.type == 'integer':
            assert rule.min is not None and rule.max is not None
            assert rule.min <= rule.max
    for name in configuration.CHOICES:
        assert rules[name].type == 'string'


@pytest.mark.parametrize('given, stored', [
    ({'couchdb/max_dbs_open': 200}, {('couchdb', 'max_dbs_open'): '200'}),
    ({'couchdb/max_dbs_open': '200'}, {('couchdb', 'max_dbs_open'): '200'}),
    ({'httpd/enable_cors': True}, {('httpd', 'enable_cors'): 'true'}),
    ({'cors/credentials': 'off'}, {('cors', 'credentials'): 'false'}),
    ({'log/level': 'debug'}, {('log', 'level'): 'debug'}),
])
def test_values_become_couchdb_strings(given, stored):
    assert configuration.Overrides(None).check(given) == stored


@pytest.mark.parametrize('given, words', [
    ({'couchdb/nope': 1}, "Unknown configuration parameter 'couchdb/nope'"),
    ({'admins/root': 'x'}, "Unknown configuration parameter"),
    ({'couchdb/max_dbs_open': 5}, 'the minimum is 10'),
    ({'couchdb/max_dbs_open': 10 ** 9}, 'the maximum is 100000'),
    ({'couchdb/max_dbs_open': True}, 'it must be an integer'),
    ({'couchdb/max_dbs_open': 'many'}, 'it must be an integer'),
    ({'httpd/enable_cors': 'perhaps'}, 'it must be true or false'),
    ({'log/level': 'loud'}, 'it must be one of debug'),
    ({'cors/origins': 'a\nb'}, 'control characters'),
    ({'cors/origins': ''}, 'non-empty string'),
])
def test_bad_values_are_refused_with_a_clear_error(given, words):
    with pytest.raises(exception.BadRequest) as raised:
        configuration.Overrides(None).check(given)
    assert words in str(raised.value)


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
    group = {'couchdb/max_dbs_open': 300, 'httpd/max_connections': 500}
    overrides.update(group)
    waiting = overrides.apply(group)
    assert waiting == ['httpd/max_connections']
    assert app.client.config_get('couchdb', 'max_dbs_open') == '300'
    assert app.client.get_or_none(
        app.client._config_segments('httpd', 'max_connections')) is None
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


def test_remove_drops_the_file_and_the_live_values(app, overrides):
    group = {'couchdb/max_dbs_open': 300}
    overrides.update(group)
    overrides.apply(group)
    overrides.update({}, remove=True)
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
