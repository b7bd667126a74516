"""The scenario groups: their steps, what they depend on, their order.

As in Trove's scenario tests, a group is an ordered list of steps run by
one runner, ``depends_on`` names the groups that must run first (and are
run first when the group is asked for alone) and ``runs_after`` only
orders groups that are run together.  Every step is a ``run_<step>``
method of the group's runner.
"""

import collections

from integration.scenario.runners import backup_runners
from integration.scenario.runners import configuration_runners
from integration.scenario.runners import database_actions_runners
from integration.scenario.runners import instance_create_runners
from integration.scenario.runners import instance_delete_runners
from integration.scenario.runners import replication_runners
from integration.scenario.runners import root_actions_runners
from integration.scenario.runners import user_actions_runners

Group = collections.namedtuple(
    'Group', 'name runner steps depends_on runs_after')

INSTANCE_CREATE = 'instance_create'
DATABASE_ACTIONS = 'database_actions'
USER_ACTIONS = 'user_actions'
ROOT_ACTIONS = 'root_actions'
CONFIGURATION = 'configuration'
BACKUP = 'backup'
REPLICATION = 'replication'
INSTANCE_DELETE = 'instance_delete'

GROUPS = [
    Group(INSTANCE_CREATE, instance_create_runners.InstanceCreateRunner, [
        'create_instance',
        'wait_for_instance',
        'verify_databases_and_users',
        'add_initial_data',
        'verify_initial_data',
        'check_filesystem_stats',
        'check_heartbeats_say_running',
    ], depends_on=[], runs_after=[]),
    Group(DATABASE_ACTIONS, database_actions_runners.DatabaseActionsRunner, [
        'create_databases',
        'list_databases',
        'create_existing_database',
        'create_databases_with_invalid_names',
        'delete_databases',
        'verify_helper_data_intact',
    ], depends_on=[INSTANCE_CREATE], runs_after=[]),
    Group(USER_ACTIONS, user_actions_runners.UserActionsRunner, [
        'create_user_databases',
        'create_users',
        'show_users',
        'list_users',
        'users_reach_only_their_databases',
        'grant_and_revoke_access',
        'change_user_password',
        'rename_user',
        'create_users_with_invalid_names',
        'delete_users',
        'delete_user_databases',
        'verify_helper_user_intact',
    ], depends_on=[INSTANCE_CREATE], runs_after=[DATABASE_ACTIONS]),
    Group(ROOT_ACTIONS, root_actions_runners.RootActionsRunner, [
        'check_root_never_enabled',
        'enable_root',
        'check_root_enabled',
        'enable_root_with_password',
        'root_administers_the_server',
        'disable_root',
    ], depends_on=[INSTANCE_CREATE], runs_after=[USER_ACTIONS]),
    Group(CONFIGURATION, configuration_runners.ConfigurationRunner, [
        'enable_root_to_read_the_configuration',
        'attach_dynamic_group',
        'verify_dynamic_group_applied',
        'attach_invalid_groups',
        'detach_dynamic_group',
        'attach_non_dynamic_group',
        'restart_instance',
        'detach_non_dynamic_group',
        'restore_root_state',
    ], depends_on=[INSTANCE_CREATE], runs_after=[ROOT_ACTIONS]),
    Group(BACKUP, backup_runners.BackupRunner, [
        'add_backup_data',
        'create_backup',
        'wait_for_backup',
        'verify_backup_in_swift',
        'add_data_after_backup',
        'restore_backup_as_new_instance',
        'wait_for_restored_instance',
        'verify_restored_data',
        'verify_restored_databases_and_users',
        'delete_restored_instance',
        'delete_backup',
        'remove_backup_data',
    ], depends_on=[INSTANCE_CREATE], runs_after=[CONFIGURATION]),
    Group(REPLICATION, replication_runners.ReplicationRunner, [
        'add_data_for_replication',
        'create_replicas',
        'verify_replicated_data',
        'add_data_after_replicas',
        'verify_replicas_read_only',
        'promote_to_replica_source',
        'verify_new_source',
        'eject_dead_source',
        'verify_after_eject',
        'promote_original_source',
        'detach_replica',
        'delete_replicas',
        'remove_replicated_data',
    ], depends_on=[INSTANCE_CREATE], runs_after=[BACKUP]),
    Group(INSTANCE_DELETE, instance_delete_runners.InstanceDeleteRunner, [
        'delete_instance',
        'verify_instance_gone',
    ], depends_on=[INSTANCE_CREATE],
        runs_after=[DATABASE_ACTIONS, USER_ACTIONS, ROOT_ACTIONS,
                    CONFIGURATION, BACKUP, REPLICATION]),
]

BY_NAME = {group.name: group for group in GROUPS}
NAMES = [group.name for group in GROUPS]


def plan(names):
    """The groups to run for ``names``: their dependencies added, ordered.

    Raises ValueError naming an unknown group.
    """
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise ValueError('unknown scenario group(s) %s; the groups are: %s'
                         % (', '.join(unknown), ', '.join(NAMES)))
    wanted = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(BY_NAME[name].depends_on)
    ordered = []
    while len(ordered) < len(wanted):
        ready = [g.name for g in GROUPS if g.name in wanted
                 and g.name not in ordered
                 and all(d in ordered for d in g.depends_on + g.runs_after
                         if d in wanted)]
        if not ready:
            raise ValueError('the scenario groups depend on each other in '
                             'a circle: %s' % sorted(wanted - set(ordered)))
        ordered.append(ready[0])
    return [BY_NAME[name] for name in ordered]
