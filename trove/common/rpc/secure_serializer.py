"""Encrypts RPC arguments and the context with the instance key."""

from oslo_log import log as logging
from oslo_serialization import jsonutils

from trove.common import crypto_utils as cu
from trove.common.rpc import serializer

LOG = logging.getLogger(__name__)


class SecureSerializer(serializer.TroveSerializer):
    """Both ends of the guest topic: the taskmanager client and the agent.

    As in Trove, a value that does not decrypt is passed through unchanged;
    unlike Trove, the agent says so in its log, because a wrong instance key
    otherwise fails silently.
    """

    def __init__(self, base, key):
        self._key = key
        super().__init__(base)

    def _serialize_entity(self, ctxt, entity):
        if self._key is None:
            return entity
        return cu.encode_data(cu.encrypt_data(jsonutils.dumps(entity),
                                              self._key))

    def _deserialize_entity(self, ctxt, entity):
        if self._key is None:
            return entity
        try:
            return jsonutils.loads(cu.decrypt_data(cu.decode_data(entity),
                                                   self._key))
        except (ValueError, TypeError):
            LOG.warning("An RPC argument did not decrypt with this "
                        "instance's key; passing it through unchanged. "
                        "Check instance_rpc_encr_key if this repeats.")
            return entity

    def _serialize_context(self, ctxt):
        if self._key is None:
            return ctxt
        return {'context': cu.encode_data(
            cu.encrypt_data(jsonutils.dumps(ctxt), self._key))}

    def _deserialize_context(self, ctxt):
        if self._key is None or 'context' not in ctxt:
            return ctxt
        try:
            return jsonutils.loads(cu.decrypt_data(
                cu.decode_data(ctxt['context']), self._key))
        except (ValueError, TypeError):
            LOG.error("The request context did not decrypt with this "
                      "instance's key (instance_rpc_encr_key): the caller "
                      "uses another key.")
            return ctxt
