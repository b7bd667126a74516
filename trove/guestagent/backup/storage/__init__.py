"""Where backups are kept: ``[DEFAULT] storage_strategy``."""

from oslo_config import cfg

CONF = cfg.CONF

# Other spellings of a strategy, as upstream Trove wrote them: until its
# Victoria release the option named the storage class, ``SwiftStorage``.
ALIASES = {'SwiftStorage': 'swift'}


def strategy():
    """The configured strategy's own name: ``swift`` or ``local``."""
    return ALIASES.get(CONF.storage_strategy, CONF.storage_strategy)


def get_storage(context, container=None):
    """The configured storage, for a request's context."""
    if strategy() == 'local':
        from trove.guestagent.backup.storage import local
        return local.LocalStorage(context, container)
    from trove.guestagent.backup.storage import swift
    return swift.SwiftStorage(context, container)


def for_location(context, location):
    """The storage that holds the backup at ``location``."""
    from trove.guestagent.backup.storage import local
    if location.startswith(local.SCHEME):
        return local.LocalStorage(context, _container_of(location))
    from trove.guestagent.backup.storage import swift
    return swift.SwiftStorage(context)


def _container_of(location):
    import os.path
    return os.path.basename(os.path.dirname(location))
