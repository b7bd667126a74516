"""The conductor's side of guest -> conductor encryption.

The agent itself never uses this; the integration tests and the demo use it
to read what the agent sends to the conductor exactly as Trove's conductor
reads it: the clear ``csz-instance-id`` picks the instance key.
"""

from oslo_serialization import jsonutils

from trove.common import crypto_utils as cu
from trove.common.rpc import serializer


class ConductorHostSerializer(serializer.TroveSerializer):

    def __init__(self, base, key_for_instance):
        """``key_for_instance(instance_id)`` returns that instance's key."""
        self._key_for = key_for_instance
        super().__init__(base)

    def _deserialize_entity(self, ctxt, entity):
        try:
            envelope = jsonutils.loads(entity)
            instance_id = envelope['csz-instance-id']
        except (ValueError, TypeError, KeyError):
            return entity
        key = self._key_for(instance_id)
        return jsonutils.loads(cu.decrypt_data(
            cu.decode_data(envelope['entity']), key))

    def _deserialize_context(self, ctxt):
        instance_id = ctxt.get('csz-instance-id')
        if instance_id is None:
            return ctxt
        key = self._key_for(instance_id)
        ctxt = jsonutils.loads(cu.decrypt_data(cu.decode_data(ctxt['context']),
                                               key))
        ctxt['instance_id'] = instance_id
        return ctxt
