"""A stand-in for Trove's conductor: records what guests send it.

It listens on the ``trove-conductor`` topic of the real broker and decrypts
each message exactly as Trove's conductor does (the clear
``csz-instance-id`` picks the instance key), so a test sees what a real
control plane would see.
"""

import threading
import time

import oslo_messaging as messaging

from integration.services import base
from trove.common.rpc import conductor_host_serializer
from trove.common.rpc import serializer as sz


class Message:
    def __init__(self, method, context, kwargs):
        self.method = method
        self.context = context
        self.kwargs = kwargs
        self.received = time.time()

    def __repr__(self):
        return "<%s %s>" % (self.method, self.kwargs)


class ConductorListener:
    """Serves the conductor API 1.0 and keeps every message it receives."""

    target = messaging.Target(version='1.0')

    def __init__(self, transport, topic='trove-conductor'):
        self.keys = {}
        self.messages = []
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
        with self._cond:
            self.messages.append(Message(method, context, kwargs))
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

    def wait_for(self, method, instance_id, predicate=lambda m: True,
                 timeout=30.0, since=0.0):
        """The first matching message, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + base.scaled(timeout)
        with self._cond:
            while True:
                for message in self.select(method, instance_id, since):
                    if predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        "no %s from %s matched within %ss; got: %s" % (
                            method, instance_id, timeout,
                            self.select(method, instance_id, since)[-5:]))
                self._cond.wait(remaining)

    def wait_for_status(self, instance_id, status, timeout=30.0,
                        since=None):
        since = time.time() if since is None else since
        return self.wait_for(
            'heartbeat', instance_id,
            lambda m: m.kwargs['payload']['service_status'] == status,
            timeout=timeout, since=since)
