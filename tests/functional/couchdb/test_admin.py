"""CouchDBAdmin (admin.py) on the real servers: databases, users, access
and root.

Every test runs on the real CouchDB 3.5 and on pouchdb-server (the 1.6
API).  Where the two differ as CouchDB 1.6 and 3.x do (new databases open
on 1.6 and admin-only on 3.x) the test says so; where pouchdb-server
differs from CouchDB 1.6 (test-services.md) the test tolerates it.  Bad
input gets a typed error and leaves the server as it was.
"""

import threading

import pytest

from trove.common import exception
from trove.common.db import models
from trove.guestagent.datastore.experimental.couchdb import (
    admin as couch_admin)
from trove.guestagent.datastore.experimental.couchdb import client as couch
from trove.guestagent.datastore.experimental.couchdb import system

# The default _security CouchDB 3.x gives a new database, which a grant
# keeps (1.6 gives none: the database is open to everyone).
ADMIN_ONLY_ROLES = {'3': ['_admin'], '1': []}


def _user(name, password='Pass-word-1', databases=()):
    return models.User(name=name, password=password,
                       databases=list(databases))


def _security(agent, db):
    return agent.app.client.request('GET', [db, '_security'])


def _user_docs(agent):
    """The ids of the _users documents (design documents left out)."""
    rows = agent.app.client.all_docs(system.USERS_DB)['rows']
    return [row['id'] for row in rows if not row['id'].startswith('_')]


def _reads(agent, name, password, db):
    """Whether ``name`` may read ``db``: True, or the status refused."""
    try:
        agent.client_as(name, password).request('GET', [db])
    except exception.CouchDBAuthError as exc:
        return exc.status
    return True


# -- databases ------------------------------------------------------------

def test_databases_create_list_page_delete(agent):
    admin = agent.admin
    admin.create_database(['db3', 'db1', 'db2', 'a$(id)'])
    assert {'db1', 'db2', 'db3', 'a$(id)'} <= set(agent.app.client.all_dbs())
    assert admin.list_databases() == (['a$(id)', 'db1', 'db2', 'db3'], None)
    assert admin.list_databases(limit=2) == (['a$(id)', 'db1'], 'db1')
    assert admin.list_databases(limit=2, marker='db1') == (['db2', 'db3'],
                                                            None)
    assert admin.list_databases(limit=1, marker='db2',
                                include_marker=True) == (['db2'], 'db2')
    assert admin.list_databases(marker='db3') == ([], None)
    admin.delete_database('db2')
    assert admin.list_databases()[0] == ['a$(id)', 'db1', 'db3']
    with pytest.raises(exception.DatabaseNotFound):
        admin.delete_database('db2')       # pouchdb-server would say 200


def test_ignored_databases_are_not_listed(agent):
    agent.admin.create_database(['d0', 'd1', 'hidden'])
    agent.set('couchdb', ignore_dbs=['_users', 'hidden'])
    assert agent.admin.list_databases() == (['d0', 'd1'], None)


@pytest.mark.parametrize('bad', ['Bad', '_x', 'a b', 'db;rm -rf /',
                                 'x' * 239, '', '_users'])
def test_invalid_database_names_create_nothing(agent, bad):
    before = agent.app.client.all_dbs()
    with pytest.raises(exception.InvalidName):
        agent.admin.create_database(['fine', bad])
    assert agent.app.client.all_dbs() == before


def test_existing_database_in_a_batch_creates_nothing(agent):
    agent.admin.create_database(['old'])
    before = agent.app.client.all_dbs()
    with pytest.raises(exception.DatabaseAlreadyExists):
        agent.admin.create_database(['new', 'old'])
    with pytest.raises(exception.BadRequest):
        agent.admin.create_database(['twice', 'twice'])
    assert agent.app.client.all_dbs() == before


def test_concurrent_creates_of_a_database_fail_typed(agent):
    """Agents racing to create one database: those CouchDB refuses get
    DatabaseAlreadyExists (its 412 when the check before the PUT came
    too early), never a bare CouchDBError.  CouchDB 3.5 lets exactly one
    create it; pouchdb-server may answer 201 to more than one."""
    outcomes = []

    def create():
        try:
            couch_admin.CouchDBAdmin(agent.app).create_database(['racy'])
            outcomes.append('created')
        except Exception as exc:  # noqa: BLE001 - the outcome is checked
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(outcomes) <= {'created', 'DatabaseAlreadyExists'}
    if agent.kind == 'couchdb3':
        assert sorted(outcomes) == ['DatabaseAlreadyExists'] * 5 + [
            'created']
    assert agent.admin.list_databases()[0] == ['racy']


# -- users ----------------------------------------------------------------

def test_create_user_hashes_and_grants(agent):
    admin = agent.admin
    admin.create_database(['db1'])
    admin.create_user([_user('alice', 'Alice-pw-1', ['db1'])])
    doc = agent.app.client.request(
        'GET', [system.USERS_DB, 'org.couchdb.user:alice'])
    assert 'password' not in doc and doc['password_scheme'] == 'pbkdf2'
    assert doc['derived_key'] and doc['salt']
    assert (doc['type'], doc['roles']) == ('user', [])
    security = _security(agent, 'db1')
    assert security['members'] == {
        'roles': ADMIN_ONLY_ROLES[agent.api_version], 'names': ['alice']}
    assert _reads(agent, 'alice', 'Alice-pw-1', 'db1') is True


def test_a_new_database_is_admin_only_on_3x_open_on_1x(agent):
    agent.admin.create_database(['private'])
    agent.admin.create_user([_user('bob', 'Bob-pw-123')])
    expected = 403 if agent.api_version == '3' else True
    assert _reads(agent, 'bob', 'Bob-pw-123', 'private') == expected


def test_create_user_validates_everything_first(agent):
    admin = agent.admin
    admin.create_database(['db1'])
    with pytest.raises(exception.InvalidName):
        admin.create_user([_user('ok1'), _user('bad name')])
    with pytest.raises(exception.ReservedName):
        admin.create_user([_user('ok1'), _user('root')])
    with pytest.raises(exception.BadRequest):
        admin.create_user([_user('ok1'), _user('ok2', password='')])
    with pytest.raises(exception.DatabaseNotFound):
        admin.create_user([_user('ok1', databases=['db1']),
                           _user('ok2', databases=['nodb'])])
    with pytest.raises(exception.InvalidName):
        admin.create_user([_user('ok1', databases=['Bad'])])
    assert _user_docs(agent) == []
    assert 'names' not in (_security(agent, 'db1').get('members') or {})
    assert admin.list_databases()[0] == ['db1']


def test_existing_user_is_refused(agent):
    agent.admin.create_user([_user('carol')])
    with pytest.raises(exception.UserAlreadyExists):
        agent.admin.create_user([_user('dan'), _user('carol')])
    assert _user_docs(agent) == ['org.couchdb.user:carol']


def test_get_list_delete_users(agent):
    admin = agent.admin
    admin.create_database(['db1', 'db2'])
    admin.create_user([_user('u1', databases=['db2', 'db1']), _user('u2'),
                       _user('u3'), _user('ignored')])
    agent.set('couchdb', ignore_users=['os_admin', 'root', 'ignored'])
    assert admin.get_user('missing') is None
    u1 = admin.get_user('u1')
    assert (u1.name, u1.databases, u1.password) == ('u1', ['db1', 'db2'],
                                                     None)
    page, marker = admin.list_users(limit=2)
    assert [u.name for u in page] == ['u1', 'u2'] and marker == 'u2'
    assert page[0].databases == ['db1', 'db2'] and page[1].databases == []
    page, marker = admin.list_users(marker='u2')
    assert [u.name for u in page] == ['u3'] and marker is None
    admin.delete_user('u1')
    assert admin.get_user('u1') is None
    assert 'u1' not in _security(agent, 'db1')['members']['names']
    assert admin.list_access('u2') == []
    with pytest.raises(exception.UserNotFound):
        admin.delete_user('u1')


def test_change_passwords(agent):
    admin = agent.admin
    admin.create_database(['db1'])
    admin.create_user([_user('dave', 'Old-pass-1', ['db1'])])
    assert _reads(agent, 'dave', 'Old-pass-1', 'db1') is True
    admin.change_passwords([_user('dave', 'New-pass-2')])
    # In force when the call returns: CouchDB 3.x's cache of _users,
    # which knows dave now, has the change.
    assert _reads(agent, 'dave', 'New-pass-2', 'db1') is True
    assert _reads(agent, 'dave', 'Old-pass-1', 'db1') == 401
    with pytest.raises(exception.UserNotFound):
        admin.change_passwords([_user('dave', 'x' * 9), _user('nobody')])
    assert _reads(agent, 'dave', 'New-pass-2', 'db1') is True


def test_rename_keeps_password_and_access(agent):
    admin = agent.admin
    admin.create_database(['db1'])
    admin.create_user([_user('erin', 'Erin-pw-1', ['db1'])])
    admin.update_attributes('erin', {'name': 'erin2', 'host': '10.0.0.1'})
    assert admin.get_user('erin') is None
    assert admin.get_user('erin2').databases == ['db1']
    assert _security(agent, 'db1')['members']['names'] == ['erin2']
    assert _reads(agent, 'erin2', 'Erin-pw-1', 'db1') is True


def test_rename_with_new_password_and_password_only(agent):
    admin = agent.admin
    admin.create_database(['db1'])
    admin.create_user([_user('fay', 'Fay-pw-1', ['db1']), _user('gus')])
    admin.update_attributes('fay', {'name': 'fay2', 'password': 'Fay-pw-2'})
    assert _reads(agent, 'fay2', 'Fay-pw-2', 'db1') is True
    admin.update_attributes('fay2', {'password': 'Fay-pw-3'})
    assert _reads(agent, 'fay2', 'Fay-pw-3', 'db1') is True
    assert _reads(agent, 'fay2', 'Fay-pw-2', 'db1') == 401
    with pytest.raises(exception.UserAlreadyExists):
        admin.update_attributes('fay2', {'name': 'gus'})
    with pytest.raises(exception.InvalidName):
        admin.update_attributes('fay2', {'name': 'bad name'})
    assert admin.get_user('fay2') is not None
    assert sorted(_user_docs(agent)) == ['org.couchdb.user:fay2',
                                         'org.couchdb.user:gus']


# -- access ---------------------------------------------------------------

def test_grant_keeps_others_and_revoke_removes_one(agent):
    admin = agent.admin
    admin.create_database(['shared'])
    admin.create_user([_user('u1', 'U1-pass-1'), _user('u2', 'U2-pass-1'),
                       _user('u3', 'U3-pass-1')])
    agent.app.client.request('PUT', ['shared', '_security'], json={
        'admins': {'names': ['owner'], 'roles': ['dba']},
        'members': {'names': [], 'roles': []}})
    admin.grant_access('u1', ['shared'])
    admin.grant_access('u2', ['shared'])
    admin.grant_access('u2', ['shared'])
    security = _security(agent, 'shared')
    assert security['members'] == {'names': ['u1', 'u2'], 'roles': []}
    assert security['admins'] == {'names': ['owner'], 'roles': ['dba']}
    assert admin.list_access('u1') == ['shared']
    # A user who is not a member: CouchDB 3.x says 403, pouchdb-server 401.
    assert _reads(agent, 'u3', 'U3-pass-1', 'shared') in (401, 403)
    admin.revoke_access('u1', 'shared')
    security = _security(agent, 'shared')
    assert security['members']['names'] == ['u2']
    assert security['admins'] == {'names': ['owner'], 'roles': ['dba']}
    assert admin.list_access('u1') == []
    assert _reads(agent, 'u2', 'U2-pass-1', 'shared') is True
    assert _reads(agent, 'u1', 'U1-pass-1', 'shared') in (401, 403)


def test_grant_checks_user_and_every_database_first(agent):
    admin = agent.admin
    admin.create_database(['db1'])
    admin.create_user([_user('u1')])
    before = _security(agent, 'db1')
    with pytest.raises(exception.DatabaseNotFound):
        admin.grant_access('u1', ['db1', 'nodb'])
    with pytest.raises(exception.UserNotFound):
        admin.grant_access('nobody', ['db1'])
    with pytest.raises(exception.InvalidName):
        admin.grant_access('u1', ['db1', 'Bad'])
    assert _security(agent, 'db1') == before
    assert admin.list_access('u1') == []


def test_list_access_counts_db_admin_names(agent):
    admin = agent.admin
    admin.create_database(['db1', 'db2'])
    admin.create_user([_user('u1')])
    agent.app.client.request('PUT', ['db2', '_security'], json={
        'admins': {'names': ['u1'], 'roles': []},
        'members': {'names': [], 'roles': []}})
    admin.grant_access('u1', ['db1'])
    assert admin.list_access('u1') == ['db1', 'db2']
    assert admin.get_user('u1').databases == ['db1', 'db2']


# -- root -----------------------------------------------------------------

def _root_is_admin(agent, password):
    try:
        info = agent.client_as('root', password).session_info()
    except exception.CouchDBAuthError:
        return False
    return '_admin' in info['userCtx']['roles']


def test_root_lifecycle(agent):
    admin = agent.admin
    assert admin.is_root_enabled() is False
    assert admin.get_root_password() is None
    root = admin.enable_root()
    assert (root.name, root.is_root) == ('root', True)
    assert root.password not in (None, 'None', '')
    assert len(root.password) == 36
    # Root logs in as soon as enable_root returns, with its password
    # stored hashed.
    assert _root_is_admin(agent, root.password)
    stored = agent.app.client.config_get('admins', 'root')
    assert stored.startswith('-pbkdf2') and root.password not in stored
    assert admin.is_root_enabled() is True
    assert admin.get_root_password() == root.password
    again = admin.enable_root('Given-Root-1')
    assert again.password == admin.get_root_password() == 'Given-Root-1'
    assert _root_is_admin(agent, 'Given-Root-1')
    admin.disable_root()
    assert admin.is_root_enabled() is False
    assert admin.get_root_password() is None
    admin.disable_root()                      # twice is fine
    assert not _root_is_admin(agent, 'Given-Root-1')


def test_root_disabled_at_once_stays_disabled(agent):
    """CouchDB 3.x hashes a new admin's password after it answered, and
    writes the hash back: a delete in between used to be undone."""
    for attempt in range(5):
        agent.admin.enable_root('Root-pass-%d' % attempt)
        agent.admin.disable_root()
    # Longer than CouchDB takes to hash a password (0.2 to 0.7 s here).
    for _attempt in couch.polling_loop(2, 0.1):
        assert agent.admin.is_root_enabled() is False
    assert not _root_is_admin(agent, 'Root-pass-4')


def test_enable_root_refuses_a_bad_password(agent):
    with pytest.raises(exception.BadRequest):
        agent.admin.enable_root('')
    with pytest.raises(exception.BadRequest):
        agent.admin.enable_root('with\nnewline')
    assert agent.admin.is_root_enabled() is False
