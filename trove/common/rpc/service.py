"""The agent's service: the RPC server on its topic, the heartbeat and the
manager's periodic tasks (replication upkeep)."""

from oslo_config import cfg
from oslo_log import log as logging
import oslo_messaging as messaging
from oslo_service import loopingcall
from oslo_service import service

from trove import rpc

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


class GuestService(service.Service):
    """Serves ``Target(topic="guestagent.<guest_id>", server=<guest_id>)``."""

    def __init__(self, manager, guest_id, key):
        super().__init__()
        self.manager = manager
        self.guest_id = guest_id
        self.key = key
        self.server = None
        self.heartbeat = None
        self.tasks = []

    def start(self):
        super().start()
        target = messaging.Target(topic="guestagent.%s" % self.guest_id,
                                  server=self.guest_id,
                                  version=self.manager.target.version)
        self.server = rpc.get_server(target, [self.manager], key=self.key)
        self.manager.on_agent_start()
        self.server.start()
        LOG.info("Serving topic %s (guest API %s).", target.topic,
                 target.version)
        self.heartbeat = loopingcall.FixedIntervalLoopingCall(
            self.manager.status.heartbeat)
        self.heartbeat.start(interval=CONF.report_interval,
                             initial_delay=0)
        for task, interval in self.manager.periodic_tasks():
            looping = loopingcall.FixedIntervalLoopingCall(task)
            looping.start(interval=interval, initial_delay=interval)
            self.tasks.append(looping)

    def stop(self, graceful=False):
        for looping in self.tasks:
            looping.stop()
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.server is not None:
            self.server.stop()
            self.server.wait()
        rpc.cleanup()
        super().stop(graceful)

    def wait(self):
        for looping in self.tasks:
            looping.wait()
        if self.heartbeat is not None:
            self.heartbeat.wait()
        super().wait()
