"""True or false; absent or null is false."""

import peewee

from .base import Field, Invalid


class Bool(Field):
    column_class = peewee.BooleanField

    def __init__(self, name, *, default=False, **kw):
        super().__init__(name, default=default, **kw)

    def clean(self, value):
        if value is None:
            return False
        if not isinstance(value, bool):
            raise Invalid("validation_invalid_type", "Must be true or false.")
        return value
