"""Configuration groups: Trove's overrides, checked, applied and kept.

Trove's configuration groups name CouchDB settings ``section/key`` (for
example ``couchdb/max_dbs_open``) as the rules files of
``trove/templates/couchdb/`` list them: ``validation-rules.json`` for
CouchDB 3.x, ``validation-rules-1.6.json`` for CouchDB 1.x (the operator
loads the file of each datastore version into Trove).  Every value is
checked, before anything changes, against the rules of the API version the
server speaks.  The agent keeps the overrides in a file of its own,
``local.d/30-trove-overrides.ini``, which CouchDB reads at start (so a
restart keeps them), and applies the settings CouchDB takes at run time
through its configuration API.  A setting the rules mark
``restart_required`` is only written to the file; the instance then reports
``restart required`` until CouchDB restarts.
"""

import configparser
import io
import json
import os
import pathlib
import re

from oslo_log import log as logging

from trove.common import cfg
from trove.common import exception
from trove.common import files
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import service

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

RULES_DIR = (pathlib.Path(__file__).resolve().parents[4] / 'templates' /
             'couchdb')
# The rules of each CouchDB HTTP API version.
RULES_FILES = {
    couch.API_V3: RULES_DIR / 'validation-rules.json',
    couch.API_V1: RULES_DIR / 'validation-rules-1.6.json',
}
OVERRIDES_INI_FILE = '30-trove-overrides.ini'
NO_OVERRIDES = ('; No configuration group is attached to this instance '
                '(written by the Trove guest agent).\n')
STATE_FILE = 'couchdb-overrides.json'
_FILE_COMPRESSION = ('none', 'deflate_1', 'deflate_2', 'deflate_3',
                     'deflate_4', 'deflate_5', 'deflate_6', 'deflate_7',
                     'deflate_8', 'deflate_9', 'snappy')
# An unknown algorithm stops CouchDB 3.5 at once (couch_uuids cannot start).
_UUID_ALGORITHMS = ('random', 'sequential', 'utc_random', 'utc_id')
# String settings whose values CouchDB reads from a fixed set, by API
# version (the log levels of docs.couchdb.org 1.6 and 3.5).
CHOICES = {
    couch.API_V3: {
        'log/level': ('debug', 'info', 'notice', 'warning', 'error',
                      'critical', 'alert', 'emergency', 'none'),
        'uuids/algorithm': _UUID_ALGORITHMS,
        'couchdb/file_compression': _FILE_COMPRESSION,
    },
    couch.API_V1: {
        'log/level': ('debug', 'info', 'warning', 'error', 'none'),
        'uuids/algorithm': _UUID_ALGORITHMS,
        'couchdb/file_compression': _FILE_COMPRESSION,
    },
}
_SAFE_STRING = re.compile(r'^[^\x00-\x1f\x7f;#]*$')
_TRUE = ('true', '1', 'on', 'yes')
_FALSE = ('false', '0', 'off', 'no')


class Rule:
    """One entry of a rules file; ``choices``: the values a string may
    take (any, when empty)."""

    def __init__(self, entry, choices=()):
        self.name = entry['name']
        self.section, _, self.key = self.name.partition('/')
        self.type = entry['type']
        self.restart_required = bool(entry.get('restart_required'))
        self.min = entry.get('min')
        self.max = entry.get('max')
        self.choices = tuple(choices)

    def check(self, value):
        """The value as CouchDB's configuration string, or BadRequest."""
        checker = getattr(self, '_check_' + self.type)
        return checker(value)

    def _refuse(self, value, why):
        raise exception.BadRequest(
            "Configuration parameter '%s' cannot be %r: %s."
            % (self.name, value, why))

    def _check_integer(self, value):
        if isinstance(value, bool):
            self._refuse(value, 'it must be an integer')
        if isinstance(value, str) and re.match(r'^-?\d+$', value.strip()):
            value = int(value)
        if not isinstance(value, int):
            self._refuse(value, 'it must be an integer')
        self._check_range(value)
        return str(value)

    def _check_float(self, value):
        if isinstance(value, bool):
            self._refuse(value, 'it must be a number')
        try:
            number = float(value)
        except (TypeError, ValueError):
            self._refuse(value, 'it must be a number')
        self._check_range(number)
        return repr(number)

    def _check_range(self, number):
        if self.min is not None and number < self.min:
            self._refuse(number, 'the minimum is %s' % self.min)
        if self.max is not None and number > self.max:
            self._refuse(number, 'the maximum is %s' % self.max)

    def _check_boolean(self, value):
        if isinstance(value, bool):
            return 'true' if value else 'false'
        text = str(value).strip().lower()
        if text in _TRUE:
            return 'true'
        if text in _FALSE:
            return 'false'
        self._refuse(value, 'it must be true or false')

    def _check_string(self, value):
        if not isinstance(value, str) or not value.strip():
            self._refuse(value, 'it must be a non-empty string')
        if not _SAFE_STRING.match(value):
            self._refuse(value, 'control characters, ; and # are not '
                                'allowed')
        if self.choices and value not in self.choices:
            self._refuse(value, 'it must be one of %s'
                         % ', '.join(self.choices))
        return value


def load_rules(api_version=couch.API_V3):
    """{name: Rule} of the rules file of CouchDB API ``api_version``."""
    if api_version not in RULES_FILES:
        raise ValueError("No configuration rules for CouchDB API version %r"
                         % api_version)
    with open(RULES_FILES[api_version], encoding='utf-8') as stream:
        entries = json.load(stream)['configuration-parameters']
    choices = CHOICES[api_version]
    return {entry['name']: Rule(entry, choices.get(entry['name'], ()))
            for entry in entries}


def check_group(rules, overrides, api_version):
    """{(section, key): string value} of ``overrides`` under ``rules`` (of
    API ``api_version``), or BadRequest naming the first bad one."""
    checked = {}
    for name, value in overrides.items():
        rule = rules.get(name)
        if rule is None:
            raise exception.BadRequest(
                "Unknown configuration parameter '%s': the parameters "
                "a configuration group may set are those of %s."
                % (name, RULES_FILES[api_version].name))
        checked[(rule.section, rule.key)] = rule.check(value)
    return checked


def _require_dict(overrides):
    if not isinstance(overrides, dict):
        raise exception.BadRequest(
            "Configuration overrides must be a dictionary.")


def render_ini(values):
    """An ini text of {(section, key): value}, sorted."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    for (section, key), value in sorted(values.items()):
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, key, value)
    out = io.StringIO()
    out.write('; Trove configuration group of this instance, written by the '
              'guest agent.\n')
    parser.write(out)
    return out.getvalue()


class OverridesState(service.StateFile):
    """``overrides`` ({name: value} kept for this instance) and
    ``restart_pending`` (a saved change CouchDB has not read yet)."""

    file_name = STATE_FILE


class Overrides:
    """The overrides of this instance's configuration group, checked
    against the rules of the CouchDB API version the server speaks
    (``api_version`` fixes it instead of asking the server)."""

    def __init__(self, app, state=None, api_version=None):
        self.app = app
        self.state = state or OverridesState()
        self._api_version = api_version
        self._rules = {}

    @property
    def api_version(self):
        return self._api_version or self.app.client.api_version

    def rules_of(self, api_version):
        """{name: Rule} of CouchDB API ``api_version``, read once."""
        if api_version not in self._rules:
            self._rules[api_version] = load_rules(api_version)
        return self._rules[api_version]

    @property
    def rules(self):
        return self.rules_of(self.api_version)

    def check(self, overrides):
        """{(section, key): string value} of valid overrides, or BadRequest
        naming the first bad one; nothing is changed either way.

        While CouchDB does not answer (prepare checks a group before it
        starts the server) its version is unknown: the group is refused
        only when the rules of no version take it.  Saving or applying it
        checks it again against the rules of the server's version.
        """
        try:
            return self._check(overrides)
        except exception.CouchDBUnavailable:
            return self._check_for_any_version(overrides)

    def _check(self, overrides):
        """check() against the server's version, which must answer."""
        _require_dict(overrides)
        api_version = self.api_version
        return check_group(self.rules_of(api_version), overrides,
                           api_version)

    def _check_for_any_version(self, overrides):
        refusal = None
        for api_version in (couch.API_V3, couch.API_V1):
            try:
                return check_group(self.rules_of(api_version), overrides,
                                   api_version)
            except exception.BadRequest as exc:
                refusal = refusal or exc
        raise refusal

    def current(self):
        """{name: value} the agent keeps for this instance."""
        return dict(self.state.read().get('overrides') or {})

    @property
    def restart_pending(self):
        return bool(self.state.read().get('restart_pending'))

    def restarted(self):
        if self.restart_pending:
            self.state.update(restart_pending=None)

    def update(self, overrides, remove=False):
        """Keep the group's overrides (replacing them all); with
        ``remove``, drop them.  Nothing runs live here (Trove's
        update_overrides): the file is what a restart reads."""
        checked = {} if remove else self._check(overrides or {})
        old = self.current()
        new = {} if remove else {'%s/%s' % k: v for k, v in checked.items()}
        self._write(new)
        if remove:
            self._unset_live(sorted(set(old)))
        if old != new:
            self.state.update(restart_pending=True)
        LOG.info("Configuration group %s: %s", 'removed' if remove
                 else 'saved', ', '.join(sorted(new)) or 'no parameters')

    def apply(self, overrides):
        """Set values live through CouchDB's configuration API (Trove's
        apply_overrides); those that need a restart wait for it."""
        checked = self._check(overrides or {})
        client = self.app.client
        needs_restart = []
        for (section, key), value in sorted(checked.items()):
            name = '%s/%s' % (section, key)
            if self.rules[name].restart_required:
                needs_restart.append(name)
                continue
            client.config_set(section, key, value)
            LOG.info("Set %s = %s live", name, value)
        kept = self.current()
        kept.update({'%s/%s' % k: v for k, v in checked.items()
                     if '%s/%s' % k in kept})
        self._write(kept)
        self.state.update(restart_pending=bool(needs_restart) or None)
        return needs_restart

    def _unset_live(self, names):
        client = self.app.client
        for name in names:
            section, _, key = name.partition('/')
            client.config_delete(section, key, missing_ok=True)
            LOG.info("Unset %s live", name)

    def _write(self, values):
        """The group's file; without values, one with no setting.

        The file is emptied, never deleted: CouchDB 3.x re-reads the ini
        files it started with on every configuration DELETE and answers
        500 (admin logins failing after it) once one of them is gone.
        Emptied, a DELETE of a live value brings back what Trove's
        configuration or CouchDB's defaults say.
        """
        path = os.path.join(self.app.local_d(), OVERRIDES_INI_FILE)
        if values:
            text = render_ini({tuple(n.split('/', 1)): v
                               for n, v in values.items()})
        elif os.path.exists(path):
            text = NO_OVERRIDES
        else:
            text = None
        if text is not None:
            files.write_atomically(path, text.encode('utf-8'), 0o640,
                                   service.couchdb_owner())
        self.state.update(overrides=values or None)
