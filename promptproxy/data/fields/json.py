"""Any JSON value, or one of a given shape (`kind=dict` or `kind=list`), stored as JSON text."""

from .base import Field, Invalid, JSONColumn


class Json(Field):
    column_class = JSONColumn
    sortable = False

    def __init__(self, name, *, kind=None, **kw):
        super().__init__(name, **kw)
        self.kind = kind  # dict or list to insist on a shape

    def clean(self, value):
        if value is None:
            return None
        if self.kind is dict and not isinstance(value, dict):
            raise Invalid("validation_invalid_json", "Must be a JSON object, like {\"X-Name\": \"value\"}.")
        if self.kind is list and not isinstance(value, list):
            raise Invalid("validation_invalid_json", "Must be a JSON array.")
        return value
