"""trove.common.process: real commands, real process trees."""

import json
import os
import signal
import sys
import time

import pytest

from tests import sudoers
from trove.common import exception, process
from trove.guestagent.common import packages, service_manager
from trove.guestagent.datastore.experimental.couchdb import service

PY = sys.executable


def _alive(pid):
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    try:
        with open(f'/proc/{pid}/stat', encoding='utf-8') as stat:
            state = stat.read().rsplit(')', 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ('Z', 'X')


def _wait_dead(pids, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


def _fake_program(directory, name, body):
    path = directory / name
    path.write_text('#!/bin/sh\n' + body)
    path.chmod(0o755)
    return path


def test_stdout_and_zero_exit():
    result = process.execute(['echo', 'hello', 'world'])
    assert result == process.Result(stdout='hello world\n', stderr='',
                                    exit_code=0)


def test_result_is_frozen():
    result = process.execute(['true'])
    with pytest.raises(AttributeError):
        result.exit_code = 1


@pytest.mark.parametrize('code', [1, 3, 100])
def test_nonzero_exit_without_check_is_returned(code):
    result = process.execute([PY, '-c', f'raise SystemExit({code})'],
                             check=False)
    assert result.exit_code == code


def test_nonzero_exit_raises_with_program_and_stderr_tail():
    script = ('import sys; sys.stderr.write("x" * 2000 + " disk is full\\n");'
              ' sys.exit(4)')
    with pytest.raises(exception.ProcessExecutionError) as caught:
        process.execute([PY, '-c', script])
    err = caught.value
    assert err.exit_code == 4
    assert err.cmd == [PY, '-c', script]
    assert err.stderr.endswith('disk is full\n')
    message = str(err)
    assert message.startswith(os.path.basename(PY) + ' exited with 4')
    assert message.endswith('disk is full')
    assert len(message) < 600  # only the tail of stderr


def test_description_names_the_command_in_errors():
    with pytest.raises(exception.ProcessExecutionError) as caught:
        process.execute(['false'], description='format the volume')
    assert str(caught.value).startswith('format the volume exited with 1')


@pytest.mark.parametrize('argv', ['/nonexistent/trove-test-program',
                                  'trove-test-program-not-on-path'])
def test_missing_program(argv):
    with pytest.raises(exception.ProcessExecutionError) as caught:
        process.execute([argv, '--flag'])
    assert 'not found' in str(caught.value)
    assert argv in str(caught.value)
    assert caught.value.exit_code is None


@pytest.mark.parametrize('argv', ['echo hello', b'echo', ['echo', 1], []])
def test_argv_must_be_a_list_of_str(argv):
    with pytest.raises(TypeError):
        process.execute(argv)


@pytest.mark.parametrize('data', ['s3cr3t pässword\n', b's3cr3t\x00bytes'])
def test_input_is_written_to_stdin(data):
    result = process.execute(['cat'], input=data)
    expected = data if isinstance(data, str) else data.decode()
    assert result.stdout == expected


def test_stdin_is_empty_without_input():
    assert process.execute(['cat'], timeout=5).stdout == ''


def test_lc_all_is_c_whatever_the_environment(monkeypatch):
    monkeypatch.setenv('LC_ALL', 'fr_FR.UTF-8')
    result = process.execute(['env'], env={'LC_ALL': 'de_DE', 'FOO': 'bar'})
    lines = result.stdout.splitlines()
    assert 'LC_ALL=C' in lines
    assert 'FOO=bar' in lines


def test_cwd(tmp_path):
    assert process.execute(['pwd'], cwd=str(tmp_path)).stdout.strip() == \
        str(tmp_path)


def test_large_stdout_and_stderr_do_not_deadlock():
    script = ('import sys; sys.stdout.write("o" * 3000000); '
              'sys.stderr.write("e" * 3000000)')
    result = process.execute([PY, '-c', script], timeout=30)
    assert len(result.stdout) == 3000000
    assert len(result.stderr) == 3000000


def test_own_process_group():
    script = 'import os; print(os.getpgid(0), os.getpid())'
    pgid, pid = process.execute([PY, '-c', script]).stdout.split()
    assert pgid == pid
    assert int(pgid) != os.getpgid(0)


def _tree_script(pid_file, child_ignores_term=False):
    """A child that starts a grandchild, writes both pids, then sleeps.

    Left alone it would exit 0 after 60 s: a test that expects a timeout
    fails, without looking at a clock, when the deadline is not enforced.
    """
    trap = 'trap "" TERM; ' if child_ignores_term else ''
    return ['sh', '-c',
            f'{trap}sleep 30 & echo $$ $! > {pid_file}; wait; sleep 30']


def test_timeout_kills_child_and_grandchild(tmp_path, monkeypatch):
    monkeypatch.setattr(process, 'KILL_GRACE_SECONDS', 1.0)
    pid_file = tmp_path / 'pids'
    with pytest.raises(exception.ProcessExecutionError) as caught:
        process.execute(_tree_script(pid_file), timeout=1)
    assert str(caught.value) == 'sh timed out after 1 s and was killed'
    assert caught.value.exit_code == -signal.SIGTERM
    child, grandchild = (int(pid) for pid in pid_file.read_text().split())
    assert _wait_dead([child, grandchild])


def test_timeout_escalates_to_sigkill(tmp_path, monkeypatch):
    monkeypatch.setattr(process, 'KILL_GRACE_SECONDS', 0.5)
    pid_file = tmp_path / 'pids'
    with pytest.raises(exception.ProcessExecutionError) as caught:
        process.execute(_tree_script(pid_file, child_ignores_term=True),
                        timeout=1)
    # The child ignored SIGTERM: SIGKILL ended it.
    assert caught.value.exit_code == -signal.SIGKILL
    child, grandchild = (int(pid) for pid in pid_file.read_text().split())
    assert _wait_dead([child, grandchild])


def test_timeout_defaults_to_command_process_timeout(conf, monkeypatch):
    monkeypatch.setattr(process, 'KILL_GRACE_SECONDS', 0.5)
    conf.config(command_process_timeout=1)
    with pytest.raises(exception.ProcessExecutionError) as caught:
        process.execute(['sleep', '30'])
    assert str(caught.value) == 'sleep timed out after 1 s and was killed'
    assert caught.value.exit_code == -signal.SIGTERM


def test_timeout_raises_even_without_check():
    with pytest.raises(exception.ProcessExecutionError) as caught:
        process.execute(['sleep', '30'], timeout=0.5, check=False)
    assert caught.value.exit_code == -signal.SIGTERM


# --- run_as_root: the guest image's sudoers rule decides ------------------

@pytest.fixture
def sudo(tmp_path, conf, monkeypatch):
    """The agent runs as user trove; its root helper is a stand-in for
    "sudo -n" that runs what the guest image's sudoers allows and refuses
    the rest (tests/sudoers.py).  Fakes of the programs the agent runs as
    root go in ``tmp_path / 'bin'``, first on PATH."""
    rule = sudoers.Rule.install(tmp_path / 'sudoers')
    # The helper is split on any run of spaces.
    conf.config(root_helper=f'{rule.stand_in()}   -n')
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    (tmp_path / 'bin').mkdir()
    monkeypatch.setenv('PATH', f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    return rule


def test_run_as_root_goes_through_the_helper_when_not_root(sudo, tmp_path):
    made = tmp_path / 'made by root'
    process.execute(['mkdir', '-p', str(made)], run_as_root=True)
    assert made.is_dir()
    assert sudo.asked() == [(['mkdir', '-p', str(made)], True)]


def test_run_as_root_passes_env_through_the_helper(sudo, tmp_path):
    _fake_program(tmp_path / 'bin', 'apt-get', 'echo "$DEBIAN_FRONTEND"\n')
    result = process.execute(['apt-get', '-o', 'DPkg::Lock::Timeout=120',
                              'update'], run_as_root=True,
                             env={'DEBIAN_FRONTEND': 'noninteractive'})
    assert result.stdout == 'noninteractive\n'
    assert sudo.asked() == [(['env', 'DEBIAN_FRONTEND=noninteractive',
                              'apt-get', '-o', 'DPkg::Lock::Timeout=120',
                              'update'], True)]


def test_run_as_root_fails_when_the_rule_refuses(sudo):
    with pytest.raises(exception.ProcessExecutionError) as caught:
        process.execute(['echo', 'not in the rule'], run_as_root=True)
    assert "the guest image's sudoers refuses it" in str(caught.value)
    assert sudo.refused() == [['echo', 'not in the rule']]


def test_run_as_root_without_helper_when_root(sudo, monkeypatch):
    monkeypatch.setattr(os, 'geteuid', lambda: 0)
    assert process.execute(['echo', 'x'], run_as_root=True).stdout == 'x\n'
    assert sudo.asked() == []


def test_not_run_as_root_never_uses_helper(sudo):
    process.execute(['true'])
    assert sudo.asked() == []


FAKE_APT_GET = """echo "apt-get $*" >> {record}
case "$*" in
  *" update") touch {updated} ;;
  *" install "*) [ -e {updated} ] || {{
      echo "E: Unable to locate package couchdb" >&2; exit 100; }} ;;
esac
"""


def _systemd(conf, tmp_path):
    conf.config(group='couchdb', service_manager='systemd')
    manager = service_manager.get_service_manager()
    for run in (manager.start, manager.stop, manager.enable_on_boot,
                manager.disable_on_boot):
        run()
    return ['systemctl start couchdb', 'systemctl stop couchdb',
            'systemctl enable couchdb', 'systemctl disable couchdb']


def _apt(conf, tmp_path):
    # apt-get cannot find the package until its lists are updated.
    _fake_program(tmp_path / 'bin', 'apt-get', FAKE_APT_GET.format(
        record=tmp_path / 'ran', updated=tmp_path / 'updated'))
    packages._Apt().install([('couchdb', '3.5.0'), ('curl', None)])
    install = ('apt-get -o DPkg::Lock::Timeout=120 install -y '
               '--no-install-recommends couchdb=3.5.0 curl')
    return [install, 'apt-get -o DPkg::Lock::Timeout=120 update', install]


def _dnf(conf, tmp_path):
    packages._Dnf().install([('couchdb', '3.5.0')])
    return ['dnf install -y couchdb-3.5.0']


def _data_ownership(conf, tmp_path):
    service.CouchDBApp().set_data_ownership(str(tmp_path / 'data'))
    return [f"chown -R couchdb:couchdb -- {tmp_path / 'data'}"]


# The volume's commands run for real in tests/functional/test_volume.py.
@pytest.mark.parametrize('agent', [_systemd, _apt, _dnf, _data_ownership],
                         ids=['systemd', 'apt', 'dnf', 'data-ownership'])
def test_the_agents_root_commands_are_allowed_by_the_rule(sudo, conf,
                                                          tmp_path, agent):
    ran = tmp_path / 'ran'
    for program in ('systemctl', 'dnf', 'chown'):
        _fake_program(tmp_path / 'bin', program,
                      f'echo "{program} $*" >> {ran}\n')
    expected = agent(conf, tmp_path)
    assert sudo.refused() == []
    assert ran.read_text().splitlines() == expected


# --- TROVE_GUESTAGENT_ARGV_RECORD: every command line, for the tests ------

def _argv_record(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_argv_record_gets_every_command_line_while_set(tmp_path,
                                                       monkeypatch):
    record = tmp_path / 'argv.jsonl'
    monkeypatch.setenv(process.ARGV_RECORD_ENV, str(record))
    process.execute(['echo', 'two words'])
    process.execute(['false'], check=False)
    with pytest.raises(exception.ProcessExecutionError):
        process.execute(['trove-test-program-not-on-path'])
    monkeypatch.delenv(process.ARGV_RECORD_ENV)
    process.execute(['echo', 'not recorded'])
    assert _argv_record(record) == [['echo', 'two words'], ['false'],
                                    ['trove-test-program-not-on-path']]
    assert oct(record.stat().st_mode & 0o777) == '0o600'


def test_argv_record_has_the_root_helper_and_never_stdin(sudo, tmp_path,
                                                         monkeypatch):
    record = tmp_path / 'argv.jsonl'
    monkeypatch.setenv(process.ARGV_RECORD_ENV, str(record))
    made = tmp_path / 'made'
    process.execute(['mkdir', '-p', str(made)], run_as_root=True)
    assert process.execute(['cat'], input='s3cr3t').stdout == 's3cr3t'
    assert _argv_record(record) == [
        sudo.stand_in().split() + ['-n', 'mkdir', '-p', str(made)], ['cat']]
    assert 's3cr3t' not in record.read_text()


def test_argv_record_is_never_written_through_a_symlink(tmp_path,
                                                        monkeypatch):
    target = tmp_path / 'elsewhere'
    target.write_text('kept\n')
    link = tmp_path / 'argv.jsonl'
    link.symlink_to(target)
    monkeypatch.setenv(process.ARGV_RECORD_ENV, str(link))
    ran = tmp_path / 'ran'
    with pytest.raises(exception.ProcessExecutionError) as caught:
        process.execute(['touch', str(ran)])
    assert f'cannot record its argv in {link}' in str(caught.value)
    assert not ran.exists()
    assert target.read_text() == 'kept\n'


def test_program_exists(tmp_path, monkeypatch):
    assert process.program_exists('sh')
    assert not process.program_exists('trove-test-program-not-on-path')
    _fake_program(tmp_path, 'trove-fake-tool', 'exit 0\n')
    monkeypatch.setenv('PATH', f"{tmp_path}:{os.environ['PATH']}")
    assert process.program_exists('trove-fake-tool')
