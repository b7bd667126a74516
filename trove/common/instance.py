"""Status values a guest reports to the conductor in its heartbeats.

The values are Trove's own descriptions: the conductor refuses a heartbeat
whose ``service_status`` is not one of them, so they must never change.
"""

import enum


class ServiceStatus(enum.Enum):
    RUNNING = 'running'
    BLOCKED = 'blocked'
    PAUSED = 'paused'
    SHUTDOWN = 'shutdown'
    CRASHED = 'crashed'
    FAILED = 'failed to spawn'
    BUILDING = 'building'
    PROMOTING = 'promoting replica'
    EJECTING = 'ejecting replica source'
    LOGGING = 'transferring guest logs'
    UNKNOWN = 'unknown'
    NEW = 'new'
    INSTANCE_READY = 'instance ready'
    RESTART_REQUIRED = 'restart required'
    HEALTHY = 'healthy'

    @property
    def description(self):
        return self.value

    @property
    def is_running(self):
        return self in (ServiceStatus.RUNNING, ServiceStatus.HEALTHY,
                        ServiceStatus.RESTART_REQUIRED)
