"""Apache CouchDB guest agent for OpenStack Trove.

oslo.service is told to use its threading backend before anything imports it
(oslo.messaging does, through oslo.service's looping calls): this project never
uses eventlet and never monkey-patches.  futurist still imports eventlet when
it is installed (oslo.service depends on it); its deprecation notice is
silenced because nothing here runs on it, and so is the one eventlet's
dnspython gives on import with cryptography 51 and later (DSA deprecated):
both said nothing about the agent and printed on every start.
"""

import warnings

warnings.filterwarnings('ignore', message=r'(?s).*[Ee]ventlet')
warnings.filterwarnings('ignore', message=r'DSA is deprecated',
                        module=r'dns\.')

from oslo_service import backend as _backend  # noqa: E402

if _backend.get_backend_type() is None:
    _backend.init_backend(_backend.BackendType.THREADING)
