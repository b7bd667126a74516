"""The guest image's sudoers rule, asked the way the image asks it.

``Rule.install(directory)`` prepares what sudo needs to answer for the user
the agent runs as: the element's sudoers file as /etc/sudoers, that user in
/etc/passwd, and an empty program for each one the rule names that this
host lacks (dnf on a Debian host).  ``Rule.allows(argv)`` runs
``sudo -n -l -U trove -- argv`` in a private mount namespace (unshare(1))
where those files are mounted over the host's: sudo itself matches the
command against the rule, and nothing outside the namespace changes.
Needs root, as the suite runs.

``Rule.stand_in()`` is the command of a stand-in for sudo (``[DEFAULT]
root_helper`` is it followed by "-n", as "sudo -n" on a guest): it runs
what the rule allows, refuses the rest as sudo does (exit 1), and records
every argv it is given with the rule's answer.  A scratch path a test uses
in place of a guest's path (its fstab for /etc/fstab) is declared with
``stands_for()``: the rule is asked about the guest's path.  The stand-in
runs a command from the test's PATH, where a test may put a fake of a
program the rule names (systemctl, apt-get).

As a program: ``python tests/sudoers.py DIRECTORY -n ARGV...``.
"""

import json
import os
import pathlib
import pwd
import shlex
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
SUDOERS = (REPO / 'elements' / 'trove-guest-couchdb' / 'install.d'
           / 'trove-guestagent.sudoers')
USER = 'trove'
# Where sudo looks for a command (the secure_path of Debian and Ubuntu).
SECURE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'


class Rule:
    """The rule installed in ``directory`` by ``install()``."""

    def __init__(self, directory):
        self.directory = pathlib.Path(directory)
        self._ask = self.directory / 'ask.sh'
        self._asked = self.directory / 'asked.jsonl'
        self._stands_for = self.directory / 'stands-for.json'

    @classmethod
    def install(cls, directory):
        assert os.geteuid() == 0, 'sudoers checks need root (unshare, mount)'
        for tool in ('unshare', 'sudo', 'cvtsudoers'):
            assert shutil.which(tool), f'{tool} is not installed'
        rule = cls(directory)
        rule.directory.mkdir(parents=True, exist_ok=True)
        sudoers = rule.directory / 'sudoers'
        shutil.copyfile(SUDOERS, sudoers)
        sudoers.chmod(0o440)
        passwd = rule.directory / 'passwd'
        passwd.write_text(_passwd_with_user())
        mounts = [f'mount --bind {shlex.quote(str(sudoers))} /etc/sudoers',
                  f'mount --bind {shlex.quote(str(passwd))} /etc/passwd']
        mounts += _overlays_for_missing_programs(rule.directory / 'layer')
        rule._ask.write_text(
            'set -e\n' + ''.join(line + '\n' for line in mounts)
            + f'exec env -i PATH={SECURE_PATH} sudo -n -l -U {USER} -- "$@"\n')
        rule._stands_for.write_text('{}')
        return rule

    def allows(self, argv):
        """Whether the rule lets the agent's user run ``argv`` (as the
        guest would run it: paths a test stands in are mapped back)."""
        answer = subprocess.run(
            ['unshare', '--mount', '--propagation', 'private', 'sh',
             str(self._ask)] + self._guest_argv(argv),
            capture_output=True, text=True, check=False)
        # 1: refused; anything else: the namespace could not be set up.
        assert answer.returncode in (0, 1), (
            f'cannot ask sudo about {argv}: {answer.stderr.strip()}')
        return answer.returncode == 0

    def stands_for(self, path, guest_path):
        """Ask the rule about ``guest_path`` where the agent uses ``path``."""
        mapping = json.loads(self._stands_for.read_text())
        mapping[str(path)] = str(guest_path)
        self._stands_for.write_text(json.dumps(mapping))

    def stand_in(self):
        """The stand-in's command: ``[DEFAULT] root_helper`` is this
        followed by "-n", as "sudo -n" on a guest."""
        return f'{sys.executable} {__file__} {self.directory}'

    def asked(self):
        """(argv, allowed) of every command given to the stand-in."""
        if not self._asked.exists():
            return []
        return [(entry['argv'], entry['allowed']) for entry in
                map(json.loads, self._asked.read_text().splitlines())]

    def refused(self):
        return [argv for argv, allowed in self.asked() if not allowed]

    def act_as_sudo(self, args):
        """The stand-in: ``args`` is what follows its command."""
        if args[:1] != ['-n']:
            print('sudo stand-in: the agent must call "sudo -n", which '
                  'never asks for a password', file=sys.stderr)
            return 1
        argv = args[1:]
        allowed = self.allows(argv)
        with open(self._asked, 'a', encoding='utf-8') as record:
            record.write(json.dumps({'argv': argv, 'allowed': allowed})
                         + '\n')
        if not allowed:
            print(f"sudo: {USER} may not run {shlex.join(argv)}: the guest "
                  "image's sudoers refuses it", file=sys.stderr)
            return 1
        os.execvp(argv[0], argv)

    def _guest_argv(self, argv):
        mapping = json.loads(self._stands_for.read_text())
        guest = []
        for arg in argv:
            for path, guest_path in mapping.items():
                if arg.startswith(path):
                    arg = guest_path + arg[len(path):]
                    break
            guest.append(arg)
        return guest


def _passwd_with_user():
    """The host's /etc/passwd, with the agent's user added if missing."""
    text = pathlib.Path('/etc/passwd').read_text()
    entries = pwd.getpwall()
    if any(entry.pw_name == USER for entry in entries):
        return text
    uid = min(set(range(4000, 60000)) - {entry.pw_uid for entry in entries})
    return text + f'{USER}:x:{uid}:65534::/nonexistent:/usr/sbin/nologin\n'


def _overlays_for_missing_programs(layer):
    """Mount commands that add, over its directory, an empty executable
    for each program the rule names that this host lacks."""
    parsed = json.loads(subprocess.run(
        ['cvtsudoers', '-f', 'json', str(SUDOERS)], check=True,
        capture_output=True, text=True).stdout)
    programs = {command.split()[0] for command in _commands(parsed)}
    missing = sorted(path for path in programs
                     if path.startswith('/') and not os.path.exists(path))
    directories = set()
    for path in missing:
        fake = layer / path.lstrip('/')
        fake.parent.mkdir(parents=True, exist_ok=True)
        fake.write_text('')
        fake.chmod(0o755)
        directories.add(os.path.dirname(path))
    return [f'mount -t overlay overlay -o lowerdir='
            f'{shlex.quote(str(layer) + directory)}:{directory} {directory}'
            for directory in sorted(directories)]


def _commands(node):
    """Every command of the rule, from cvtsudoers's JSON."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'command':
                yield value
            else:
                yield from _commands(value)
    elif isinstance(node, list):
        for item in node:
            yield from _commands(item)


if __name__ == '__main__':
    sys.exit(Rule(sys.argv[1]).act_as_sudo(sys.argv[2:]))
