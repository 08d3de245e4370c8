"""A point in time, stored in UTC without a zone; in JSON as PocketBase writes it."""

import datetime as dt

import peewee

from .base import Field, Invalid, format_datetime

FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f",
           "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d")


class DateTime(Field):
    column_class = peewee.DateTimeField

    def parse(self, value):
        if isinstance(value, dt.datetime):
            return value
        if not isinstance(value, str):
            raise Invalid("validation_invalid_date", "Must be a date and time.")
        text = value.strip().removesuffix("Z")
        for fmt in FORMATS:
            try:
                return dt.datetime.strptime(text, fmt)
            except ValueError:
                continue
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise Invalid("validation_invalid_date",
                          "Must be a date and time, like 2026-12-31 23:59.") from None
        if parsed.tzinfo:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed

    def to_json(self, value):
        return format_datetime(value)
