"""Apache CouchDB guest agent for OpenStack Trove.

oslo.service is told to use its threading backend before anything imports it
(oslo.messaging does, through oslo.service's looping calls): this project never
uses eventlet and never monkey-patches.  futurist still imports eventlet when
it is installed (oslo.service depends on it); its deprecation notice is
silenced because nothing here runs on it.
"""

import warnings

warnings.filterwarnings('ignore', message=r'(?s).*[Ee]ventlet')

from oslo_service import backend as _backend  # noqa: E402

if _backend.get_backend_type() is None:
    _backend.init_backend(_backend.BackendType.THREADING)
