"""The oslo.messaging transport, clients and servers, wired like Trove's.

The agent runs on oslo.messaging's threading executor (its default and, from
oslo.messaging 18, its only one): no eventlet and no monkey-patching anywhere
in this project.
"""

from oslo_config import cfg
import oslo_messaging as messaging
from oslo_messaging.rpc import dispatcher

from trove.common import exception
from trove.common.rpc import secure_serializer as ssz
from trove.common.rpc import serializer as sz

CONF = cfg.CONF
TRANSPORT = None
ALLOWED_EXMODS = [exception.__name__]


def init(conf=CONF):
    """Create the process-wide transport from ``transport_url``."""
    global TRANSPORT
    if TRANSPORT is None:
        TRANSPORT = messaging.get_rpc_transport(
            conf, allowed_remote_exmods=ALLOWED_EXMODS)
    return TRANSPORT


def cleanup():
    global TRANSPORT
    if TRANSPORT is not None:
        TRANSPORT.cleanup()
        TRANSPORT = None


def set_defaults(control_exchange='trove'):
    messaging.set_transport_defaults(control_exchange)


def _serializer(key, secure_serializer, base=None, **kwargs):
    return secure_serializer(sz.TroveRequestContextSerializer(base), key,
                             **kwargs)


def get_client(target, key, version_cap=None,
               secure_serializer=ssz.SecureSerializer, **kwargs):
    return messaging.get_rpc_client(
        init(), target, version_cap=version_cap,
        serializer=_serializer(key, secure_serializer, **kwargs))


def get_server(target, endpoints, key,
               secure_serializer=ssz.SecureSerializer):
    return messaging.get_rpc_server(
        init(), target, endpoints,
        serializer=_serializer(key, secure_serializer),
        access_policy=dispatcher.DefaultRPCAccessPolicy)
