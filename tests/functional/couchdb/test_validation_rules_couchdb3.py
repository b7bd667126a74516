"""Every rule of validation-rules.json against a real CouchDB 3.5 node.

For each rule the key is a setting CouchDB 3.5 has: in the node's
configuration or in the release's ``etc/default.ini``, which documents most
settings commented out (``;max_dbs_open = 500``).  That is the check that
counts: the configuration API takes any key and any string (it stores
``couchdb/delayed_commits``, which 3.x ignores, as readily as ``log/level =
loud``).  Then every bound of the rule (min and max, true and false, each
allowed value), as the agent writes it, is accepted by ``PUT
/_node/_local/_config/{section}/{key}`` and read back by GET.

One node serves the module (a missing server fails the tests, it never
skips them); each test deletes what it set.
"""

import configparser
import re

import pytest

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
TIMEOUT = 10


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


@pytest.fixture(scope='module')
def node(tmp_path_factory):
    server = couchdb3.CouchDB3Server(tmp_path_factory.mktemp('couchdb3'))
    try:
        yield start_or_fail(server)
    finally:
        server.stop()


@pytest.fixture(scope='module')
def admin(node):
    with node.session() as session:
        yield session


@pytest.fixture(scope='module')
def known_settings(node, admin):
    """{section: {key}} the node has or its default.ini documents."""
    settings = default_ini_settings(couchdb3.couchdb_home() / 'etc' /
                                    'default.ini')
    answer = admin.get(node.url + '/_node/_local/_config', timeout=TIMEOUT)
    answer.raise_for_status()
    for section, values in answer.json().items():
        settings.setdefault(section, set()).update(values)
    return settings


def config_url(node, rule):
    return '%s/_node/_local/_config/%s/%s' % (node.url, rule.section,
                                              rule.key)


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


@pytest.mark.parametrize('name', sorted(RULES))
def test_every_bound_is_accepted_and_read_back(node, admin, name):
    rule = RULES[name]
    url = config_url(node, rule)
    try:
        for value in bounds(rule):
            answer = admin.put(url, json=value, timeout=TIMEOUT)
            assert answer.status_code == 200, (name, value, answer.text)
            answer = admin.get(url, timeout=TIMEOUT)
            assert answer.status_code == 200, (name, value, answer.text)
            assert answer.json() == value
    finally:
        admin.delete(url, timeout=TIMEOUT)


def _allowed_origin(node, admin):
    """The origin a CORS preflight from https://app.example.com is
    allowed, or None."""
    answer = admin.options(
        node.url + '/', timeout=TIMEOUT,
        headers={'Origin': 'https://app.example.com',
                 'Access-Control-Request-Method': 'GET'})
    return answer.headers.get('Access-Control-Allow-Origin')


def test_cors_is_switched_on_and_off_live_as_its_rule_says(node, admin):
    assert not RULES['chttpd/enable_cors'].restart_required
    enable = config_url(node, RULES['chttpd/enable_cors'])
    origins = config_url(node, RULES['cors/origins'])
    try:
        admin.put(origins, json='https://app.example.com',
                  timeout=TIMEOUT).raise_for_status()
        assert _allowed_origin(node, admin) is None
        admin.put(enable, json='true', timeout=TIMEOUT).raise_for_status()
        assert _allowed_origin(node, admin) == 'https://app.example.com'
        admin.put(enable, json='false', timeout=TIMEOUT).raise_for_status()
        assert _allowed_origin(node, admin) is None
    finally:
        admin.delete(enable, timeout=TIMEOUT)
        admin.delete(origins, timeout=TIMEOUT)
