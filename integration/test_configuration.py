"""Configuration groups on a real agent and its server, as Trove drives
them: prepare with ``overrides``, then ``update_overrides`` (save) and
``apply_overrides`` (live) for an attached group, ``update_overrides(
remove=True)`` for a detached one.  Values are read back from the running
server (a real CouchDB 3.5 reads its ini files at start, so a setting that
needs a restart is read back after it; pouchdb-server reads none, so there
only the file CouchDB would read is checked)."""

import time

import pytest


def _config(guest, section, key):
    answer = guest.admin_session().get(guest.config_url(section, key),
                                       timeout=10)
    return answer.json() if answer.ok else None


def _overrides_file(guest):
    path = (guest.agent.couchdb_config_dir / 'local.d' /
            '30-trove-overrides.ini')
    return path.read_text() if path.exists() else None


def test_prepare_with_overrides_applies_them(guest):
    message = guest.prepare_and_wait(
        overrides={'couchdb/max_dbs_open': 250, 'log/level': 'warning'})
    assert message.kwargs['payload']['service_status'] == 'running'
    assert _config(guest, 'couchdb', 'max_dbs_open') == '250'
    assert 'max_dbs_open = 250' in _overrides_file(guest)


def test_a_group_is_applied_live_kept_across_a_restart_and_removed(
        prepared_guest):
    guest = prepared_guest
    api = guest.api
    default = _config(guest, 'couchdb', 'max_dbs_open')
    group = {'couchdb/max_dbs_open': 300}
    since = time.time()
    api.update_overrides(group)
    guest.conductor.wait_for_status(guest.id, 'restart required',
                                    since=since)
    api.apply_overrides(group)
    assert _config(guest, 'couchdb', 'max_dbs_open') == '300'
    guest.conductor.wait_for_status(guest.id, 'running')

    api.restart()
    assert _config(guest, 'couchdb', 'max_dbs_open') == '300'
    assert 'max_dbs_open = 300' in _overrides_file(guest)

    # Detached: the value Trove's configuration or CouchDB's defaults
    # give comes back (on 3.x default.ini's), and the file sets nothing.
    api.update_overrides({}, remove=True)
    assert _config(guest, 'couchdb', 'max_dbs_open') == default
    assert 'max_dbs_open' not in (_overrides_file(guest) or '')
    # The server takes configuration changes after it (CouchDB 3.x
    # re-reads its ini files on every DELETE: none may be missing).
    api.update_overrides({'log/level': 'warning'})
    api.apply_overrides({'log/level': 'warning'})
    assert _config(guest, 'log', 'level') == 'warning'
    api.update_overrides({}, remove=True)
    assert _config(guest, 'log', 'level') == 'info'
    api.restart()
    assert _config(guest, 'couchdb', 'max_dbs_open') == default


def test_a_bad_group_is_refused_and_changes_nothing(prepared_guest):
    guest = prepared_guest
    guest.api.update_overrides({'couchdb/max_dbs_open': 300})
    guest.api.apply_overrides({'couchdb/max_dbs_open': 300})
    for bad in ({'couchdb/max_dbs_open': 1},
                {'couchdb/max_dbs_open': 400, 'admins/root': 'x'}):
        for call in (guest.api.update_overrides, guest.api.apply_overrides):
            with pytest.raises(Exception) as raised:
                call(bad)
            assert 'BadRequest' in type(raised.value).__name__, raised.value
    assert _config(guest, 'couchdb', 'max_dbs_open') == '300'
    assert 'max_dbs_open = 300' in _overrides_file(guest)


# A setting CouchDB reads only at start, in the rules of each version.
RESTART_ONLY = {'couchdb3': ('chttpd_auth_lockout', 'max_lifetime', 120000),
                'pouchdb': ('httpd', 'max_connections', 512)}


def test_a_setting_that_needs_a_restart_waits_for_one(prepared_guest):
    guest = prepared_guest
    section, key, value = RESTART_ONLY[guest.couchdb.kind]
    group = {'%s/%s' % (section, key): value}
    guest.api.update_overrides(group)
    guest.api.apply_overrides(group)
    guest.conductor.wait_for_status(guest.id, 'restart required')
    assert '%s = %s' % (key, value) in _overrides_file(guest)
    if guest.couchdb.kind == 'couchdb3':
        assert _config(guest, section, key) != str(value)
    guest.api.restart()
    guest.conductor.wait_for_status(guest.id, 'running')
    if guest.couchdb.kind == 'couchdb3':
        assert _config(guest, section, key) == str(value)
