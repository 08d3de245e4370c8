"""A collection: one declaration from which PromptProxy derives a table, an admin
view, validation and a JSON shape, the way PocketBase does.

    users = Collection("users", Text("name", required=True), Email("email", unique=True), ...,
                       title="name", list=[...], search=[...], filters=[...])
"""

import peewee

from .db import BaseModel
from .fields import format_datetime, new_id, utcnow

SYSTEM_FIELDS = ("id", "created", "updated")
TITLE_LENGTH = 40


class Collection:
    def __init__(self, name, *fields, label=None, title=None, list=None, search=(), filters=(),
                 sort="-created", readonly=False, recorded=False, singular=None, reference=None):
        self.name = name
        self.label = label or name.replace("_", " ").title()  # what people read: "Users", "APIs"
        self.singular = singular or name.removesuffix("s")  # "Created user Tom"
        self.reference = reference  # the field clients may name a record by instead of its id
        self.fields = fields
        self.field = {f.name: f for f in fields}
        self.title_fields = [title] if isinstance(title, str) else (title or [])
        self.list = list or [f.name for f in fields if not f.secret][:6] + ["created"]
        self.search = tuple(search)
        self.filters = tuple(filters)
        self.sort = sort
        self.readonly = readonly  # rows written by PromptProxy only (request log)
        # rows created and deleted by PromptProxy only; people change their editable fields (prompt versions)
        self.recorded = recorded
        self.model = self._make_model()

    def __repr__(self):
        return f"<Collection {self.name}>"

    def _make_model(self):
        attrs = {
            "id": peewee.CharField(primary_key=True, max_length=15, default=new_id),
            "created": peewee.DateTimeField(default=utcnow, index=True),
            "updated": peewee.DateTimeField(default=utcnow),
            "__str__": lambda row: self.title(row),
            "Meta": type("Meta", (), {"table_name": self.name}),
        }
        for field in self.fields:
            attrs.update(field.columns())
        return type(self.name.title().replace("_", ""), (BaseModel,), attrs)

    def title(self, row):
        """A readable name for a record, for dropdowns, tables and messages: the
        first title field that holds a value (its first line, shortened), else the id."""
        for name in self.title_fields:
            text = str(getattr(row, name, None) or "").strip()
            if text:
                line = text.splitlines()[0]
                return line if len(line) <= TITLE_LENGTH else line[:TITLE_LENGTH - 1] + "…"
        return row.id

    def reference_of(self, row):
        """What a client writes to name this record: its reference field, else its id."""
        return (getattr(row, self.reference, None) if self.reference else None) or row.id

    def columns(self):
        """Public field name -> peewee column, for filtering and sorting."""
        model = self.model
        columns = {name: getattr(model, name) for name in SYSTEM_FIELDS}
        for field in self.fields:
            if not field.secret:
                columns[field.name] = getattr(model, field.name)
        return columns

    def to_json(self, row):
        """The record's JSON shape: system fields then declared fields; secrets never."""
        data = {"id": row.id, "collectionName": self.name,
                "created": format_datetime(row.created), "updated": format_datetime(row.updated)}
        for field in self.fields:
            data.update(field.json_items(row))
        return data
