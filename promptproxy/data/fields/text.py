"""Text: one line, trimmed, at most `max_length` characters. LongText: many lines,
kept as typed (line endings made "\\n")."""

from .base import Field, Invalid


def within(value, max_length):
    if len(value) > max_length:
        raise Invalid("validation_max_text_constraint", f"Must be no more than {max_length} characters.")
    return value


class Text(Field):
    def __init__(self, name, *, max_length=255, **kw):
        super().__init__(name, **kw)
        self.max_length = max_length

    def parse(self, value):
        return within(super().parse(value), self.max_length) or None


class LongText(Text):
    sortable = False

    def __init__(self, name, *, max_length=1_000_000, **kw):
        super().__init__(name, max_length=max_length, **kw)

    def parse(self, value):
        if not isinstance(value, str):
            raise Invalid("validation_invalid_type", "Must be text.")
        return within(value, self.max_length).replace("\r\n", "\n")
