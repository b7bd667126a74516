"""Configuration groups on a real agent and pouchdb-server, as Trove
drives them: prepare with ``overrides``, then ``update_overrides`` (save)
and ``apply_overrides`` (live) for an attached group, ``update_overrides(
remove=True)`` for a detached one."""

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

    api.update_overrides({}, remove=True)
    assert _config(guest, 'couchdb', 'max_dbs_open') is None
    assert _overrides_file(guest) is None


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


def test_a_setting_that_needs_a_restart_waits_for_one(prepared_guest):
    guest = prepared_guest
    group = {'httpd/max_connections': 512}
    guest.api.update_overrides(group)
    guest.api.apply_overrides(group)
    guest.conductor.wait_for_status(guest.id, 'restart required')
    assert 'max_connections = 512' in _overrides_file(guest)
    guest.api.restart()
    guest.conductor.wait_for_status(guest.id, 'running')
