"""What every field type shares: the `Field` base class, the `Invalid` error its
`clean` raises, and the helpers records and rows are made with (ids, UTC times,
PocketBase's timestamp format, the JSON column).

A field type owns three things and nothing else: the table columns it stores
into, how a JSON value is cleaned into what is stored (one mode, the same for
the REST API, the admin and the CLI), and its part of a record's JSON shape.
How a field shows in the admin (its form input, its table cell) is the admin's
business: see `promptproxy/admin/forms.py`.
"""

import datetime as dt
import json
import secrets
import string

import peewee

KEEP = object()  # clean() result meaning "leave the stored value as it is"

ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id():
    """A PocketBase-style record id: 15 random lowercase letters and digits.

    Every call gets one (its request row), so it is cut from one 128-bit random
    number rather than 15 calls to `secrets.choice`, at a tenth of the cost."""
    number = int.from_bytes(secrets.token_bytes(16), "big")
    letters = []
    for _ in range(15):
        number, digit = divmod(number, 36)
        letters.append(ID_ALPHABET[digit])
    return "".join(letters)


def utcnow():
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def format_datetime(value):
    """PocketBase's timestamp format: '2026-11-23 18:04:05.123Z'."""
    if value is None:
        return ""
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class Invalid(ValueError):
    """One field's validation failure: a machine code and a message for people."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def blank(value):
    return value is None or value == "" or value == [] or value == {}


MAX_NESTING = 64  # JSON values nest at most this deep (headers and tools need a handful)
INTEGER_RANGE = (-2 ** 63, 2 ** 63 - 1)  # what an SQLite INTEGER column can hold


def storable_problem(value):
    """Why `value` (any input, before a field looks at it) cannot be stored, as an
    Invalid, or None when it can: text must be encodable as UTF-8 (a lone
    surrogate such as "\\ud800" is not) and hold no NUL character (PostgreSQL's
    text cannot, and the rules are the same on either database), and nesting is
    bounded so that encoding it again never exhausts the stack."""
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return Invalid("validation_invalid_text",
                               "Must be valid Unicode text (it contains a lone surrogate).")
            if "\x00" in item:
                return Invalid("validation_invalid_text", "Must not contain NUL characters.")
        elif isinstance(item, (list, dict)):
            if depth >= MAX_NESTING:
                return Invalid("validation_invalid_json", f"Must not nest deeper than {MAX_NESTING} levels.")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return None


class JSONColumn(peewee.TextField):
    """Stores any JSON value as text; reads it back parsed."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class Field:
    """Base of every field type. Subclasses override only what differs."""

    column_class = peewee.TextField
    sortable = True
    secret = False  # write-only: never in JSON, masked in tables
    immutable = False  # set on creation, never changed after
    reveal_once = False  # the cleaned value is shown to the creator once

    def __init__(self, name, *, required=False, unique=False, default=None,
                 label=None, help="", index=False, editable=True, group="basics"):
        self.name = name
        self.group = group  # where a form shows it: basics, access, limits or advanced
        self.editable = editable  # False: set by PromptProxy only (e.g. a key's last use)
        self.required = required
        self.unique = unique
        self.default = default
        self.label = label or name.replace("_", " ").capitalize()
        self.help = help
        self.index = index

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"

    # -- storage -------------------------------------------------------------
    def columns(self):
        """The table columns this field stores into, by attribute name."""
        return {self.name: self.column_class(null=True, unique=self.unique,
                                             index=self.index and not self.unique)}

    def store(self, value):
        """Column values to write for a cleaned value."""
        return {self.name: value}

    def initial(self):
        return self.default() if callable(self.default) else self.default

    # -- input ---------------------------------------------------------------
    def clean(self, value):
        """Turn a JSON value into the stored Python value, or raise Invalid."""
        if blank(value):
            return None
        return self.parse(value)

    def parse(self, value):
        """Clean a value that is not blank."""
        if not isinstance(value, str):
            raise Invalid("validation_invalid_type", "Must be text.")
        return value.strip()

    # -- output --------------------------------------------------------------
    def to_json(self, value):
        return value

    def json_items(self, row):
        """This field's part of a record's JSON shape."""
        return {self.name: self.to_json(getattr(row, self.name))}
