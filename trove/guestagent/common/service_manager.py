"""How the agent starts and stops CouchDB: systemd, SysV init or commands.

``get_service_manager()`` picks the implementation named by
``[couchdb] service_manager``.  The managers only run the command; waiting
until CouchDB answers (or stops answering) is the caller's job.
"""

import abc
import shlex

from oslo_log import log as logging

from trove.common import cfg, exception, process

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


class ServiceManager(abc.ABC):
    """Starts and stops one service and sets whether it starts on boot."""

    def __init__(self, group='couchdb'):
        self.group = group

    @abc.abstractmethod
    def start(self):
        """Run the start command; return once it has returned."""

    @abc.abstractmethod
    def stop(self):
        """Run the stop command; return once it has returned."""

    @abc.abstractmethod
    def enable_on_boot(self):
        """Make the service start when the machine boots."""

    @abc.abstractmethod
    def disable_on_boot(self):
        """Keep the service from starting when the machine boots."""

    @property
    def service_name(self):
        return CONF.get(self.group).service_name

    def _run(self, argv):
        return process.execute(argv, run_as_root=True,
                               timeout=CONF.state_change_wait_time)


class SystemdServiceManager(ServiceManager):
    """``systemctl start|stop|enable|disable <service_name>``."""

    def start(self):
        self._systemctl('start')

    def stop(self):
        self._systemctl('stop')

    def enable_on_boot(self):
        self._systemctl('enable')

    def disable_on_boot(self):
        self._systemctl('disable')

    def _systemctl(self, verb):
        LOG.debug("systemctl %s %s", verb, self.service_name)
        self._run(['systemctl', verb, self.service_name])


class SysVInitServiceManager(ServiceManager):
    """``service <name> start|stop``; boot links by update-rc.d or chkconfig.
    """

    def start(self):
        self._service('start')

    def stop(self):
        self._service('stop')

    def enable_on_boot(self):
        self._boot_links(enable=True)

    def disable_on_boot(self):
        self._boot_links(enable=False)

    def _service(self, verb):
        LOG.debug("service %s %s", self.service_name, verb)
        self._run(['service', self.service_name, verb])

    def _boot_links(self, enable):
        name = self.service_name
        if process.program_exists('update-rc.d'):
            argv = ['update-rc.d', name, 'defaults' if enable else 'disable']
        elif process.program_exists('chkconfig'):
            argv = ['chkconfig', name, 'on' if enable else 'off']
        else:
            raise exception.ConfigurationError(
                reason="service_manager is sysvinit but neither update-rc.d "
                       "nor chkconfig is installed")
        LOG.debug("Setting boot links of %s: %s", name, argv)
        self._run(argv)


class CommandServiceManager(ServiceManager):
    """Runs ``start_command`` / ``stop_command`` of the option group.

    Each command is split like a shell would split it (``shlex.split``) but
    is never run by a shell.  It runs as root (through the root helper when
    the agent is not root) with ``[DEFAULT] state_change_wait_time`` as its
    deadline.  The start command must return once CouchDB is launched and
    must not leave CouchDB holding its stdout/stderr (redirect them).  The
    operator owns boot in this mode: enable/disable on boot do nothing.
    """

    def start(self):
        self._run(self._command('start_command'))

    def stop(self):
        self._run(self._command('stop_command'))

    def enable_on_boot(self):
        LOG.debug("service_manager is 'command': starting %s on boot is "
                  "left to the operator", self.group)

    def disable_on_boot(self):
        LOG.debug("service_manager is 'command': not starting %s on boot "
                  "is left to the operator", self.group)

    def _command(self, option):
        text = CONF.get(self.group).get(option)
        label = f"[{self.group}] {option}"
        if not text or not text.strip():
            raise exception.ConfigurationError(
                reason=f"{label} must be set when service_manager is "
                       "'command'")
        try:
            argv = shlex.split(text)
        except ValueError as err:
            raise exception.ConfigurationError(
                reason=f"{label} cannot be parsed: {err}") from err
        LOG.debug("Running %s: %s", label, argv)
        return argv


_MANAGERS = {
    'systemd': SystemdServiceManager,
    'sysvinit': SysVInitServiceManager,
    'command': CommandServiceManager,
}


def get_service_manager(group='couchdb'):
    """The service manager that ``[<group>] service_manager`` names."""
    kind = CONF.get(group).service_manager
    try:
        manager_class = _MANAGERS[kind]
    except KeyError:
        raise exception.ConfigurationError(
            reason=f"[{group}] service_manager: unknown value {kind!r} "
                   f"(one of {', '.join(sorted(_MANAGERS))})") from None
    return manager_class(group)
