"""The request context that travels with every RPC message.

Trove sends ``RequestContext.to_dict()`` plus ``limit``, ``marker``,
``service_catalog`` and, for user actions, ``trove_notification``.  The agent
keeps every key it does not know so the context round-trips unchanged.
"""

from oslo_context import context


class TroveContext(context.RequestContext):

    def __init__(self, limit=None, marker=None, service_catalog=None,
                 notification=None, extra=None, instance_id=None, **kwargs):
        self.limit = limit
        self.marker = marker
        self.service_catalog = service_catalog
        self.notification = notification
        self.instance_id = instance_id
        self.extra = dict(extra or {})
        super().__init__(**kwargs)

    def to_dict(self):
        values = dict(self.extra)
        values.update(super().to_dict())
        values.update({'limit': self.limit, 'marker': self.marker,
                       'service_catalog': self.service_catalog})
        if self.notification is not None:
            values['trove_notification'] = self.notification
        return values

    @classmethod
    def from_dict(cls, values, **kwargs):
        values = dict(values)
        known = {}
        for key in ('limit', 'marker', 'service_catalog', 'instance_id'):
            if key in values:
                known[key] = values.pop(key)
        notification = values.pop('trove_notification', None)
        ctx = super().from_dict(values, **kwargs)
        ctx.limit = known.get('limit')
        ctx.marker = known.get('marker')
        ctx.service_catalog = known.get('service_catalog')
        ctx.instance_id = known.get('instance_id')
        ctx.notification = notification
        ctx.extra = {k: v for k, v in values.items()
                     if k not in ctx._known_keys()}
        return ctx

    @classmethod
    def _known_keys(cls):
        return set(context.RequestContext().to_dict()) | {
            'user', 'tenant', 'domain', 'user_domain', 'project_domain'}
