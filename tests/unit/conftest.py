"""Unit-test fixtures: a clean global configuration for every test."""

from oslo_config import cfg
import pytest

import trove.common.cfg  # noqa: F401  (registers the options)


class Conf:
    """Overrides options of ``cfg.CONF`` for one test."""

    def config(self, group=None, **kwargs):
        for name, value in kwargs.items():
            cfg.CONF.set_override(name, value, group=group)


@pytest.fixture(autouse=True)
def conf(tmp_path):
    """``cfg.CONF`` with a private state dir; every override undone after."""
    overrides = Conf()
    overrides.config(guest_state_dir=str(tmp_path / 'state'), guest_id='g-1')
    yield overrides
    cfg.CONF.reset()
