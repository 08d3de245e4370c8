"""A whole number within `min`..`max` (and always within what SQLite's INTEGER holds).

It accepts a JSON number or its text ("12", as a form posts it); a float counts
when it is whole (2.0 is 2)."""

import peewee

from .base import INTEGER_RANGE, Field, Invalid


class Number(Field):
    column_class = peewee.BigIntegerField  # 64 bits in PostgreSQL too, as in SQLite

    def __init__(self, name, *, min=None, max=None, **kw):
        super().__init__(name, **kw)
        self.min, self.max = min, max

    def parse(self, value):
        if isinstance(value, bool):
            raise Invalid("validation_invalid_number", "Must be a number.")
        try:
            number = int(str(value).strip())
        except (TypeError, ValueError):
            try:
                as_float = float(value)
            except (TypeError, ValueError):
                as_float = None
            if as_float is None or not as_float.is_integer():
                raise Invalid("validation_invalid_number", "Must be a whole number.") from None
            number = int(as_float)
        low, high = INTEGER_RANGE
        low = low if self.min is None else self.min
        high = high if self.max is None else self.max
        if number < low:
            raise Invalid("validation_min_number_constraint", f"Must be at least {low}.")
        if number > high:
            raise Invalid("validation_max_number_constraint", f"Must be at most {high}.")
        return number
