"""configuration: ``trove configuration-attach/detach`` of groups.

Trove sends an attached group with ``update_overrides`` (saved) and
``apply_overrides`` (live), a detached one with ``update_overrides(
remove=True)``, and marks the instance RESTART_REQUIRED when the guest's
heartbeat says so.  Values are read back from ``/_config`` as root, so the
group enables root first and disables it at the end.

A setting that needs a restart is read by CouchDB from its ini files when
it starts: on a real CouchDB 3.5 the group reads it back from the running
server after the restart; pouchdb-server (the 1.6 API) reads no ini file,
so there the group checks the files CouchDB would read (``local.d`` of the
instance's configuration directory).
"""

import configparser
import time

from integration.scenario.runners import base


class ConfigurationRunner(base.TestRunner):

    def _value(self, name):
        return self.helper.get_configuration_value(
            name, self.instance.couchdb.url)

    def _value_at_start(self, name):
        """What CouchDB reads for ``name`` from local.d when it starts."""
        parser = configparser.ConfigParser(interpolation=None)
        local_d = self.instance.agent.couchdb_config_dir / 'local.d'
        parser.read(sorted(local_d.glob('*.ini')))
        section, key = name.split('/', 1)
        return parser.get(section, key, fallback=None)

    def _non_dynamic_group(self):
        return self.helper.get_non_dynamic_group(self.instance.couchdb.kind)

    def _value_after_restart(self, name):
        """What the server runs with after a restart, or would (1.6)."""
        if self.instance.couchdb.kind == 'pouchdb':
            return self._value_at_start(name)
        return self._value(name)

    def _attach(self, group):
        self.instance.api.update_overrides(group)
        self.instance.api.apply_overrides(group)

    def run_enable_root_to_read_the_configuration(self):
        self.root_was_enabled = self.instance.api.is_root_enabled()
        self.instance.api.enable_root_with_password(
            self.helper.get_helper_credentials_root()['password'])

    def run_attach_dynamic_group(self):
        group = self.helper.get_dynamic_group()
        for name, value in group.items():
            assert self._value(name) != str(value), (
                '%s is %s before the group is attached' % (name, value))
        self._attach(group)
        self.wait_for_status(self.instance, 'running', since=time.time())

    def run_verify_dynamic_group_applied(self):
        for name, value in self.helper.get_dynamic_group().items():
            assert self._value(name) == str(value), name

    def run_attach_invalid_groups(self):
        for group in self.helper.get_invalid_groups():
            for call in (self.instance.api.update_overrides,
                         self.instance.api.apply_overrides):
                try:
                    call(group)
                except Exception as exc:
                    assert 'BadRequest' in type(exc).__name__, exc
                else:
                    raise AssertionError('%s accepted %s' % (
                        call.__name__, group))
        # The attached group is untouched.
        for name, value in self.helper.get_dynamic_group().items():
            assert self._value(name) == str(value), name

    def run_detach_dynamic_group(self):
        self.instance.api.update_overrides({}, remove=True)
        for name, value in self.helper.get_dynamic_group().items():
            assert self._value(name) != str(value), name

    def run_attach_non_dynamic_group(self):
        since = time.time()
        group = self._non_dynamic_group()
        for name, value in group.items():
            assert self._value_after_restart(name) != str(value), name
        self._attach(group)
        self.wait_for_status(self.instance, 'restart required', since=since)

    def run_restart_instance(self):
        since = time.time()
        self.instance.api.restart()
        self.wait_for_status(self.instance, 'running', since=since)
        for name, value in self._non_dynamic_group().items():
            assert self._value_after_restart(name) == str(value), name

    def run_detach_non_dynamic_group(self):
        since = time.time()
        self.instance.api.update_overrides({}, remove=True)
        self.wait_for_status(self.instance, 'restart required', since=since)
        self.instance.api.restart()
        self.wait_for_status(self.instance, 'running', since=time.time())
        for name, value in self._non_dynamic_group().items():
            assert self._value_after_restart(name) != str(value), name

    def run_restore_root_state(self):
        if not self.root_was_enabled:
            self.instance.api.disable_root()
            assert self.instance.api.is_root_enabled() is False
