"""Restore strategies: the one for a backup is named by its type."""

from trove.guestagent import strategies


def get_restore_strategy(name, namespace):
    """The restore strategy for backups of type ``name``."""
    return strategies.load('restore', name, namespace)
