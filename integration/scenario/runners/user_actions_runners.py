"""user_actions: ``trove user-*``: users, their access and passwords."""

import time

from integration.scenario import control_plane as cp
from integration.scenario.helpers.test_helper import DataType
from integration.scenario.runners import base
from integration.scenario.runners.database_actions_runners import (
    NOTIFICATION)

REFUSED = (401, 403)


class UserActionsRunner(base.TestRunner):

    def _users(self):
        return self.helper.get_valid_user_definitions()

    def _client(self, user, password=None):
        return self.helper.create_client(
            self.instance.couchdb.url, user['name'],
            password or user['password'])

    def run_create_user_databases(self):
        self.databases = sorted({d for u in self._users()
                                 for d in u['databases']})
        self.instance.api.create_database(
            [cp.database(d) for d in self.databases])
        self.wait_until(lambda: set(self.databases) <= set(
            self.names(self.instance.api.list_databases())), 30,
            'the users\' databases')

    def run_create_users(self):
        self.renamed = {}
        self.before = self.names(self.instance.api.list_users())
        self.instance.api.create_user(
            [cp.user(u['name'], u['password'], u['databases'])
             for u in self._users()])
        self.wait_until(lambda: {u['name'] for u in self._users()} <= set(
            self.names(self.instance.api.list_users())), 30,
            'the new users listed')

    def run_show_users(self):
        for user in self._users():
            shown = self.instance.api.get_user(user['name'], '%')
            assert shown['_name'] == user['name'], shown
            assert shown['_password'] is None, 'a password is shown'
            assert sorted(d['_name'] for d in shown['_databases']) == sorted(
                user['databases'])
        assert self.instance.api.get_user('scenario_nobody', '%') is None

    def run_list_users(self):
        expected = sorted(self.before + [u['name'] for u in self._users()])
        assert self.names(self.instance.api.list_users()) == expected
        assert self.walk_pages(self.instance.api.list_users) == expected

    def run_users_reach_only_their_databases(self):
        first, second = self._users()[:2]
        database = first['databases'][0]
        assert self._client(first).write(database, 'by-first', {}) == 201
        assert self._client(second).status('GET', database) in REFUSED

    def run_grant_and_revoke_access(self):
        first, second = self._users()[:2]
        database = first['databases'][0]
        api = self.instance.api
        api.grant_access(second['name'], '%', [database])
        # A grant to a second user keeps the first one's access.
        for user in (first, second):
            assert [d['_name'] for d in api.list_access(
                user['name'], '%')] == [database], user['name']
        assert self._client(second).write(database, 'by-second', {}) == 201
        api.revoke_access(second['name'], '%', database)
        assert api.list_access(second['name'], '%') == []
        assert self._client(second).status('GET', database) in REFUSED
        assert self._client(first).write(database, 'first-again', {}) == 201

    def run_change_user_password(self):
        first = self._users()[0]
        self.instance.api.change_passwords(
            [{'_name': first['name'], '_password': 'changed-pw'}])
        database = first['databases'][0]
        self.wait_until(lambda: self._client(first, 'changed-pw').can_read(
            database), 30, 'the new password accepted')
        assert self._client(first).status('GET', database) in REFUSED

    def run_rename_user(self):
        first = self._users()[0]
        renamed = first['name'] + '_renamed'
        self.instance.api.update_attributes(
            first['name'], '%', {'name': renamed, 'password': 'renamed-pw'})
        # A cast: the new name appears before the old one goes.
        self.wait_until(
            lambda: (self.instance.api.get_user(renamed, '%') and
                     self.instance.api.get_user(first['name'], '%') is None),
            30, 'the renamed user in place of the old name')
        assert [d['_name'] for d in self.instance.api.list_access(
            renamed, '%')] == first['databases']
        assert self._client({'name': renamed}, 'renamed-pw').can_read(
            first['databases'][0])
        self.renamed[first['name']] = renamed

    def run_create_users_with_invalid_names(self):
        instance = self.instance
        api = instance.api.__class__(instance.context(NOTIFICATION),
                                     instance.id, key=instance.agent.key)
        before = self.names(instance.api.list_users())
        for bad in self.helper.get_invalid_user_names():
            since = time.time()
            api.create_user([cp.user('scenario_not_created', 'pw'),
                             cp.user(bad, 'pw')])
            failure = self.conductor.wait_for('notify_exc_info', instance.id,
                                              since=since)
            assert bad in failure.kwargs['message'], failure
        assert self.names(instance.api.list_users()) == before

    def run_delete_users(self):
        names = [self.renamed.get(u['name'], u['name'])
                 for u in self._users()]
        for name in names:
            self.instance.api.delete_user({'_name': name, '_host': '%'})
        self.wait_until(lambda: self.names(self.instance.api.list_users()) ==
                        self.before, 30, 'the users gone')
        gone = self._client({'name': names[0]}, 'renamed-pw')
        assert gone.status('GET', '_session') in REFUSED or not gone.get(
            '_session')['userCtx']['name']

    def run_delete_user_databases(self):
        for name in self.databases:
            self.instance.api.delete_database(cp.database(name))
        self.wait_until(lambda: not set(self.databases) & set(
            self.names(self.instance.api.list_databases())), 30,
            'the users\' databases gone')

    def run_verify_helper_user_intact(self):
        self.helper.verify_data(DataType.tiny, self.instance.couchdb.url)
