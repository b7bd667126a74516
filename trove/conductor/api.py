"""The guest's client of the Trove conductor (topic ``trove-conductor``).

Every message is a cast, encrypted with the instance key and tagged with the
clear ``csz-instance-id`` (see ``ConductorGuestSerializer``).  ``sent`` is the
time the event happened: the conductor drops a message older than the last
one it saw for the same instance and method.
"""

import time

from oslo_config import cfg
from oslo_log import log as logging
import oslo_messaging as messaging

from trove.common.rpc import conductor_guest_serializer as sz
from trove import rpc

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


class API:
    """API version history: 1.0 - Initial version."""

    API_LATEST_VERSION = '1.0'
    API_BASE_VERSION = '1.0'
    VERSION_ALIASES = {'latest': API_LATEST_VERSION}

    def __init__(self, context):
        self.context = context
        cap = CONF.upgrade_levels.conductor
        version_cap = self.VERSION_ALIASES.get(cap, cap)
        target = messaging.Target(topic=CONF.conductor_queue,
                                  version=version_cap)
        self.client = rpc.get_client(
            target, key=CONF.instance_rpc_encr_key, version_cap=version_cap,
            secure_serializer=sz.ConductorGuestSerializer)

    def _cast(self, method, **kwargs):
        cctxt = self.client.prepare(version=self.API_BASE_VERSION)
        cctxt.cast(self.context, method, **kwargs)

    def heartbeat(self, instance_id, payload, sent=None):
        LOG.debug("Sending heartbeat %s for instance %s", payload,
                  instance_id)
        self._cast('heartbeat', instance_id=instance_id,
                   sent=sent or time.time(), payload=payload)

    def update_backup(self, instance_id, backup_id, sent=None,
                      **backup_fields):
        LOG.debug("Sending backup update %s for backup %s",
                  backup_fields.get('state'), backup_id)
        self._cast('update_backup', instance_id=instance_id,
                   backup_id=backup_id, sent=sent or time.time(),
                   **backup_fields)

    def report_root(self, instance_id):
        self._cast('report_root', instance_id=instance_id)

    def notify_end(self, **notification_args):
        self._cast('notify_end',
                   serialized_notification=self._notification(),
                   notification_args=notification_args)

    def notify_exc_info(self, message, exception):
        self._cast('notify_exc_info',
                   serialized_notification=self._notification(),
                   message=message, exception=exception)

    def _notification(self):
        serialized = dict(self.context.notification or {})
        serialized['instance_id'] = CONF.guest_id
        return serialized
