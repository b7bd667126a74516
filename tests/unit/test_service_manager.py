"""Service managers run real commands; fake init tools record their argv."""

import os
import shlex

import pytest

from trove.common import exception, process
from trove.guestagent.common import service_manager


def _recording_program(bin_dir, name, record):
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> {record}\n')
    path.chmod(0o755)


def _recorded(record):
    return record.read_text().splitlines() if record.exists() else []


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """A directory put first on PATH, and the file its programs append to."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    monkeypatch.setenv('PATH', f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir, tmp_path / 'argv'


@pytest.mark.parametrize('kind, cls', [
    ('systemd', service_manager.SystemdServiceManager),
    ('sysvinit', service_manager.SysVInitServiceManager),
    ('command', service_manager.CommandServiceManager),
])
def test_get_service_manager_follows_the_option(conf, kind, cls):
    conf.config(service_manager=kind, group='couchdb')
    manager = service_manager.get_service_manager()
    assert type(manager) is cls
    assert manager.group == 'couchdb'


# --- command mode --------------------------------------------------------

@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / 'dir with spaces'
    path.mkdir()
    return path


def test_command_mode_runs_start_and_stop(conf, data_dir):
    marker = data_dir / 'couchdb.pid'
    conf.config(group='couchdb', service_manager='command',
                start_command=shlex.join(['touch', str(marker)]),
                stop_command=shlex.join(['rm', str(marker)]))
    manager = service_manager.get_service_manager()
    manager.start()
    assert marker.exists()
    manager.stop()
    assert not marker.exists()


def test_command_mode_never_uses_a_shell(conf, data_dir):
    def quoted(name):
        return shlex.quote(str(data_dir / name))

    # A shell would expand $(id -u), end the command at ";" and run "b".
    conf.config(group='couchdb', service_manager='command',
                start_command=f"touch {quoted('$(id -u)')} {quoted('a')}; "
                              f"{quoted('b')}")
    service_manager.get_service_manager().start()
    assert sorted(os.listdir(data_dir)) == ['$(id -u)', 'a;', 'b']


@pytest.mark.parametrize('option', ['start_command', 'stop_command'])
@pytest.mark.parametrize('value', [None, '', '   '])
def test_command_mode_missing_command(conf, option, value):
    conf.config(group='couchdb', service_manager='command',
                start_command='true', stop_command='true')
    conf.config(group='couchdb', **{option: value})
    manager = service_manager.get_service_manager()
    action = manager.start if option == 'start_command' else manager.stop
    with pytest.raises(exception.ConfigurationError) as caught:
        action()
    assert f'[couchdb] {option}' in str(caught.value)


def test_command_mode_unparsable_command(conf):
    conf.config(group='couchdb', service_manager='command',
                start_command="couchdb -c 'unbalanced")
    with pytest.raises(exception.ConfigurationError) as caught:
        service_manager.get_service_manager().start()
    assert '[couchdb] start_command' in str(caught.value)


def test_command_mode_failure_is_raised(conf):
    conf.config(group='couchdb', service_manager='command',
                stop_command='sh -c "echo still running >&2; exit 7"')
    with pytest.raises(exception.ProcessExecutionError) as caught:
        service_manager.get_service_manager().stop()
    assert caught.value.exit_code == 7
    assert 'still running' in str(caught.value)


def test_command_mode_is_bounded_by_state_change_wait_time(conf, monkeypatch,
                                                           tmp_path):
    monkeypatch.setattr(process, 'KILL_GRACE_SECONDS', 0.5)
    # Two deadlines: the error names the one that ended the command.
    conf.config(state_change_wait_time=1, command_process_timeout=3)
    pid_file = tmp_path / 'pid'
    script = tmp_path / 'hangs.sh'
    script.write_text(f'echo $$ > {shlex.quote(str(pid_file))}\n'
                      'exec sleep 60\n')
    conf.config(group='couchdb', service_manager='command',
                start_command=shlex.join(['sh', str(script)]))
    with pytest.raises(exception.ProcessExecutionError) as caught:
        service_manager.get_service_manager().start()
    assert 'timed out after 1 s and was killed' in str(caught.value)
    with pytest.raises(ProcessLookupError):    # nothing left running
        os.kill(int(pid_file.read_text()), 0)


def test_command_mode_boot_is_left_to_the_operator(conf, fake_bin):
    bin_dir, record = fake_bin
    for tool in ('systemctl', 'service', 'update-rc.d', 'chkconfig'):
        _recording_program(bin_dir, tool, record)
    conf.config(group='couchdb', service_manager='command')
    manager = service_manager.get_service_manager()
    manager.enable_on_boot()
    manager.disable_on_boot()
    assert _recorded(record) == []


# --- systemd and SysV init ----------------------------------------------

def _run_all(manager):
    manager.start()
    manager.stop()
    manager.enable_on_boot()
    manager.disable_on_boot()


def test_systemd_argv(conf, fake_bin):
    bin_dir, record = fake_bin
    _recording_program(bin_dir, 'systemctl', record)
    conf.config(group='couchdb', service_manager='systemd',
                service_name='couchdb-test')
    _run_all(service_manager.get_service_manager())
    assert _recorded(record) == [
        'systemctl start couchdb-test', 'systemctl stop couchdb-test',
        'systemctl enable couchdb-test', 'systemctl disable couchdb-test']


def test_systemd_runs_through_the_root_helper(conf, fake_bin, monkeypatch):
    bin_dir, record = fake_bin
    _recording_program(bin_dir, 'fake-sudo', record)
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    conf.config(root_helper='fake-sudo -n')
    conf.config(group='couchdb', service_manager='systemd')
    service_manager.get_service_manager().start()
    assert _recorded(record) == ['fake-sudo -n systemctl start couchdb']


def test_sysvinit_with_update_rc_d(conf, fake_bin):
    bin_dir, record = fake_bin
    for tool in ('service', 'update-rc.d', 'chkconfig'):
        _recording_program(bin_dir, tool, record)
    conf.config(group='couchdb', service_manager='sysvinit',
                service_name='couchdb-test')
    _run_all(service_manager.get_service_manager())
    assert _recorded(record) == [
        'service couchdb-test start', 'service couchdb-test stop',
        'update-rc.d couchdb-test defaults',
        'update-rc.d couchdb-test disable']


@pytest.fixture
def only_fake_bin(fake_bin, monkeypatch):
    """PATH holds nothing but the fake programs."""
    monkeypatch.setenv('PATH', str(fake_bin[0]))
    monkeypatch.setattr(process, 'EXTRA_PROGRAM_DIRS', ())
    return fake_bin


def test_sysvinit_with_chkconfig(conf, only_fake_bin):
    bin_dir, record = only_fake_bin
    for tool in ('service', 'chkconfig'):
        _recording_program(bin_dir, tool, record)
    conf.config(group='couchdb', service_manager='sysvinit')
    _run_all(service_manager.get_service_manager())
    assert _recorded(record) == [
        'service couchdb start', 'service couchdb stop',
        'chkconfig couchdb on', 'chkconfig couchdb off']


def test_sysvinit_without_boot_tools(conf, only_fake_bin):
    conf.config(group='couchdb', service_manager='sysvinit')
    with pytest.raises(exception.ConfigurationError) as caught:
        service_manager.get_service_manager().enable_on_boot()
    assert 'update-rc.d' in str(caught.value)


def test_missing_init_tool_is_a_clear_error(conf, only_fake_bin):
    conf.config(group='couchdb', service_manager='systemd')
    with pytest.raises(exception.ProcessExecutionError) as caught:
        service_manager.get_service_manager().start()
    assert 'systemctl not found' in str(caught.value)
