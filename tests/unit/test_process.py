"""trove.common.process: real commands, real process trees."""

import os
import signal
import sys
import time

import pytest

from trove.common import exception, process

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


@pytest.fixture
def fake_helper(tmp_path, conf):
    """A root helper that records its argv, drops "-n" and runs the rest."""
    record = tmp_path / 'helper-argv'
    helper = _fake_program(
        tmp_path, 'fake-sudo',
        f'printf "%s\\n" "$@" > {record}\n'
        '[ "$1" = -n ] && shift\n'
        'exec "$@"\n')
    conf.config(root_helper=f'{helper}   -n')
    return record


def test_run_as_root_uses_helper_when_not_root(fake_helper, monkeypatch):
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    result = process.execute(['echo', 'as root'], run_as_root=True)
    assert result.stdout == 'as root\n'
    assert fake_helper.read_text().splitlines() == ['-n', 'echo', 'as root']


def test_run_as_root_passes_env_through_the_helper(fake_helper, monkeypatch):
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    result = process.execute(['printenv', 'DEBIAN_FRONTEND'],
                             run_as_root=True,
                             env={'DEBIAN_FRONTEND': 'noninteractive'})
    assert result.stdout == 'noninteractive\n'
    assert fake_helper.read_text().splitlines() == [
        '-n', 'env', 'DEBIAN_FRONTEND=noninteractive', 'printenv',
        'DEBIAN_FRONTEND']


def test_run_as_root_without_helper_when_root(fake_helper, monkeypatch):
    monkeypatch.setattr(os, 'geteuid', lambda: 0)
    assert process.execute(['echo', 'x'], run_as_root=True).stdout == 'x\n'
    assert not fake_helper.exists()


def test_not_run_as_root_never_uses_helper(fake_helper, monkeypatch):
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    process.execute(['true'])
    assert not fake_helper.exists()


def test_program_exists(tmp_path, monkeypatch):
    assert process.program_exists('sh')
    assert not process.program_exists('trove-test-program-not-on-path')
    _fake_program(tmp_path, 'trove-fake-tool', 'exit 0\n')
    monkeypatch.setenv('PATH', f"{tmp_path}:{os.environ['PATH']}")
    assert process.program_exists('trove-fake-tool')
