"""Databases, users, access and root of a CouchDB server.

Every call validates all the names it was given before it changes anything,
so bad input gets a clear error and leaves the server as it was.  Changes to
a ``_security`` document are read-modify-write: every member, admin and role
the call was not about is kept.
"""

import functools
import threading

from oslo_log import log as logging

from trove.common import cfg
from trove.common import exception
from trove.common.db import models
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import names
from trove.guestagent.datastore.experimental.couchdb import service
from trove.guestagent.datastore.experimental.couchdb import system

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

# Held by every read-modify-write of a _security document in the agent:
# the admin's changes and the replication upkeep's (which adds its role
# to new databases and copies a source's _security).
SECURITY_LOCK = threading.RLock()


def _serialized(method):
    """Run one change at a time.

    The agent serves RPC messages on a thread pool, and ``_security`` has no
    revision to detect a lost update: two grants racing on one database
    would keep only one of them.  Every change takes ``SECURITY_LOCK``.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _unique(values, kind):
    seen = set()
    for value in values:
        if value in seen:
            raise exception.BadRequest(
                "The %s '%s' is listed twice." % (kind, value))
        seen.add(value)
    return list(values)


def _user_id(name):
    return system.USER_DOC_PREFIX + name


def _security_names(security, role):
    """The names list of ``security[role]``, created if missing."""
    section = security.setdefault(role, {})
    section.setdefault('roles', [])
    return section.setdefault('names', [])


def _named_in(security, name):
    return any(name in (security.get(role) or {}).get('names', [])
               for role in ('members', 'admins'))


def _adding(name):
    """A _security change that makes ``name`` a member."""
    def change(security):
        listed = _security_names(security, 'members')
        if name in listed:
            return False
        listed.append(name)
        return True
    return change


def _renaming(old, new=None):
    """A _security change that drops ``old`` (or renames it ``new``)."""
    def change(security):
        changed = False
        for role in ('members', 'admins'):
            listed = (security.get(role) or {}).get('names', [])
            if old in listed:
                kept = [n for n in listed if n != old]
                if new is not None and new not in kept:
                    kept.append(new)
                security[role]['names'] = kept
                changed = True
        return changed
    return change


def _logs_in(client, name):
    """Whether CouchDB logs ``client`` in as ``name`` now."""
    try:
        info = client.session_info()
    except exception.CouchDBAuthError:
        return False
    return (info or {}).get('userCtx', {}).get('name') == name


def wait_for_password(client, name, password, old_password=None,
                      interval=1.0):
    """Until CouchDB logs ``name`` in with ``password`` (and no longer
    with ``old_password``, when given).

    CouchDB 3.x hashes an admin's password given through its config
    API after it has answered the PUT, and only the hash logs in (0.2
    to 0.7 s later on a 3.5 here).  It then writes the hash back, so
    an admin deleted in between would come back.  A user's new
    password logs in, and the old one stops, once CouchDB's cache of
    _users has followed the change (up to 3.5 s on a 3.5 here).
    """
    timeout = CONF.state_change_wait_time
    new = client.with_credentials(name, password)
    old = (client.with_credentials(name, old_password)
           if old_password is not None else None)
    try:
        for _attempt in couch.polling_loop(timeout, interval):
            if _logs_in(new, name) and not (old and _logs_in(old, name)):
                return
    finally:
        new.close()
        if old is not None:
            old.close()
    raise exception.GuestStateError(
        reason='CouchDB does not log %s in with the new password only '
               'after %s seconds' % (name, timeout))


def _checked_users(users):
    """Users (User or wire dicts) with valid, distinct names."""
    users = [models.User.from_dict(u) if isinstance(u, dict) else u
             for u in users]
    _unique([names.check_user_name(u.name) for u in users], 'user')
    for user in users:
        names.check_password(user.password, user.name)
    return users


class CouchDBAdmin:
    """Databases, users, access and root, through the app's client."""

    def __init__(self, app):
        self.app = app
        self._lock = SECURITY_LOCK

    @property
    def client(self):
        return self.app.client

    # -- databases --------------------------------------------------------

    def _visible_databases(self):
        return [db for db in self.client.all_dbs()
                if names.is_tenant_database(db)]

    def _require_databases(self, dbs):
        for db in dbs:
            if not self.client.exists([db]):
                raise exception.DatabaseNotFound(name=db)

    @_serialized
    def create_database(self, databases):
        dbs = _unique([names.check_database_name(db) for db in databases],
                      'database')
        for db in dbs:
            if self.client.exists([db]):
                raise exception.DatabaseAlreadyExists(name=db)
        for db in dbs:
            self._create_database(db)

    @_serialized
    def ensure_databases(self, databases):
        """Create the databases that are missing and keep those there.

        What prepare does with the databases Trove passes: after a restore
        the backup may hold them already, and a tenant's data is kept.
        Returns the names it created.
        """
        dbs = _unique([names.check_database_name(db) for db in databases],
                      'database')
        missing = [db for db in dbs if not self.client.exists([db])]
        for db in dbs:
            if db not in missing:
                LOG.info("Database %s is there already: kept", db)
        for db in missing:
            self._create_database(db)
        return missing

    def _create_database(self, db):
        try:
            self.client.request('PUT', [db])
        except exception.CouchDBError as exc:
            if exc.status == 412:
                raise exception.DatabaseAlreadyExists(name=db) from exc
            raise
        LOG.info("Created database %s", db)

    def list_databases(self, limit=None, marker=None, include_marker=False):
        return models.paginate(self._visible_databases(), limit, marker,
                               include_marker)

    @_serialized
    def delete_database(self, name):
        names.check_database_name(name)
        self._require_databases([name])
        self.client.request('DELETE', [name])
        LOG.info("Deleted database %s", name)

    def compact_database(self, name):
        """Start compacting a database and cleaning up its old view
        indexes; CouchDB does it in the background (``compact_running``
        in the database's info, ``compactions_running`` in diagnostics)."""
        names.check_database_name(name)
        self._require_databases([name])
        self.client.request('POST', [name, '_compact'], json={},
                            expected=(200, 202))
        self.client.request('POST', [name, '_view_cleanup'], json={},
                            expected=(200, 202))
        LOG.info("Started compacting database %s", name)

    # -- _security --------------------------------------------------------

    def _security(self, db):
        return self.client.request('GET', [db, '_security']) or {}

    def _change_security(self, db, change):
        """Read-modify-write /{db}/_security; ``change`` says if it did."""
        security = self._security(db)
        if change(security):
            self.client.request('PUT', [db, '_security'], json=security)

    def _access_map(self):
        """{user name: [databases naming it in _security]}."""
        access = {}
        for db in sorted(self._visible_databases()):
            security = self._security(db)
            for role in ('members', 'admins'):
                for name in (security.get(role) or {}).get('names', []):
                    if db not in access.setdefault(name, []):
                        access[name].append(db)
        return access

    def _replace_everywhere(self, old, new=None):
        """Remove ``old`` from every _security (or rename it to ``new``)."""
        for db in self._visible_databases():
            self._change_security(db, _renaming(old, new))

    # -- users ------------------------------------------------------------

    def _user_doc(self, name):
        return self.client.get_or_none([system.USERS_DB, _user_id(name)])

    def _require_user(self, name):
        doc = self._user_doc(name)
        if doc is None:
            raise exception.UserNotFound(name=name)
        return doc

    def _put_user_doc(self, doc):
        self.client.request('PUT', [system.USERS_DB, doc['_id']], json=doc)

    def _update_user_doc(self, name, change, attempts=3):
        """Read-modify-write a _users document, retrying lost races."""
        for attempt in range(attempts):
            doc = self._require_user(name)
            change(doc)
            try:
                return self._put_user_doc(doc)
            except exception.CouchDBConflict:
                if attempt == attempts - 1:
                    raise
                LOG.debug("User %s changed under us; retrying", name)

    @_serialized
    def create_user(self, users):
        users = self._checked_new_users(users)
        for user in users:
            if self._user_doc(user.name) is not None:
                raise exception.UserAlreadyExists(name=user.name)
        for user in users:
            self._create_user(user)

    @_serialized
    def ensure_users(self, users):
        """Create the users that are missing; update those there.

        What prepare does with the users Trove passes: a user the restored
        backup holds already keeps its document and gets the password and
        the access the request asks for.
        """
        users = self._checked_new_users(users)
        for user in users:
            if self._user_doc(user.name) is None:
                self._create_user(user)
                continue
            self._set_password(user.name, user.password)
            self._grant(user.name, user.databases)
            LOG.info("User %s is there already: kept, with the password "
                     "and access of the request", user.name)

    def _checked_new_users(self, users):
        """Valid users whose databases all exist, before any change."""
        users = _checked_users(users)
        for user in users:
            for db in user.databases:
                names.check_database_name(db)
        for user in users:
            self._require_databases(user.databases)
        return users

    def _create_user(self, user):
        try:
            self._put_user_doc({
                '_id': _user_id(user.name), 'name': user.name,
                'type': 'user', 'roles': [], 'password': user.password})
        except exception.CouchDBConflict as exc:
            raise exception.UserAlreadyExists(name=user.name) from exc
        LOG.info("Created user %s", user.name)
        self._grant(user.name, user.databases)

    def _user_names(self):
        prefix = system.USER_DOC_PREFIX
        rows = self.client.all_docs(system.USERS_DB, startkey=prefix,
                                    endkey=prefix + '\ufff0')['rows']
        hidden = set(CONF.couchdb.ignore_users) | {
            system.ADMIN_USER, system.ROOT_USER, system.REPLICATION_USER}
        found = (row['id'][len(prefix):] for row in rows)
        return [name for name in found if name not in hidden]

    def list_users(self, limit=None, marker=None, include_marker=False):
        page, next_marker = models.paginate(self._user_names(), limit,
                                            marker, include_marker)
        access = self._access_map() if page else {}
        return ([models.User(name=name, databases=access.get(name, []))
                 for name in page], next_marker)

    def get_user(self, name):
        names.check_user_name(name)
        if self._user_doc(name) is None:
            return None
        return models.User(name=name, databases=self._list_access(name))

    @_serialized
    def delete_user(self, name):
        names.check_user_name(name)
        doc = self._require_user(name)
        self._replace_everywhere(name)
        self.client.request('DELETE', [system.USERS_DB, doc['_id']],
                            params={'rev': doc['_rev']})
        LOG.info("Deleted user %s", name)

    @_serialized
    def change_passwords(self, users):
        users = _checked_users(users)
        for user in users:
            self._require_user(user.name)
        for user in users:
            self._set_password(user.name, user.password)

    def _set_password(self, name, password):
        self._update_user_doc(name, lambda doc: doc.update(password=password))
        # CouchDB 3.x logs users in from a cache of _users that follows
        # the database's changes: for a moment (up to 3.5 s on a 3.5
        # here) the old password still logs in and the new one does not.
        self._wait_for_login(name, password)
        LOG.info("Changed the password of user %s", name)

    @_serialized
    def update_attributes(self, name, attrs):
        """Rename a user and/or change its password ('host' is ignored)."""
        names.check_user_name(name)
        new_name = (attrs or {}).get('name') or name
        password = (attrs or {}).get('password')
        names.check_user_name(new_name)
        if password is not None:
            names.check_password(password, new_name)
        doc = self._require_user(name)
        if new_name != name:
            self._rename_user(doc, new_name, password)
        elif password is not None:
            self._set_password(name, password)

    def _rename_user(self, doc, new_name, password):
        if self._user_doc(new_name) is not None:
            raise exception.UserAlreadyExists(name=new_name)
        new_doc = {'_id': _user_id(new_name), 'name': new_name,
                   'type': 'user', 'roles': doc.get('roles', [])}
        if password is not None:
            new_doc['password'] = password
        else:
            new_doc.update({k: doc[k] for k in service.HASH_FIELDS
                            if k in doc})
        self._put_user_doc(new_doc)
        self._replace_everywhere(doc['name'], new_name)
        self.client.request('DELETE', [system.USERS_DB, doc['_id']],
                            params={'rev': doc['_rev']})
        LOG.info("Renamed user %s to %s", doc['name'], new_name)

    # -- access -----------------------------------------------------------

    def _grant(self, name, databases):
        for db in databases:
            self._change_security(db, _adding(name))
            LOG.info("Granted user %s access to database %s", name, db)

    @_serialized
    def grant_access(self, name, databases):
        names.check_user_name(name)
        dbs = [names.check_database_name(db) for db in databases]
        self._require_user(name)
        self._require_databases(dbs)
        self._grant(name, dbs)

    @_serialized
    def revoke_access(self, name, database):
        names.check_user_name(name)
        names.check_database_name(database)
        self._require_user(name)
        self._require_databases([database])
        self._change_security(database, _renaming(name))
        LOG.info("Revoked access of user %s to database %s", name, database)

    def list_access(self, name):
        names.check_user_name(name)
        self._require_user(name)
        return self._list_access(name)

    def _list_access(self, name):
        return [db for db in sorted(self._visible_databases())
                if _named_in(self._security(db), name)]

    # -- root -------------------------------------------------------------

    @_serialized
    def enable_root(self, password=None):
        """Create (or reset) the server admin 'root'; return it."""
        if password is None:
            password = service.generate_password()
        names.check_password(password, system.ROOT_USER)
        self.client.config_set('admins', system.ROOT_USER, password)
        self._wait_for_login(system.ROOT_USER, password)
        self.app.credentials.save_root_password(password)
        LOG.info("Enabled the root user")
        return models.User(name=system.ROOT_USER, password=password,
                           is_root=True)

    @_serialized
    def disable_root(self):
        self.client.config_delete('admins', system.ROOT_USER,
                                  missing_ok=True)
        self.app.credentials.clear_root_password()
        LOG.info("Disabled the root user")

    def _wait_for_login(self, name, password):
        wait_for_password(self.client, name, password,
                          interval=self.app.poll_interval)

    def is_root_enabled(self):
        try:
            admins = self.client.config_get('admins')
        except exception.CouchDBError as exc:
            if exc.status != 404:
                raise
            return False
        return isinstance(admins, dict) and system.ROOT_USER in admins

    def get_root_password(self):
        return self.app.credentials.root_password()
