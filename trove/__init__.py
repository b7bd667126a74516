"""Apache CouchDB guest agent for OpenStack Trove.

oslo.service is told to use its threading backend before anything imports it
(oslo.messaging does, through oslo.service's looping calls): this project never
uses eventlet and never monkey-patches.
"""

from oslo_service import backend as _backend

if _backend.get_backend_type() is None:
    _backend.init_backend(_backend.BackendType.THREADING)
