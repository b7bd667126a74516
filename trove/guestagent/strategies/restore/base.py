"""What a restore strategy is: it brings a backup back into a data dir."""

import abc


class RestoreRunner(abc.ABC):
    """Restores one backup (``backup_info``) into ``restore_location``."""

    def __init__(self, context, backup_info, restore_location, app):
        self.context = context
        self.backup_info = backup_info
        self.restore_location = restore_location
        self.app = app

    @abc.abstractmethod
    def restore(self):
        """Restore; raise when the result cannot be trusted."""
