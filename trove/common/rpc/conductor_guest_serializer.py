"""Encrypts what the guest sends to the conductor, as Trove's guests do.

Each value becomes ``{"entity": <b64>, "csz-instance-id": guest_id}`` (JSON
text) and the context ``{"context": <b64>, "csz-instance-id": guest_id}``,
so the conductor can look up the instance key by the clear instance ID.
"""

from oslo_serialization import jsonutils

from trove.common import crypto_utils as cu
from trove.common.rpc import serializer


class ConductorGuestSerializer(serializer.TroveSerializer):

    def __init__(self, base, key, guest_id=None):
        self._key = key
        self._guest_id = guest_id
        super().__init__(base)

    def _instance_id(self):
        if self._guest_id is not None:
            return self._guest_id
        from trove.common import cfg
        return cfg.CONF.guest_id

    def _serialize_entity(self, ctxt, entity):
        if self._key is None:
            return entity
        value = cu.encode_data(cu.encrypt_data(jsonutils.dumps(entity),
                                               self._key))
        return jsonutils.dumps({'entity': value,
                                'csz-instance-id': self._instance_id()})

    def _serialize_context(self, ctxt):
        if self._key is None:
            return ctxt
        return {'context': cu.encode_data(
                    cu.encrypt_data(jsonutils.dumps(ctxt), self._key)),
                'csz-instance-id': self._instance_id()}
