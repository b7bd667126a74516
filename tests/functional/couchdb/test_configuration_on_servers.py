"""Configuration groups (configuration.py) on the real servers.

Every test runs on the real CouchDB 3.5 and on pouchdb-server (the 1.6
API).  The agent checks a group against the rules of the version its server
speaks (validation-rules.json for 3.x, validation-rules-1.6.json for 1.6),
keeps it in ``local.d/30-trove-overrides.ini`` and sets live, through the
server's configuration API, the values the server takes at run time.
Where 1.6 and 3.x differ (the keys each has, the setting that waits for a
restart) the test asserts each.  The rules themselves, without a server,
are in tests/unit/couchdb/test_configuration.py (rules by version) and
against CouchDB 3.5's own settings in test_validation_rules_couchdb3.py.

Each test has its own overrides state file and puts back the live values
it changed; the conftest removes the group's file.
"""

import configparser
import os
import stat

import pytest

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import configuration

OTHER = {'1': '3', '3': '1'}
# A key the rules of only this version have: 3.x has no delayed commits
# (it always fsyncs) and moved [httpd]'s CORS switch to [chttpd].
OWN_KEY = {'3': 'chttpd/enable_cors', '1': 'couchdb/delayed_commits'}
# A setting of each version that waits for a restart, with a value.
WAITS_FOR_RESTART = {'3': ('chttpd_auth_lockout/max_lifetime', 60000),
                     '1': ('httpd/max_connections', 4096)}
# The settings the tests may change live (put back after each test).
LIVE = ('couchdb/max_dbs_open', 'log/level',
        'chttpd_auth_lockout/max_lifetime', 'httpd/max_connections')


def _live(app, name):
    """The value the running server has for ``name``, or None."""
    client = app.client
    return client.get_or_none(client._config_segments(*name.split('/')))


def _ini(app):
    """{name: value} of the group's file."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(os.path.join(app.local_d(), configuration.OVERRIDES_INI_FILE))
    return {'%s/%s' % (s, k): v for s in parser.sections()
            for k, v in parser[s].items()}


def _overrides(agent, tmp_path):
    state = configuration.OverridesState(
        str(tmp_path / configuration.STATE_FILE))
    return configuration.Overrides(agent.app, state=state)


@pytest.fixture
def before(agent):
    """{name: live value} of LIVE before the test; put back after it."""
    values = {name: _live(agent.app, name) for name in LIVE}
    yield values
    client = agent.app.client
    for name, value in values.items():
        if _live(agent.app, name) == value:
            continue
        section, key = name.split('/')
        if value is None:
            client.config_delete(section, key, missing_ok=True)
        else:
            client.config_set(section, key, value)


@pytest.fixture
def overrides(agent, before, tmp_path):
    return _overrides(agent, tmp_path)


def test_the_agent_reads_the_rules_of_the_version_its_server_speaks(
        agent, overrides):
    version = agent.api_version
    own, other = OWN_KEY[version], OWN_KEY[OTHER[version]]
    assert overrides.api_version == version
    assert overrides.check({own: True}) == {tuple(own.split('/')): 'true'}
    with pytest.raises(exception.BadRequest, match='Unknown configuration'):
        overrides.check({other: True})
    overrides.update({own: True})
    assert _ini(agent.app) == {own: 'true'}
    with pytest.raises(exception.BadRequest) as raised:
        overrides.update({other: True})
    assert configuration.RULES_FILES[version].name in str(raised.value)
    assert _ini(agent.app) == {own: 'true'}


def test_while_the_server_is_down_a_group_of_either_version_passes(
        fresh, tmp_path):
    fresh.boot()
    overrides = _overrides(fresh, tmp_path)
    version = fresh.api_version
    own, other = OWN_KEY[version], OWN_KEY[OTHER[version]]
    assert overrides.check({own: True})         # the version is known now
    fresh.app.stop_db()
    assert fresh.app.client.health() is couch.Health.DOWN
    for name in (own, other):
        assert overrides.check({name: True}) == {
            tuple(name.split('/')): 'true'}
    with pytest.raises(exception.BadRequest, match="'couchdb/nope'"):
        overrides.check({'couchdb/nope': 1})
    with pytest.raises(exception.BadRequest, match='the minimum is 10'):
        overrides.check({'couchdb/max_dbs_open': 5})
    fresh.app.start_db()
    assert overrides.check({own: True})
    with pytest.raises(exception.BadRequest, match='Unknown configuration'):
        overrides.check({other: True})


def test_update_keeps_the_group_in_its_own_file_until_a_restart(
        agent, before, overrides):
    overrides.update({'couchdb/max_dbs_open': 300, 'log/level': 'debug'})
    assert _ini(agent.app) == {'couchdb/max_dbs_open': '300',
                               'log/level': 'debug'}
    path = os.path.join(agent.app.local_d(), configuration.OVERRIDES_INI_FILE)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert overrides.current() == {'couchdb/max_dbs_open': '300',
                                   'log/level': 'debug'}
    # Nothing is set live: the server has what it had.
    for name in ('couchdb/max_dbs_open', 'log/level'):
        assert _live(agent.app, name) == before[name]
    assert overrides.restart_pending
    overrides.restarted()
    assert not overrides.restart_pending


def test_apply_sets_dynamic_values_live_and_leaves_the_rest_for_a_restart(
        agent, before, overrides):
    waiting, value = WAITS_FOR_RESTART[agent.api_version]
    group = {'couchdb/max_dbs_open': 300, waiting: value}
    overrides.update(group)
    assert overrides.apply(group) == [waiting]
    assert _live(agent.app, 'couchdb/max_dbs_open') == '300'
    assert _live(agent.app, waiting) == before[waiting]
    assert _ini(agent.app) == {'couchdb/max_dbs_open': '300',
                               waiting: str(value)}
    assert overrides.restart_pending
    overrides.update(group)          # nothing changed: still pending
    assert overrides.restart_pending


def test_a_dynamic_group_releases_restart_required_once_applied(
        agent, overrides):
    group = {'log/level': 'warning'}      # a level of 1.6 and of 3.x
    overrides.update(group)
    assert overrides.restart_pending
    assert overrides.apply(group) == []
    assert not overrides.restart_pending
    assert _live(agent.app, 'log/level') == 'warning'


def test_remove_empties_the_file_and_unsets_the_live_values(
        agent, before, overrides):
    group = {'couchdb/max_dbs_open': 300}
    overrides.update(group)
    overrides.apply(group)
    assert _live(agent.app, 'couchdb/max_dbs_open') == '300'
    overrides.update({}, remove=True)
    # Emptied, not deleted: CouchDB 3.x re-reads the files it started with.
    path = os.path.join(agent.app.local_d(), configuration.OVERRIDES_INI_FILE)
    assert os.path.exists(path)
    assert _ini(agent.app) == {}
    assert overrides.current() == {}
    # The server is back to its own value (it had none).
    assert before['couchdb/max_dbs_open'] is None
    assert _live(agent.app, 'couchdb/max_dbs_open') is None


def test_a_bad_group_changes_nothing(agent, before, overrides):
    good = {'couchdb/max_dbs_open': 300}
    overrides.update(good)
    overrides.apply(good)
    bad = {'couchdb/max_dbs_open': 400, 'log/level': 'loud'}
    for call in (overrides.update, overrides.apply):
        with pytest.raises(exception.BadRequest):
            call(bad)
    assert _ini(agent.app) == {'couchdb/max_dbs_open': '300'}
    assert overrides.current() == {'couchdb/max_dbs_open': '300'}
    assert _live(agent.app, 'couchdb/max_dbs_open') == '300'
    assert _live(agent.app, 'log/level') == before['log/level']
