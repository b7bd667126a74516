"""Restore strategies: found by the backup's type name in a namespace."""

from oslo_utils import importutils

from trove.common import exception


def get_restore_strategy(name, namespace):
    """The restore strategy class ``name`` of module ``namespace``."""
    try:
        module = importutils.import_module(namespace)
    except ImportError as exc:
        raise exception.ConfigurationError(
            reason="restore strategies module '%s' cannot be loaded: %s" % (
                namespace, exc)) from exc
    strategy = getattr(module, name, None)
    if strategy is None:
        raise exception.BadRequest(
            "No restore strategy for backup type '%s' in %s." % (
                name, namespace))
    return strategy
