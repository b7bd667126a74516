"""A stand-in for Trove's conductor: records what guests send it, and keeps
what Trove 26's conductor would make of it.

It listens on the ``trove-conductor`` topic of the real broker and decrypts
each message exactly as Trove's conductor does (the clear
``csz-instance-id`` picks the instance key), so a test sees what a real
control plane would see: every message as received, and (``TroveTables``)
the instance statuses and backup rows Trove would hold after them.
"""

import threading
import time

import oslo_messaging as messaging

from integration.services import base
from trove.common.rpc import conductor_host_serializer
from trove.common.rpc import serializer as sz

# What ServiceStatus.from_description accepts in Trove 26
# (trove/instance/service_status.py): every description of its lookup
# table.  'upgrading' is not one: RESTARTING took its code, 0x22.
TROVE_STATUSES = frozenset((
    'running', 'blocked', 'paused', 'shutdown', 'crashed', 'failed to spawn',
    'building', 'promoting replica', 'ejecting replica source',
    'transferring guest logs', 'unknown', 'new', 'deleted',
    'guestagent error', 'instance ready', 'restart required', 'healthy',
    'restarting'))
# The columns of Trove 26's ``backups`` table (its migrations 906cffda7b29
# and 7ee6154548a6): update_backup writes only these.
BACKUP_COLUMNS = frozenset((
    'id', 'name', 'description', 'location', 'backup_type', 'size',
    'tenant_id', 'state', 'instance_id', 'checksum', 'backup_timestamp',
    'deleted', 'created', 'updated', 'deleted_at', 'parent_id',
    'datastore_version_id', 'storage_driver'))


class Message:
    def __init__(self, method, context, kwargs):
        self.method = method
        self.context = context
        self.kwargs = kwargs
        self.received = time.time()
        # For heartbeat and update_backup: whether Trove would apply it.
        self.applied = None

    def __repr__(self):
        flag = {None: '', True: ' applied', False: ' dropped'}[self.applied]
        return "<%s%s %s>" % (self.method, flag, self.kwargs)


class TroveTables:
    """What Trove 26's conductor writes, by its own rules.

    The rules are those of ``trove/conductor/manager.py`` of Trove 26
    (``Manager._message_too_old``, ``heartbeat``, ``update_backup``; in
    ``.cache/trove26-venv/lib/python3*/site-packages/trove/``):

    - per instance and method, a message whose ``sent`` is not later than
      the last one kept (``conductor_lastseen``) is dropped; a message
      without ``sent`` is kept and leaves that mark alone;
    - a heartbeat kept sets the instance's status to its
      ``payload['service_status']``, if it has one and it is one of
      Trove's descriptions (else ``from_description`` raises);
    - update_backup needs the backup's row, which trove-api creates
      (``create_backup_row``): without one Trove raises NotFound before
      anything else.  A message too old is dropped; then one from another
      instance than the row's is dropped (its ``sent`` still counts); of
      the fields, only the table's columns are written.

    One rule is not mirrored: once an instance's status is ``restart
    required``, Trove 26 drops its heartbeats until trove-api's restart sets
    ``restarting``.  The tests restart a guest through its API, not through
    trove-api, so here a heartbeat after ``restart required`` still applies.
    """

    def __init__(self):
        self._last_seen = {}
        self._held = {}
        self._backups = {}

    def apply(self, message):
        """Apply ``message`` as Trove would; return whether it did."""
        if message.method == 'heartbeat':
            return self._heartbeat(message)
        if message.method == 'update_backup':
            return self._update_backup(message)
        return None

    def held(self, instance_id):
        """The heartbeat whose status Trove holds for the instance."""
        return self._held.get(instance_id)

    def backup_row(self, backup_id):
        row = self._backups.get(backup_id)
        return None if row is None else dict(row)

    def create_backup_row(self, backup_id, instance_id):
        """The row trove-api's Backup.create writes before it asks the
        guest for the backup."""
        self._backups[backup_id] = {'id': backup_id, 'state': 'NEW',
                                    'instance_id': instance_id}

    def _too_old(self, instance_id, method, sent):
        # conductor_lastseen.sent is Float(precision=32): a double, as here.
        if sent is None:
            return False
        last = self._last_seen.get((instance_id, method))
        if last is not None and not float(last) < sent:
            return True
        self._last_seen[(instance_id, method)] = sent
        return False

    def _heartbeat(self, message):
        kwargs = message.kwargs
        if self._too_old(kwargs['instance_id'], 'heartbeat', kwargs['sent']):
            return False
        if kwargs['payload'].get('service_status') not in TROVE_STATUSES:
            return False
        self._held[kwargs['instance_id']] = message
        return True

    def _update_backup(self, message):
        fields = dict(message.kwargs)
        instance_id = fields.pop('instance_id')
        row = self._backups.get(fields.pop('backup_id'))
        if row is None:
            return False
        if self._too_old(instance_id, 'update_backup', fields.pop('sent')):
            return False
        if instance_id != row['instance_id']:
            return False
        row.update((k, v) for k, v in fields.items() if k in BACKUP_COLUMNS)
        return True


class ConductorListener:
    """Serves the conductor API 1.0 and keeps every message it receives."""

    target = messaging.Target(version='1.0')

    def __init__(self, transport, topic='trove-conductor'):
        self.keys = {}
        self.messages = []
        self.trove = TroveTables()
        self._cond = threading.Condition()
        serializer = conductor_host_serializer.ConductorHostSerializer(
            sz.TroveRequestContextSerializer(None), self.keys.__getitem__)
        self._server = messaging.get_rpc_server(
            transport, messaging.Target(topic=topic, server='conductor'),
            [self], serializer=serializer)

    def start(self):
        self._server.start()
        return self

    def stop(self):
        self._server.stop()
        self._server.wait()

    def _record(self, method, context, **kwargs):
        message = Message(method, context, kwargs)
        with self._cond:
            message.applied = self.trove.apply(message)
            self.messages.append(message)
            self._cond.notify_all()

    # The conductor API, as Trove's conductor manager defines it.
    def heartbeat(self, context, instance_id, payload, sent=None):
        self._record('heartbeat', context, instance_id=instance_id,
                     payload=payload, sent=sent)

    def update_backup(self, context, instance_id, backup_id, sent=None,
                      **backup_fields):
        self._record('update_backup', context, instance_id=instance_id,
                     backup_id=backup_id, sent=sent, **backup_fields)

    def report_root(self, context, instance_id, user=None):
        self._record('report_root', context, instance_id=instance_id)

    def notify_end(self, context, serialized_notification,
                   notification_args):
        self._record('notify_end', context,
                     serialized_notification=serialized_notification,
                     notification_args=notification_args)

    def notify_exc_info(self, context, serialized_notification, message,
                        exception):
        self._record('notify_exc_info', context,
                     serialized_notification=serialized_notification,
                     message=message, exception=exception)

    # What tests ask.
    def select(self, method, instance_id=None, since=0.0):
        """Matching messages in the order the guest sent them.

        The listener serves on a thread pool, like the real conductor, so
        messages may be handled out of order; ``sent`` orders them.
        """
        with self._cond:
            found = [m for m in self.messages
                     if m.method == method and m.received >= since
                     and (instance_id is None or
                          m.kwargs.get('instance_id') == instance_id or
                          (m.kwargs.get('serialized_notification') or {})
                          .get('instance_id') == instance_id)]
        return sorted(found, key=lambda m: m.kwargs.get('sent') or
                      m.received)

    def statuses(self, instance_id, since=0.0):
        return [m.kwargs['payload']['service_status']
                for m in self.select('heartbeat', instance_id, since)]

    def status(self, instance_id):
        """The service status Trove would show for the instance now."""
        with self._cond:
            held = self.trove.held(instance_id)
        return held and held.kwargs['payload']['service_status']

    def create_backup_row(self, backup_id, instance_id):
        with self._cond:
            self.trove.create_backup_row(backup_id, instance_id)

    def backup_row(self, backup_id):
        """The backup's row as Trove would hold it now (None: no row)."""
        with self._cond:
            return self.trove.backup_row(backup_id)

    def _wait(self, find, timeout, what, details):
        deadline = time.monotonic() + base.scaled(timeout)
        with self._cond:
            while True:
                found = find()
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError('%s within %ss; %s' % (
                        what, timeout, details()))
                self._cond.wait(remaining)

    def wait_for(self, method, instance_id, predicate=lambda m: True,
                 timeout=30.0, since=0.0):
        """The first matching message, waiting up to ``timeout`` seconds."""
        def find():
            return next((m for m in self.select(method, instance_id, since)
                         if predicate(m)), None)
        return self._wait(
            find, timeout, 'no %s from %s matched' % (method, instance_id),
            lambda: 'got: %s' % self.select(method, instance_id, since)[-5:])

    def wait_for_status(self, instance_id, status, timeout=30.0,
                        since=None):
        """Wait until the status Trove would hold for the instance is
        ``status``, set by a heartbeat received at ``since`` or later
        (default: now); return that heartbeat."""
        since = time.time() if since is None else since

        def find():
            held = self.trove.held(instance_id)
            if (held is not None and held.received >= since and
                    held.kwargs['payload']['service_status'] == status):
                return held
            return None
        return self._wait(
            find, timeout,
            'Trove would not show %s %r' % (instance_id, status),
            lambda: 'it holds %s; last heartbeats: %s' % (
                self.trove.held(instance_id),
                self.select('heartbeat', instance_id, since)[-5:]))
