"""Where backups are kept: ``[DEFAULT] storage_strategy``."""

from oslo_config import cfg

CONF = cfg.CONF


def get_storage(context, container=None):
    """The configured storage, for a request's context."""
    if CONF.storage_strategy == 'local':
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
