"""Guest logs published to a real Swift, as ``trove log-publish`` does,
and read back the way ``trove log-save`` reads them."""

import json

import pytest
import requests

CONTAINER = 'database_logs'


@pytest.fixture
def log_guest(guest_factory, swift, tmp_path):
    token, storage_url = swift.token_and_storage_url()

    def make(name='logged', exposed='couchdb,guest'):
        # The server's log is the file its [log] section writes (CouchDB
        # 3.5), or pouchdb-server's output: guest_factory configures it.
        guest = guest_factory(name, options={
            'DEFAULT': {'swift_url': storage_url[:-len('test')],
                        'guest_log_limit': '4096'},
            'couchdb': {'guest_log_exposed_logs': exposed}},
            auth={'auth_token': token, 'project_id': 'test'})
        message = guest.prepare_and_wait()
        assert message.kwargs['payload']['service_status'] == 'running'
        return guest

    make.swift = swift
    return make


def _published_text(swift_service, prefix):
    conn = swift_service.connection()
    _headers, listing = conn.get_container(CONTAINER, prefix=prefix,
                                           full_listing=True)
    names = sorted(obj['name'] for obj in listing)
    return b''.join(conn.get_object(CONTAINER, n)[1] for n in names), names


def test_publish_append_and_discard_the_server_log(log_guest):
    guest = log_guest()
    api = guest.api
    for _ in range(150):                  # one server log line each
        requests.get(guest.url('_all_dbs'), timeout=10)
    listed = {log['name']: log for log in api.guest_log_list()}
    assert sorted(listed) == ['couchdb', 'guest']
    server = listed['couchdb']
    assert server['type'] == 'SYS' and server['status'] == 'Ready'
    assert server['published'] == 0 and server['pending'] > 0

    shown = api.guest_log_action('couchdb', publish=True)
    # The agent's health checks keep adding lines to the server log.
    assert shown['status'] in ('Published', 'Partial'), shown
    assert shown['container'] == CONTAINER
    log_file = guest.agent.server_log
    text, names = _published_text(log_guest.swift, shown['prefix'])
    assert text == log_file.read_bytes()[:shown['published']]
    assert len(names) > 1          # cut into pieces of at most 4,096 bytes
    conn = log_guest.swift.connection()
    meta = json.loads(conn.get_object(CONTAINER, shown['metafile'])[1])
    assert meta['log_size'] == shown['published']

    # More lines: the next publish sends only them.
    for _ in range(20):
        requests.get(guest.url('_all_dbs'), timeout=10)
    assert api.guest_log_action('couchdb')['status'] == 'Partial'
    again = api.guest_log_action('couchdb', publish=True)
    assert again['published'] > shown['published']
    text, _names = _published_text(log_guest.swift, again['prefix'])
    assert text == log_file.read_bytes()[:again['published']]

    gone = api.guest_log_action('couchdb', discard=True)
    assert gone['published'] == 0 and gone['status'] == 'Ready'
    assert _published_text(log_guest.swift, again['prefix'])[1] == []


def test_the_agents_own_log_publishes_without_secrets(log_guest):
    guest = log_guest()
    shown = guest.api.guest_log_action('guest', publish=True)
    text, _names = _published_text(log_guest.swift, shown['prefix'])
    assert b'Serving topic' in text
    assert guest.admin_credentials()[1].encode() not in text


def test_bad_log_requests_get_clear_errors(log_guest):
    guest = log_guest(exposed='couchdb')
    api = guest.api
    assert [log['name'] for log in api.guest_log_list()] == ['couchdb']
    for kwargs, words in (
            (dict(log_name='couchdb', enable=True), 'system log'),
            (dict(log_name='guest', publish=True), 'not exposed'),
            (dict(log_name='mysql-slow', publish=True), 'No log named')):
        with pytest.raises(Exception) as raised:
            api.guest_log_action(**kwargs)
        assert words in str(raised.value), raised.value
