"""What survives a guest upgrade: Trove's pre_upgrade and post_upgrade.

An upgrade rebuilds the instance's root disk from a new image; only the data
volume stays.  ``pre_upgrade`` copies onto the data volume what the new root
disk would not have: the CouchDB configuration files that are the instance's
own (``[couchdb] upgrade_preserved_files``: ``local.ini`` with the server
admins and the ``uuid`` that replication checkpoints hash, ``local.d/``,
``vm.args`` with the 3.x node name) and the agent's state (its admin
credentials, replication and configuration-group state, prepare markers).
It stops CouchDB and unmounts the volume, and returns where everything is.
``post_upgrade`` mounts the volume, puts the files back, starts CouchDB and
checks that the server has the same uuid and that the agent's admin still
logs in.
"""

import os
import shutil

from oslo_log import log as logging

from trove.common import cfg
from trove.common import exception
from trove.guestagent import volume

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

# Beside the data, on the volume; removed by post_upgrade.
SAVE_DIR_NAME = '.trove-upgrade'
CONFIG_PART = 'config'
STATE_PART = 'state'


def _preserved(config_dir):
    """[(path on the root disk, name in the save directory)]."""
    found = []
    for index, entry in enumerate(CONF.couchdb.upgrade_preserved_files):
        path = entry if os.path.isabs(entry) else os.path.join(config_dir,
                                                                entry)
        found.append((path, '%02d-%s' % (index, os.path.basename(path))))
    return found


def _copy(source, target):
    if os.path.isdir(source):
        shutil.copytree(source, target, symlinks=False, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)


def pre_upgrade(app, mount_point, device_path=None):
    """Save what the new root disk needs; return Trove's upgrade_info."""
    uuid = _server_uuid(app)
    save_dir = os.path.join(mount_point, SAVE_DIR_NAME)
    shutil.rmtree(save_dir, ignore_errors=True)
    os.makedirs(os.path.join(save_dir, CONFIG_PART), mode=0o700)
    saved = []
    for path, name in _preserved(CONF.couchdb.config_dir):
        if os.path.exists(path):
            _copy(path, os.path.join(save_dir, CONFIG_PART, name))
            saved.append(path)
    shutil.copytree(CONF.guest_state_dir, os.path.join(save_dir, STATE_PART))
    os.chmod(save_dir, 0o700)
    LOG.info("Saved %s and the agent's state on the data volume for the "
             "upgrade", ', '.join(saved) or 'no configuration file')
    app.stop_db()
    if device_path:
        volume.VolumeDevice(device_path).unmount(mount_point)
    return {'mount_point': mount_point, 'device': device_path,
            'save_dir': save_dir, 'saved_files': saved, 'uuid': uuid}


def post_upgrade(app, upgrade_info):
    """Put the saved files back and bring CouchDB up as it was."""
    info = upgrade_info or {}
    mount_point = info.get('mount_point') or CONF.couchdb.mount_point
    if info.get('device'):
        volume.VolumeDevice(info['device']).mount(mount_point)
    save_dir = os.path.join(mount_point, SAVE_DIR_NAME)
    if not os.path.isdir(save_dir):
        raise exception.GuestStateError(
            reason='nothing saved for the upgrade in %s: was pre_upgrade '
                   'run?' % save_dir)
    for path, name in _preserved(CONF.couchdb.config_dir):
        source = os.path.join(save_dir, CONFIG_PART, name)
        if os.path.exists(source):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _copy(source, path)
    os.makedirs(CONF.guest_state_dir, mode=0o700, exist_ok=True)
    _copy(os.path.join(save_dir, STATE_PART), CONF.guest_state_dir)
    os.chmod(CONF.guest_state_dir, 0o700)
    shutil.rmtree(save_dir)
    app.set_data_ownership(mount_point)
    app.start_db()
    app.secure()
    if info.get('uuid'):
        uuid = _server_uuid(app)
        if uuid != info['uuid']:
            raise exception.GuestStateError(
                reason='CouchDB came back with uuid %s instead of %s: '
                       'replication checkpoints would restart from zero'
                       % (uuid, info['uuid']))
    LOG.info("The instance is back after the upgrade")


def _server_uuid(app):
    """The server's uuid, as GET / shows it (1.6 and 3.x)."""
    return app.client.server_info().get('uuid')
