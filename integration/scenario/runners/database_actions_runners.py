"""database_actions: ``trove database-create/list/delete``."""

import time

from integration.scenario import control_plane as cp
from integration.scenario.helpers.test_helper import DataType
from integration.scenario.runners import base

# A request context with a notification, as Trove's API sends casts: a
# failed cast comes back to the conductor as notify_exc_info.
NOTIFICATION = {'notification_classname': 'trove.common.notification.Test',
                'server_type': 'api', 'request_id': 'req-scenario'}


class DatabaseActionsRunner(base.TestRunner):

    def run_create_databases(self):
        self.before = self.names(self.instance.api.list_databases())
        self.created = self.helper.get_valid_database_definitions()
        self.instance.api.create_database(
            [cp.database(name) for name in self.created])
        self.wait_until(
            lambda: set(self.created) <= set(
                self.names(self.instance.api.list_databases())),
            30, 'the new databases listed')

    def run_list_databases(self):
        expected = sorted(self.before + self.created)
        assert self.names(self.instance.api.list_databases()) == expected
        assert self.walk_pages(self.instance.api.list_databases) == expected

    def run_create_existing_database(self):
        failure = self._failed_cast(
            lambda api: api.create_database([cp.database(self.created[0])]))
        assert self.created[0] in failure.kwargs['message'], failure

    def run_create_databases_with_invalid_names(self):
        fine = 'scenario_not_created'
        for bad in self.helper.get_invalid_database_names():
            failure = self._failed_cast(lambda api, bad=bad: (
                api.create_database([cp.database(fine), cp.database(bad)])))
            assert bad in failure.kwargs['message'], failure
        listed = self.names(self.instance.api.list_databases())
        assert listed == sorted(self.before + self.created), (
            'a refused request created something: %s' % listed)

    def run_delete_databases(self):
        for name in self.created:
            self.instance.api.delete_database(cp.database(name))
        self.wait_until(
            lambda: self.names(self.instance.api.list_databases()) ==
            self.before, 30, 'the databases gone')

    def run_verify_helper_data_intact(self):
        self.helper.verify_data(DataType.tiny, self.instance.couchdb.url)

    def _failed_cast(self, cast):
        """Run a cast that must fail; the failure the conductor got."""
        instance = self.instance
        api = instance.api.__class__(instance.context(NOTIFICATION),
                                     instance.id, key=instance.agent.key)
        since = time.time()
        cast(api)
        return self.conductor.wait_for('notify_exc_info', instance.id,
                                       since=since)
