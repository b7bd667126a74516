"""The registry that maps ``datastore_manager`` to a manager class."""

from oslo_config import cfg
from oslo_utils import importutils

from trove.common import exception

CONF = cfg.CONF

DEFAULT_MANAGERS = {
    'couchdb': 'trove.guestagent.datastore.experimental.couchdb.'
               'manager.Manager',
}


def datastore_registry():
    """Built-in managers, extended or overridden by datastore_registry_ext."""
    registry = dict(DEFAULT_MANAGERS)
    registry.update(CONF.datastore_registry_ext or {})
    return registry


def manager_class(datastore_manager):
    """The manager class registered for ``datastore_manager``."""
    registry = datastore_registry()
    if datastore_manager not in registry:
        raise exception.ConfigurationError(
            reason="datastore_manager '%s' is not registered (known: %s)" % (
                datastore_manager, ", ".join(sorted(registry))))
    try:
        return importutils.import_class(registry[datastore_manager])
    except (ImportError, ValueError, AttributeError) as exc:
        raise exception.ConfigurationError(
            reason="manager '%s' of datastore '%s' cannot be loaded: %s" % (
                registry[datastore_manager], datastore_manager,
                exc)) from exc
