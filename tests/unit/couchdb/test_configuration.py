"""Configuration groups: the rules of each API version, without a server.

The rules of each API version are those of its file (validation-rules.json
for 3.x, validation-rules-1.6.json for 1.6).  What the agent does with a
group on a server (the rules of the version the server speaks, the checks
while it is down, the group's file, the values set live, a bad group
changing nothing) runs on the real CouchDB 3.5 and on pouchdb-server in
tests/functional/couchdb/test_configuration_on_servers.py.
"""

import json

import pytest

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import configuration


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
