"""Relation: the id of a record in another collection. Relations: a list of them.

Both store ids as text, as PocketBase does; `records` checks that the records
exist, and refuses to delete one that is still pointed at or deletes what points
at it with it (see `on_delete`)."""

import peewee

from .base import Field, Invalid, JSONColumn


class Relation(Field):
    """``on_delete`` decides what deleting the target does: "restrict" refuses while
    this field still points at it; "keep" leaves the id in place so history
    (request rows) outlives the records it names; "cascade" deletes the records
    that point at it too (a prompt's versions), in the same transaction."""

    def __init__(self, name, target, *, on_delete="restrict", **kw):
        super().__init__(name, index=True, **kw)
        self.target = target
        self.on_delete = on_delete

    def parse(self, value):
        if not isinstance(value, str):
            raise Invalid("validation_invalid_type", "Must be a record id.")
        return value.strip()

    def ids(self, value):
        return [value] if value else []

    def refers_to(self, model, record_id):
        """A query condition: rows whose field points at `record_id`."""
        return getattr(model, self.name) == record_id


class Relations(Relation):
    """Ids of any number of records in another collection, stored as a JSON list.
    Used for allow-lists, where an empty list means "all": deleting a record that
    a list names is refused, as an emptied list would suddenly allow everything."""

    column_class = JSONColumn
    sortable = False

    def __init__(self, name, target, **kw):
        Field.__init__(self, name, **kw)
        self.target = target
        self.on_delete = "restrict"

    def clean(self, value):
        if value is None or value == "" or value == []:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Invalid("validation_invalid_type", "Must be a list of record ids.")
        return list(dict.fromkeys(v.strip() for v in value if v.strip()))

    def ids(self, value):
        return list(value or [])

    def refers_to(self, model, record_id):
        # Matched in the stored JSON text; the id is passed raw, not JSON-encoded again
        # (ids are letters and digits, so nothing in them is a LIKE wildcard).
        return getattr(model, self.name).contains(peewee.Value(f'"{record_id}"', converter=False))
