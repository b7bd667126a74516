"""A backup as the conductor sees it: BUILDING, then COMPLETED or FAILED.

The agent keeps a marker file for each running backup in
``guest_state_dir``; if the agent stops during a backup, the next start
finds the marker and reports that backup FAILED instead of leaving it
BUILDING for ever.
"""

import json
import os
import time

from oslo_config import cfg
from oslo_log import log as logging

from trove.common import files
from trove.conductor import api as conductor_api
from trove.guestagent.backup import storage as storage_mod

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

MARKER_PREFIX = 'backup-running-'
GB = 1024.0 ** 3


def _marker(backup_id):
    return os.path.join(CONF.guest_state_dir,
                        '%s%s.json' % (MARKER_PREFIX, backup_id))


def _update(context, backup_id, **fields):
    conductor_api.API(context).update_backup(
        CONF.guest_id, backup_id, sent=time.time(), **fields)


def create_backup(context, backup_info, app, strategy_cls):
    """Run one backup, telling the conductor how it goes; return what the
    conductor was told of the completed backup."""
    backup_id = backup_info['id']
    os.makedirs(CONF.guest_state_dir, mode=0o700, exist_ok=True)
    files.write_atomically(_marker(backup_id), json.dumps(
        {'id': backup_id, 'started': time.time()}).encode(), 0o600)
    try:
        runner = strategy_cls(
            context, backup_info, app,
            storage_mod.get_storage(context,
                                    backup_info.get('swift_container')))
        _update(context, backup_id, state='BUILDING',
                size=round(runner.data_size() / GB, 3))
        result = runner.run()
    except Exception as exc:
        report_failed(context, backup_info, exc, strategy_cls.backup_type)
        raise
    completed = {'checksum': result.checksum, 'location': result.location,
                 'backup_type': runner.backup_type}
    _update(context, backup_id, state='COMPLETED', success=True,
            size=round(result.size / GB, 3), note=result.note, **completed)
    # Only now: had the agent died before the last update, the marker would
    # make its next start report the backup instead of leaving it BUILDING.
    _remove(_marker(backup_id))
    LOG.info("Backup %s completed: %s", backup_id, result.location)
    return completed


def report_failed(context, backup_info, exc, backup_type=None):
    """Tell the conductor the backup failed, and why."""
    backup_id = backup_info['id']
    LOG.error("Backup %s failed: %s", backup_id, _short(exc),
              exc_info=exc)
    fields = {'backup_type': backup_type} if backup_type else {}
    _update(context, backup_id, state='FAILED', success=False,
            note='Backup failed: %s' % _short(exc), **fields)
    _remove(_marker(backup_id))


def report_interrupted(context):
    """Report backups a stopped agent left running as FAILED."""
    try:
        names = os.listdir(CONF.guest_state_dir)
    except FileNotFoundError:
        return
    for name in sorted(names):
        if not (name.startswith(MARKER_PREFIX) and name.endswith('.json')):
            continue
        backup_id = name[len(MARKER_PREFIX):-len('.json')]
        LOG.error("Backup %s was interrupted by a stop of the agent; "
                  "reporting it FAILED", backup_id)
        _update(context, backup_id, state='FAILED', success=False,
                note='Backup interrupted: the guest agent stopped while '
                     'it was running.')
        _remove(os.path.join(CONF.guest_state_dir, name))


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _short(exc, limit=480):
    text = '%s: %s' % (type(exc).__name__, exc)
    return text if len(text) <= limit else text[:limit] + '...'
