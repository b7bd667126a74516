"""Backup, restore and replication strategies, found by name.

Upstream Trove names a strategy with a class name and a module
(``[couchdb] backup_strategy`` + ``backup_namespace``); that is honoured
first.  A name the module does not hold is looked up among the
``trove.guestagent.<kind>.strategies`` entry points (``setup.cfg``), where
other packages can add strategies.
"""

from oslo_utils import importutils
import stevedore

from trove.common import exception


def load(kind, name, namespace=None):
    """The strategy class ``name`` of ``kind`` (backup, restore, ...)."""
    if not name:
        raise exception.ConfigurationError(
            reason="no %s strategy is configured" % kind)
    if namespace:
        try:
            module = importutils.import_module(namespace)
        except ImportError as exc:
            raise exception.ConfigurationError(
                reason="%s strategies module '%s' cannot be loaded: %s" % (
                    kind, namespace, exc)) from exc
        strategy = getattr(module, name, None)
        if strategy is not None:
            return strategy
    group = 'trove.guestagent.%s.strategies' % kind
    try:
        return stevedore.DriverManager(group, name,
                                       invoke_on_load=False).driver
    except stevedore.exception.NoMatches:
        raise exception.BadRequest(
            "No %s strategy named '%s' (looked in %s and the %s entry "
            "points)." % (kind, name, namespace, group)) from None
