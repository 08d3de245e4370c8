"""A number within `min`..`max`: a whole one (always within what SQLite's INTEGER
holds), or with `whole=False` any finite one, such as a score between 0 and 1.

It accepts a JSON number or its text ("12", as a form posts it); for a whole
number a float counts when it is whole (2.0 is 2)."""

import math

import peewee

from .base import INTEGER_RANGE, Field, Invalid


class Number(Field):
    column_class = peewee.BigIntegerField  # 64 bits in PostgreSQL too, as in SQLite

    def __init__(self, name, *, min=None, max=None, whole=True, **kw):
        super().__init__(name, **kw)
        self.min, self.max, self.whole = min, max, whole
        if not whole:
            self.column_class = peewee.DoubleField

    def parse(self, value):
        if isinstance(value, bool):
            raise Invalid("validation_invalid_number", "Must be a number.")
        number = self._whole(value) if self.whole else self._fraction(value)
        low, high = INTEGER_RANGE if self.whole else (-math.inf, math.inf)
        low = low if self.min is None else self.min
        high = high if self.max is None else self.max
        if number < low:
            raise Invalid("validation_min_number_constraint", f"Must be at least {low}.")
        if number > high:
            raise Invalid("validation_max_number_constraint", f"Must be at most {high}.")
        return number

    @staticmethod
    def _whole(value):
        try:
            return int(str(value).strip())
        except (TypeError, ValueError):
            try:
                as_float = float(value)
            except (TypeError, ValueError):
                as_float = None
            if as_float is None or not as_float.is_integer():
                raise Invalid("validation_invalid_number", "Must be a whole number.") from None
            return int(as_float)

    @staticmethod
    def _fraction(value):
        try:
            number = float(str(value).strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError, OverflowError):
            raise Invalid("validation_invalid_number", "Must be a number.") from None
        if not math.isfinite(number):
            raise Invalid("validation_invalid_number", "Must be a finite number.")
        return number
