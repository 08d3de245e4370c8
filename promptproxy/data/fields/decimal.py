"""A number that may have decimals (a price, a budget, a cost) within `min`..`max`.

It accepts a JSON number or its text ("0.15", as a form posts it); never a boolean,
NaN or an infinity. Stored as a double: up to 15 significant digits come back
exactly as typed, more than a price per million tokens or a budget ever has."""

import math

import peewee

from .base import Field, Invalid


class Decimal(Field):
    column_class = peewee.DoubleField  # REAL in SQLite, double precision in PostgreSQL

    def __init__(self, name, *, min=None, max=None, **kw):
        super().__init__(name, **kw)
        self.min, self.max = min, max

    def parse(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise Invalid("validation_invalid_number", "Must be a number.")
        try:
            number = float(value.strip() if isinstance(value, str) else value)
        except (ValueError, OverflowError):
            number = math.nan
        if not math.isfinite(number):
            raise Invalid("validation_invalid_number", "Must be a number, like 0.15.")
        if self.min is not None and number < self.min:
            raise Invalid("validation_min_number_constraint", f"Must be at least {self.min:g}.")
        if self.max is not None and number > self.max:
            raise Invalid("validation_max_number_constraint", f"Must be at most {self.max:g}.")
        return number + 0.0  # -0.0 is 0
