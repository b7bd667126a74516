"""Which database and user names the agent accepts.

Database names follow CouchDB's own rule.  User names are stricter than
CouchDB requires: they end up in ``_users`` document IDs, ``_security``
documents and URLs, so the agent accepts only plain printable names and says
clearly why it refuses one.
"""

import re

from oslo_config import cfg

from trove.common import exception
from trove.guestagent.datastore.experimental.couchdb import system

CONF = cfg.CONF

_DB_NAME = re.compile(r'^[a-z][a-z0-9_$()+/-]*$')
_USER_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._@+-]*$')


def is_tenant_database(name):
    """Whether ``name`` is one of the tenant's databases: not a system
    database, not one of ``[couchdb] ignore_dbs``, not the agent's own."""
    return not (name.startswith('_') or name in CONF.couchdb.ignore_dbs
                or name in system.AGENT_DBS)


def check_database_name(name):
    """Return ``name`` if CouchDB would accept it as a user database."""
    if not isinstance(name, str) or not name:
        raise exception.InvalidName(kind='database', name=name,
                                    reason='the name is empty')
    if not is_tenant_database(name):
        raise exception.ReservedName(kind='database', name=name)
    if len(name) > system.MAX_DB_NAME_LENGTH:
        raise exception.InvalidName(
            kind='database', name=name,
            reason='longer than %d characters' % system.MAX_DB_NAME_LENGTH)
    if not _DB_NAME.match(name):
        raise exception.InvalidName(
            kind='database', name=name,
            reason='it must start with a lowercase letter and contain only '
                   'lowercase letters, digits and _$()+-/')
    return name


def check_user_name(name):
    """Return ``name`` if the agent accepts it as a CouchDB user name."""
    if not isinstance(name, str) or not name:
        raise exception.InvalidName(kind='user', name=name,
                                    reason='the name is empty')
    if name in CONF.couchdb.ignore_users or name in (
            system.ADMIN_USER, system.ROOT_USER, system.REPLICATION_USER):
        raise exception.ReservedName(kind='user', name=name)
    if len(name) > system.MAX_USER_NAME_LENGTH:
        raise exception.InvalidName(
            kind='user', name=name,
            reason='longer than %d characters' % system.MAX_USER_NAME_LENGTH)
    if not _USER_NAME.match(name):
        raise exception.InvalidName(
            kind='user', name=name,
            reason='it must start with a letter or digit and contain only '
                   'letters, digits and ._@+-')
    return name


def check_password(password, user):
    if not isinstance(password, str) or not password:
        raise exception.BadRequest(
            "User '%s' needs a non-empty password." % user)
    if any(ord(c) < 32 for c in password):
        raise exception.BadRequest(
            "The password of user '%s' contains control characters." % user)
    return password
