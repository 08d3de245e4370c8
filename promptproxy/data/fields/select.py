"""One of a fixed list of text values."""

from .base import Field, Invalid


class Select(Field):
    def __init__(self, name, *, choices, **kw):
        super().__init__(name, **kw)
        self.choices = list(choices)

    def parse(self, value):
        if value not in self.choices:
            raise Invalid("validation_invalid_value", "Must be one of: " + ", ".join(self.choices) + ".")
        return value
