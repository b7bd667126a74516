"""Serializers of the RPC layer, wrapped like Trove wraps them.

``SecureSerializer(TroveRequestContextSerializer(base), key)`` is what Trove's
taskmanager and this agent use on the guest topic; the conductor client on the
guest uses ``ConductorGuestSerializer`` instead of ``SecureSerializer``.
"""

import oslo_messaging as messaging

from trove.common.context import TroveContext


class TroveSerializer(messaging.Serializer):
    """Chains to a base serializer, like Trove's serializers do."""

    def __init__(self, base=None):
        self._base = base

    def _serialize_entity(self, context, entity):
        return entity

    def serialize_entity(self, context, entity):
        if self._base:
            entity = self._base.serialize_entity(context, entity)
        return self._serialize_entity(context, entity)

    def _deserialize_entity(self, context, entity):
        return entity

    def deserialize_entity(self, context, entity):
        entity = self._deserialize_entity(context, entity)
        if self._base:
            entity = self._base.deserialize_entity(context, entity)
        return entity

    def _serialize_context(self, context):
        return context

    def serialize_context(self, context):
        if self._base:
            context = self._base.serialize_context(context)
        return self._serialize_context(context)

    def _deserialize_context(self, context):
        return context

    def deserialize_context(self, context):
        context = self._deserialize_context(context)
        if self._base:
            context = self._base.deserialize_context(context)
        return context


class TroveRequestContextSerializer(TroveSerializer):
    """Context object <-> Trove's context dict."""

    def _serialize_context(self, context):
        return context.to_dict()

    def _deserialize_context(self, context):
        context = dict(context)
        context.pop('trace_info', None)
        return TroveContext.from_dict(context)
