"""The scenario groups, each alone and all together (integration/scenario).

``test_scenario[<group>]`` runs one group after the groups it depends on,
on instances of its own; ``test_scenario[all-groups-together]`` runs every
group in order on one main instance, as a full Trove scenario run does.
``--scenario-group NAME`` (repeatable) runs just those groups together.
A failure names the group and step that failed, with the report of the
steps that ran.
"""

import pytest

from integration.scenario import engine
from integration.scenario import groups
from integration.scenario.helpers import couchdb_helper
from integration.scenario.runners import base

TOGETHER = 'all-groups-together'


def pytest_generate_tests(metafunc):
    if 'scenario_groups' not in metafunc.fixturenames:
        return
    chosen = metafunc.config.getoption('scenario_group')
    if chosen:
        params = [chosen]
        ids = ['+'.join(chosen)]
    else:
        params = [[name] for name in groups.NAMES] + [groups.NAMES]
        ids = groups.NAMES + [TOGETHER]
    metafunc.parametrize('scenario_groups', params, ids=ids)


@pytest.fixture
def cloud(request, guest_factory, control_plane):
    return base.Cloud(guest_factory, control_plane,
                      couchdb_helper.CouchDBHelper(),
                      lambda: request.getfixturevalue('swift'))


def test_scenario(cloud, scenario_groups):
    engine.ScenarioRun(cloud, scenario_groups).run()
