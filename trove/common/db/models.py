"""The schema and user dicts that travel between Trove and the agent.

Trove serializes them as ``{"_name", "_collate", "_character_set"}`` for a
database and ``{"_name", "_password", "_host", "_databases", "_is_root"}``
for a user.  These small classes turn those dicts into values and back, so
the rest of the agent never handles raw wire dicts.
"""

import dataclasses

from trove.common import exception


def _name_of(value, kind):
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        name = value.get('_name', value.get('name'))
        if isinstance(name, str):
            return name
    raise exception.BadRequest(
        "A %s must be a dict with a '_name' string, not %r." % (kind, value))


@dataclasses.dataclass(frozen=True)
class Schema:
    name: str

    @classmethod
    def from_dict(cls, value):
        return cls(_name_of(value, 'database'))

    def to_dict(self):
        return {'_name': self.name, '_collate': None,
                '_character_set': None}


@dataclasses.dataclass
class User:
    name: str
    password: str = None
    host: str = '%'
    databases: list = dataclasses.field(default_factory=list)
    is_root: bool = False

    @classmethod
    def from_dict(cls, value):
        name = _name_of(value, 'user')
        password = value.get('_password', value.get('password'))
        if password is not None and not isinstance(password, str):
            raise exception.BadRequest(
                "The password of user '%s' must be a string." % name)
        dbs = value.get('_databases', value.get('databases')) or []
        return cls(name=name, password=password,
                   host=value.get('_host', value.get('host')) or '%',
                   databases=[Schema.from_dict(d).name for d in dbs],
                   is_root=bool(value.get('_is_root', False)))

    def to_dict(self):
        return {'_name': self.name, '_password': self.password,
                '_host': self.host,
                '_databases': [Schema(d).to_dict() for d in self.databases],
                '_is_root': self.is_root}


def paginate(names, limit=None, marker=None, include_marker=False):
    """Page through sorted names the way Trove's pagination does.

    Returns ``(page, next_marker)``; ``next_marker`` is the last name of the
    page when more names follow, else None.
    """
    names = sorted(names)
    if marker is not None:
        if include_marker:
            names = [n for n in names if n >= marker]
        else:
            names = [n for n in names if n > marker]
    if limit is None or limit <= 0 or len(names) <= limit:
        return names, None
    page = names[:limit]
    return page, page[-1]
