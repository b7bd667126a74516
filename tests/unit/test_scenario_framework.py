"""The scenario framework itself (integration/scenario): which groups a
selection runs, in which order, and what a failure says."""

import pytest

from integration.scenario import engine
from integration.scenario import groups
from integration.scenario.runners import instance_create_runners


def _names(plan):
    return [group.name for group in plan]


@pytest.mark.parametrize('group', groups.NAMES)
def test_a_group_alone_runs_after_what_it_depends_on(group):
    plan = _names(groups.plan([group]))
    assert plan[-1] == group
    if group != groups.INSTANCE_CREATE:
        assert plan == [groups.INSTANCE_CREATE, group]


def test_all_groups_together_run_in_order_with_delete_last():
    plan = _names(groups.plan(list(reversed(groups.NAMES))))
    assert plan == groups.NAMES
    assert plan[0] == groups.INSTANCE_CREATE
    assert plan[-1] == groups.INSTANCE_DELETE


def test_a_chosen_set_is_ordered_by_runs_after():
    assert _names(groups.plan([groups.REPLICATION, groups.BACKUP])) == [
        groups.INSTANCE_CREATE, groups.BACKUP, groups.REPLICATION]


def test_an_unknown_group_is_named():
    with pytest.raises(ValueError, match='backups.*the groups are'):
        groups.plan(['backups'])


@pytest.mark.parametrize('group', groups.GROUPS, ids=groups.NAMES)
def test_every_step_is_a_method_of_its_runner(group):
    for step in group.steps:
        assert callable(getattr(group.runner, 'run_' + step, None)), step
    assert len(set(group.steps)) == len(group.steps)


def test_a_failure_names_the_group_the_step_and_the_cause(monkeypatch):
    runner = instance_create_runners.InstanceCreateRunner
    ran = []
    monkeypatch.setattr(runner, 'run_create_instance',
                        lambda self: ran.append('create_instance'))

    def broken(self):
        raise AssertionError('the heartbeat said crashed')

    monkeypatch.setattr(runner, 'run_wait_for_instance', broken)
    cloud = type('Cloud', (), {'helper': None, 'conductor': None})()
    run = engine.ScenarioRun(cloud, [groups.INSTANCE_CREATE],
                             out=lambda line: None)
    with pytest.raises(engine.ScenarioFailure) as failure:
        run.run()
    message = str(failure.value)
    assert message.startswith(
        "scenario group 'instance_create', step 2 of 7 'wait_for_instance' "
        "failed after")
    assert 'AssertionError: the heartbeat said crashed' in message
    assert 'create_instance' in message and 'ok' in message
    assert 'not run: instance_create/verify_databases_and_users' in message
    assert ran == ['create_instance']
