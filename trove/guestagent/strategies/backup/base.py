"""What a backup strategy is: it makes a backup stream and stores it."""

import abc
import dataclasses
import os

from oslo_config import cfg

CONF = cfg.CONF


@dataclasses.dataclass(frozen=True)
class BackupResult:
    location: str
    checksum: str
    size: int
    note: str = ''


class BackupRunner(abc.ABC):
    """One backup of one instance.

    ``backup_type`` is the name Trove stores with the backup and passes back
    as ``backup_info['type']`` to pick the restore strategy.
    """

    backup_type = None

    def __init__(self, context, backup_info, app, storage):
        self.context = context
        self.backup_info = backup_info
        self.app = app
        self.storage = storage

    @property
    def backup_id(self):
        return self.backup_info['id']

    @abc.abstractmethod
    def data_size(self):
        """Bytes of data the backup will read (for the BUILDING update)."""

    @abc.abstractmethod
    def run(self):
        """Make and store the backup; return a BackupResult."""


def directory_size(path):
    """Bytes of the regular files below ``path`` (links not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                stat = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            if not os.path.islink(os.path.join(root, name)):
                total += stat.st_size
    return total
