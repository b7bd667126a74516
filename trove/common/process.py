"""The one wrapper every subprocess of the agent goes through.

``execute()`` runs an argv list (never a shell) in its own process group,
feeds it ``input`` on stdin (the way to hand a secret to a command), drains
stdout and stderr concurrently, and enforces a deadline: when it passes, the
whole process tree gets SIGTERM, then SIGKILL after a grace period.  A
non-zero exit raises ``ProcessExecutionError`` unless ``check=False``.

A command must not leave a process behind that keeps its stdout or stderr
open (a daemon started without redirecting its output): ``execute()`` reads
both pipes until they close, so it would wait for that process until the
deadline and then kill it with the rest of the group.

When the environment variable ``TROVE_GUESTAGENT_ARGV_RECORD`` names a file,
the argv of every command is appended to it (one JSON list a line) before
the command starts: the tests read it to see every command line the agent
ran, short-lived ones included.  A guest never sets it.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time

from oslo_log import log as logging

from trove.common import cfg, exception

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

# Seconds between SIGTERM and SIGKILL when a command outlives its deadline.
KILL_GRACE_SECONDS = 5.0

# Searched after PATH by program_exists(): a non-root agent's PATH often
# lacks the sbin directories that the root helper (sudo) does search.
EXTRA_PROGRAM_DIRS = ('/usr/local/sbin', '/usr/sbin', '/sbin')

_STDERR_TAIL = 500

# Names the file that gets every argv (see the module's docstring).
ARGV_RECORD_ENV = 'TROVE_GUESTAGENT_ARGV_RECORD'


@dataclasses.dataclass(frozen=True)
class Result:
    """What a finished command printed and how it exited."""

    stdout: str
    stderr: str
    exit_code: int


def program_exists(name):
    """Whether ``name`` is an executable on PATH (or in an sbin directory)."""
    search = os.pathsep.join(
        [os.environ.get('PATH', os.defpath)] + list(EXTRA_PROGRAM_DIRS))
    return shutil.which(name, path=search) is not None


def execute(argv, *, run_as_root=False, timeout=None, check=True, input=None,
            env=None, cwd=None, description=None):
    """Run ``argv`` and return a ``Result``.

    :param argv: list of str; the program and its arguments.  Never put a
        secret here (it shows in ``ps`` and in logs): pass it as ``input``.
    :param run_as_root: prefix ``[DEFAULT] root_helper`` when the agent does
        not run as root.  ``env`` is then passed through ``env(1)`` after the
        helper, since sudo resets the environment.
    :param timeout: seconds before the process group is killed; defaults to
        ``[DEFAULT] command_process_timeout``.  A timeout always raises.
    :param check: raise ``ProcessExecutionError`` on a non-zero exit.
    :param input: str or bytes written to stdin (stdin is /dev/null if None).
    :param env: variables added to the agent's environment; ``LC_ALL=C``
        is always set so that output can be parsed.
    :param description: a name for the command in errors and logs
        (defaults to the program name).
    :raises ProcessExecutionError: non-zero exit (with ``check``), timeout,
        or a program that cannot be started.
    """
    argv = _validate_argv(argv)
    name = description or os.path.basename(argv[0])
    full_argv = _with_root_helper(argv, env) if run_as_root else argv
    if timeout is None:
        timeout = CONF.command_process_timeout
    data = input.encode('utf-8') if isinstance(input, str) else input
    LOG.debug("Running %s (timeout %s s)", full_argv, timeout)
    _record_argv(full_argv, name)
    started = time.monotonic()
    proc = _spawn(full_argv, name, _environment(env), cwd, data is not None)
    stdout, stderr = _communicate(proc, full_argv, name, data, timeout)
    result = Result(stdout=_decode(stdout), stderr=_decode(stderr),
                    exit_code=proc.returncode)
    LOG.debug("%s exited with %s after %.2f s", name, result.exit_code,
              time.monotonic() - started)
    if check and result.exit_code != 0:
        raise exception.ProcessExecutionError(
            cmd=full_argv, exit_code=result.exit_code, stdout=result.stdout,
            stderr=result.stderr, description=name)
    return result


def _validate_argv(argv):
    if isinstance(argv, (str, bytes)):
        raise TypeError(
            f"execute() takes an argv list, not a string: {argv!r}")
    argv = list(argv)
    if not argv or not all(isinstance(arg, str) for arg in argv):
        raise TypeError(
            f"execute() takes a non-empty list of str, got {argv!r}")
    return argv


def _with_root_helper(argv, env):
    if os.geteuid() == 0:
        return argv
    helper = CONF.root_helper.split()
    if env:
        helper += ['env'] + [f'{key}={value}'
                             for key, value in sorted(env.items())]
    return helper + argv


def _record_argv(argv, name):
    """Append ``argv`` to the file ``$TROVE_GUESTAGENT_ARGV_RECORD`` names.

    One write of one line on a file opened for appending (0600, never
    through a symlink): concurrent commands do not interleave their lines.
    """
    path = os.environ.get(ARGV_RECORD_ENV)
    if not path:
        return
    line = (json.dumps(argv) + '\n').encode('utf-8')
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
             | os.O_CLOEXEC)
    try:
        fd = os.open(path, flags, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    except OSError as err:
        raise exception.ProcessExecutionError(
            f"Cannot run {name}: cannot record its argv in {path}: "
            f"{err.strerror}", cmd=argv) from err


def _environment(env):
    merged = dict(os.environ)
    merged.update(env or {})
    merged['LC_ALL'] = 'C'
    return merged


def _spawn(argv, name, env, cwd, with_stdin):
    try:
        return subprocess.Popen(
            argv, stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd,
            start_new_session=True, close_fds=True)
    except FileNotFoundError as err:
        missing = argv[0] if err.filename in (None, argv[0]) else err.filename
        raise exception.ProcessExecutionError(
            f"Cannot run {name}: program {missing} not found",
            cmd=argv) from err
    except OSError as err:
        raise exception.ProcessExecutionError(
            f"Cannot run {name}: {err}", cmd=argv) from err


def _communicate(proc, argv, name, data, timeout):
    try:
        return proc.communicate(input=data, timeout=timeout)
    except subprocess.TimeoutExpired:
        stdout, stderr = _kill_group(proc)
        stderr_text = _decode(stderr)
        tail = stderr_text.strip()[-_STDERR_TAIL:]
        raise exception.ProcessExecutionError(
            f"{name} timed out after {timeout} s and was killed"
            + (f": {tail}" if tail else ""),
            cmd=argv, exit_code=proc.returncode, stdout=_decode(stdout),
            stderr=stderr_text) from None
    except BaseException:
        # Interrupted (e.g. KeyboardInterrupt): leave nothing behind.
        _kill_group(proc)
        raise


def _kill_group(proc):
    """SIGTERM the process group, SIGKILL it after the grace period."""
    LOG.debug("Terminating process group %s", proc.pid)
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        output = proc.communicate(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        output = None
    # Whatever is left of the group (the leader may be gone while a child
    # that ignores SIGTERM still runs) is killed for good.
    _signal_group(proc.pid, signal.SIGKILL)
    if output is None:
        try:
            output = proc.communicate(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            # A process that left the group (setsid) still holds a pipe
            # open: stop reading, the leader itself is dead by now.
            LOG.debug("Process group %s: output still open after SIGKILL",
                      proc.pid)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()
            proc.wait()
            output = (b'', b'')
    return output


def _signal_group(pgid, signum):
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _decode(data):
    return data.decode('utf-8', errors='replace') if data else ''
