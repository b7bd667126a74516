"""Prepare bookkeeping and the status heartbeat of a guest.

Prepare writes a start marker and reports ``building``; when it ends it
writes an end marker and reports the real status, or reports ``failed to
spawn``.  The markers live in ``guest_state_dir`` and survive agent restarts,
so heartbeats resume after a reboot.  Every heartbeat reports the status just
observed from the database, never a remembered one.
"""

import os
import threading
import time

from oslo_config import cfg
from oslo_log import log as logging

from trove.common import instance
from trove.conductor import api as conductor_api

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

START_MARKER = 'prepare.start'
END_MARKER = 'prepare.end'


class GuestStatus:
    """Reports the database's status to the conductor.

    ``observe`` is a callable returning the ``ServiceStatus`` the database
    shows right now (the datastore's ``get_actual_status``).
    """

    def __init__(self, observe, context_factory):
        self._observe = observe
        self._context_factory = context_factory
        self._preparing = threading.Event()
        self._restart_required = False
        self._lock = threading.Lock()

    def _marker(self, name):
        return os.path.join(CONF.guest_state_dir, name)

    def _touch(self, name):
        os.makedirs(CONF.guest_state_dir, mode=0o700, exist_ok=True)
        with open(self._marker(name), 'w') as f:
            f.write('%f\n' % time.time())

    @property
    def prepare_completed(self):
        return os.path.exists(self._marker(END_MARKER))

    @property
    def prepare_failed(self):
        """A prepare started (here or before a restart) and never ended."""
        return (os.path.exists(self._marker(START_MARKER))
                and not self.prepare_completed
                and not self._preparing.is_set())

    def begin_install(self):
        self._preparing.set()
        for name in (END_MARKER, START_MARKER):
            if os.path.exists(self._marker(name)):
                os.unlink(self._marker(name))
        self._touch(START_MARKER)
        self.send(instance.ServiceStatus.BUILDING)

    def end_install(self, error_occurred=False):
        try:
            if error_occurred:
                self.send(instance.ServiceStatus.FAILED)
                return
            self._touch(END_MARKER)
            self.send(self.observe())
        finally:
            self._preparing.clear()

    def set_restart_required(self, required=True):
        self._restart_required = required

    def observe(self):
        status = self._observe()
        if self._restart_required and status.is_running:
            return instance.ServiceStatus.RESTART_REQUIRED
        return status

    def current(self):
        """What a heartbeat would report now, or None before prepare."""
        if self.prepare_completed:
            return self.observe()
        if self._preparing.is_set():
            return instance.ServiceStatus.BUILDING
        if self.prepare_failed:
            return instance.ServiceStatus.FAILED
        return None

    def heartbeat(self):
        """The periodic report; never raises, a failure is logged loudly."""
        try:
            status = self.current()
            if status is not None:
                self.send(status)
        except Exception:
            LOG.exception("Could not report the status to the conductor.")

    def send(self, status):
        with self._lock:
            LOG.debug("Reporting status %s", status.description)
            conductor_api.API(self._context_factory()).heartbeat(
                CONF.guest_id, {'service_status': status.description},
                sent=time.time())
