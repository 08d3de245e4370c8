"""Field types: each one small unit that knows its column, its validation, its JSON
shape, how it shows in a table and which form input edits it.

A collection is a list of these. Everything else (the peewee model, the admin
table and forms, the REST API's JSON) is derived from them, so a new field type
is added here once and works everywhere.

Every field cleans input through one method, ``clean(value, form=False)``: the
REST API passes JSON values, the admin passes form strings (``form=True``), and
both get the same rules and messages.
"""

import datetime as dt
import hashlib
import json
import math
import re
import secrets
import string

import peewee
from markupsafe import Markup
from wtforms import fields as wtf
from wtforms.widgets import TextArea

from . import crypto

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
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


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
    """Why `value` (form or JSON input, before any field looks at it) cannot be
    stored, as an Invalid, or None when it can: text must be encodable as UTF-8
    (a lone surrogate such as "\\ud800" is not), and nesting is bounded so that
    encoding it again never exhausts the stack."""
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return Invalid("validation_invalid_text",
                               "Must be valid Unicode text (it contains a lone surrogate).")
        elif isinstance(item, (list, dict)):
            if depth >= MAX_NESTING:
                return Invalid("validation_invalid_json", f"Must not nest deeper than {MAX_NESTING} levels.")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return None


class _RequiredFlag:
    """A no-op form validator that only marks the input required (label star, HTML attribute)."""

    field_flags = {"required": True}

    def __call__(self, form, field):
        pass


class Field:
    """Base of every field type. Subclasses override only what differs."""

    column_class = peewee.TextField
    form_class = wtf.StringField
    sortable = True
    secret = False  # write-only: never in JSON, masked in tables
    immutable = False  # set on creation, never changed after
    reveal_once = False  # the cleaned value is shown to the creator once

    def __init__(self, name, *, required=False, unique=False, default=None,
                 label=None, help="", index=False, editable=True):
        self.name = name
        self.editable = editable  # False: set by PromptProxy only (e.g. a key's last use)
        self.required = required
        self.unique = unique
        self.default = default
        self.label = label or name.replace("_", " ").capitalize()
        self.help = help
        self.index = index

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
    def clean(self, value, form=False):
        """Turn input into the stored Python value, or raise Invalid."""
        if blank(value):
            return None
        return self.parse(value, form)

    def parse(self, value, form):
        if not isinstance(value, str):
            raise Invalid("validation_invalid_type", "Must be text.")
        return value.strip()

    # -- output --------------------------------------------------------------
    def to_json(self, value):
        return value

    def json_items(self, row):
        """This field's part of a record's JSON shape."""
        return {self.name: self.to_json(getattr(row, self.name))}

    def display(self, value):
        """How a value shows in an admin table cell."""
        return "" if value is None else str(value)

    def cell(self, row):
        return self.display(getattr(row, self.name))

    # -- forms ---------------------------------------------------------------
    def form_field(self, creating):
        validators = [_RequiredFlag()] if self.required and self.default is None else []
        options = {"description": self.help, "default": self.initial(), **self.form_options(creating)}
        return self.form_class(self.label, validators=validators, **options)

    def form_options(self, creating):
        return {}


class Text(Field):
    def __init__(self, name, *, max_length=255, pattern=None, **kw):
        super().__init__(name, **kw)
        self.max_length = max_length
        self.pattern = re.compile(pattern) if pattern else None

    def parse(self, value, form):
        value = super().parse(value, form)
        if len(value) > self.max_length:
            raise Invalid("validation_max_text_constraint",
                          f"Must be no more than {self.max_length} characters.")
        if self.pattern and not self.pattern.fullmatch(value):
            raise Invalid("validation_invalid_format", "Invalid format.")
        return value or None


class LongText(Text):
    form_class = wtf.TextAreaField
    sortable = False

    def __init__(self, name, *, max_length=1_000_000, **kw):
        super().__init__(name, max_length=max_length, **kw)

    def parse(self, value, form):
        if not isinstance(value, str):
            raise Invalid("validation_invalid_type", "Must be text.")
        if len(value) > self.max_length:
            raise Invalid("validation_max_text_constraint",
                          f"Must be no more than {self.max_length} characters.")
        return value.replace("\r\n", "\n")

    def display(self, value):
        text = super().display(value)
        return text if len(text) <= 80 else text[:79] + "…"

    def form_options(self, creating):
        return {"render_kw": {"rows": 6}}


class Email(Text):
    _pattern = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

    def parse(self, value, form):
        value = super().parse(value, form)
        if value and not self._pattern.fullmatch(value):
            raise Invalid("validation_invalid_email", "Must be a valid email address.")
        return value.lower() if value else value

    def form_options(self, creating):
        return {"render_kw": {"type": "email"}}


class Url(Text):
    def __init__(self, name, *, max_length=2048, **kw):
        super().__init__(name, max_length=max_length, **kw)

    def parse(self, value, form):
        from urllib.parse import urlsplit

        value = super().parse(value, form)
        try:
            parts = urlsplit(value)
        except ValueError:  # e.g. an unclosed IPv6 bracket: "http://[::1"
            raise Invalid("validation_invalid_url", "The host is not a valid name or address.") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid("validation_invalid_url",
                          "Must be an http:// or https:// URL, like http://localhost:11434/v1.")
        try:
            parts.port
        except ValueError:
            raise Invalid("validation_invalid_url", "The port is not a number.") from None
        return value.rstrip("/")

    def form_options(self, creating):
        return {"render_kw": {"type": "url", "placeholder": "https://api.openai.com/v1"}}


class Number(Field):
    column_class = peewee.IntegerField

    def __init__(self, name, *, min=None, max=None, decimal=False, **kw):
        super().__init__(name, **kw)
        self.min, self.max, self.decimal = min, max, decimal
        if decimal:
            self.column_class = peewee.FloatField

    def parse(self, value, form):
        if isinstance(value, bool):
            raise Invalid("validation_invalid_number", "Must be a number.")
        try:
            number = float(value) if self.decimal else int(str(value).strip())
        except (TypeError, ValueError):
            try:
                as_float = float(value)
            except (TypeError, ValueError):
                as_float = None
            if as_float is not None and as_float.is_integer():
                number = int(as_float)
            else:
                raise Invalid("validation_invalid_number",
                              "Must be a whole number." if not self.decimal
                              else "Must be a number.") from None
        if self.decimal and not math.isfinite(number):
            raise Invalid("validation_invalid_number", "Must be a finite number.")
        low, high = INTEGER_RANGE  # the column's range bounds floats too, where no min/max is set
        low = low if self.min is None else self.min
        high = high if self.max is None else self.max
        if number < low:
            raise Invalid("validation_min_number_constraint", f"Must be at least {low}.")
        if number > high:
            raise Invalid("validation_max_number_constraint", f"Must be at most {high}.")
        return number

    def form_options(self, creating):
        return {"render_kw": {"type": "number", "step": "any" if self.decimal else "1"}}


class Bool(Field):
    column_class = peewee.BooleanField
    form_class = wtf.BooleanField

    def __init__(self, name, *, default=False, **kw):
        super().__init__(name, default=default, **kw)

    def clean(self, value, form=False):
        if form:
            return bool(value)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise Invalid("validation_invalid_type", "Must be true or false.")
        return value

    def display(self, value):
        return "yes" if value else "no"

    def form_field(self, creating):
        return wtf.BooleanField(self.label, description=self.help, default=self.initial())


class Select(Field):
    form_class = wtf.SelectField

    def __init__(self, name, *, choices, **kw):
        super().__init__(name, **kw)
        self.choices = list(choices)

    def parse(self, value, form):
        if value not in self.choices:
            raise Invalid("validation_invalid_value",
                          "Must be one of: " + ", ".join(self.choices) + ".")
        return value

    def form_options(self, creating):
        choices = [wtf.SelectChoice(c, c) for c in self.choices]
        if not self.required:
            choices.insert(0, wtf.SelectChoice("", "—"))
        return {"choices": choices, "default": self.initial()}


class JSONColumn(peewee.TextField):
    """Stores any JSON value as text; reads it back parsed."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class _JSONTextArea(wtf.TextAreaField):
    widget = TextArea()

    def _value(self):
        if self.raw_data:
            return self.raw_data[0]
        return "" if self.data in (None, "") else json.dumps(self.data, indent=2)

    def process_formdata(self, valuelist):
        self.data = valuelist[0] if valuelist else None


class Json(Field):
    column_class = JSONColumn
    form_class = _JSONTextArea
    sortable = False

    def __init__(self, name, *, kind=None, **kw):
        super().__init__(name, **kw)
        self.kind = kind  # dict or list to insist on a shape

    def clean(self, value, form=False):
        if form:
            if value is None or (isinstance(value, str) and not value.strip()):
                return None
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError as exc:
                    raise Invalid("validation_invalid_json", f"Invalid JSON: {exc}.") from None
                except RecursionError:
                    raise Invalid("validation_invalid_json",
                                  f"Must not nest deeper than {MAX_NESTING} levels.") from None
                problem = storable_problem(value)
                if problem:
                    raise problem
        if value is None:
            return None
        if self.kind is dict and not isinstance(value, dict):
            raise Invalid("validation_invalid_json", "Must be a JSON object, like {\"X-Name\": \"value\"}.")
        if self.kind is list and not isinstance(value, list):
            raise Invalid("validation_invalid_json", "Must be a JSON array.")
        return value

    def display(self, value):
        if value is None:
            return ""
        text = json.dumps(value)
        return text if len(text) <= 80 else text[:79] + "…"

    def form_options(self, creating):
        return {"render_kw": {"rows": 5, "spellcheck": "false", "class": "form-control text-monospace"}}


class _DateTimeInput(wtf.StringField):
    def _value(self):
        if self.raw_data:
            return self.raw_data[0]
        if isinstance(self.data, dt.datetime):
            return self.data.strftime("%Y-%m-%dT%H:%M")
        return self.data or ""


class DateTime(Field):
    """A point in time, stored in UTC."""

    column_class = peewee.DateTimeField
    form_class = _DateTimeInput
    _formats = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f",
                "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d")

    def parse(self, value, form):
        if isinstance(value, dt.datetime):
            return value
        if not isinstance(value, str):
            raise Invalid("validation_invalid_date", "Must be a date and time.")
        text = value.strip().removesuffix("Z")
        for fmt in self._formats:
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
            parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return parsed

    def to_json(self, value):
        return format_datetime(value)

    def display(self, value):
        return value.strftime("%Y-%m-%d %H:%M") + " UTC" if value else ""

    def form_options(self, creating):
        return {"render_kw": {"type": "datetime-local"},
                "description": (self.help + " " if self.help else "") + "In UTC."}


class Relation(Field):
    """The id of a record in another collection (stored as text, as PocketBase does).

    ``on_delete`` decides what deleting the target does: "restrict" refuses while
    this field still points at it; "keep" leaves the id in place so history
    (request rows) outlives the records it names.
    """

    form_class = wtf.SelectField

    def __init__(self, name, target, *, on_delete="restrict", **kw):
        super().__init__(name, index=True, **kw)
        self.target = target
        self.on_delete = on_delete

    def parse(self, value, form):
        if not isinstance(value, str):
            raise Invalid("validation_invalid_type", "Must be a record id.")
        return value.strip()

    def form_options(self, creating):
        return {"choices": [], "validate_choice": False}

    def ids(self, value):
        return [value] if value else []

    def refers_to(self, model, record_id):
        """A query condition: rows whose field points at `record_id`."""
        return getattr(model, self.name) == record_id


class Relations(Relation):
    """Ids of any number of records in another collection, stored as a JSON list.
    Used for allow-lists, where an empty list means "all": deleting a record that
    a list names is refused, as an emptied list would suddenly allow everything."""

    column_class = JSONColumn
    form_class = wtf.SelectMultipleField
    sortable = False

    def __init__(self, name, target, **kw):
        Field.__init__(self, name, **kw)
        self.target = target
        self.on_delete = "restrict"

    def clean(self, value, form=False):
        if value is None or value == "" or value == []:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Invalid("validation_invalid_type", "Must be a list of record ids.")
        return list(dict.fromkeys(v.strip() for v in value if v.strip()))

    def ids(self, value):
        return list(value or [])

    def refers_to(self, model, record_id):
        # Matched in the stored JSON text; the id is passed raw, not JSON-encoded again.
        return peewee.fn.instr(getattr(model, self.name), peewee.Value(f'"{record_id}"', converter=False)) > 0

    def form_options(self, creating):
        return {"choices": [], "validate_choice": False, "default": [],
                "render_kw": {"data-role": "select2", "size": 6}}


UNREADABLE = ("cannot be decrypted with the server's encryption key: type it again "
              "(or restore the key it was encrypted with)")


class Secret(Field):
    """A secret we must send on (an upstream API key): encrypted at rest with Fernet,
    never shown back, left unchanged when an edit leaves it blank."""

    form_class = wtf.PasswordField
    sortable = False
    secret = True

    def clean(self, value, form=False):
        if value is None or value == "":
            return KEEP
        if not isinstance(value, str):
            raise Invalid("validation_invalid_type", "Must be text.")
        return value.strip() or KEEP

    def store(self, value):
        return {self.name: crypto.encrypt(value) if value else None}

    def display(self, value):
        if not value:
            return ""
        try:
            return mask(crypto.decrypt_stored(value))
        except crypto.CannotDecrypt:
            return Markup('<span class="text-danger">{}</span>').format(UNREADABLE)

    def json_items(self, row):
        return {self.name + "_set": bool(getattr(row, self.name))}  # write-only

    def form_options(self, creating):
        hint = "Leave blank for none." if creating else "Leave blank to keep the current one."
        return {"render_kw": {"autocomplete": "new-password", "placeholder": hint}}


class GeneratedKey(str):
    """A gateway key PromptProxy made: its first characters may be shown."""


class GatewayKey(Field):
    """A key clients present to PromptProxy. Only its HMAC (see `crypto.digest`) is
    stored, with a short prefix in clear for keys PromptProxy generated; a key of
    one's own keeps no character in clear. Left blank on creation, a random key is
    generated; either way the full key is revealed once, right after creation.

    Keys stored before the HMAC (a plain SHA-256, `<name>_legacy` set) still work
    and are rehashed on first use (see `catalog.Snapshot.find_key`)."""

    PREFIX = "pp-"
    SHOWN = 10  # "pp-" and 7 of the 40 random characters
    sortable = False
    secret = True
    immutable = True
    reveal_once = True

    def __init__(self, name, **kw):
        super().__init__(name, unique=True, **kw)

    def columns(self):
        return {
            self.name: peewee.CharField(max_length=64, null=True, unique=True),
            self.name + "_prefix": peewee.CharField(max_length=16, null=True),
            self.name + "_legacy": peewee.BooleanField(default=False),
        }

    @classmethod
    def generate(cls):
        return GeneratedKey(cls.PREFIX + secrets.token_urlsafe(30))

    @classmethod
    def generated(cls, key):
        """Whether `key` has the shape of a key PromptProxy generates."""
        return key.startswith(cls.PREFIX) and re.fullmatch(r"[\w-]{40}", key[len(cls.PREFIX):]) is not None

    @staticmethod
    def digest(key):
        return crypto.digest(key)

    @staticmethod
    def legacy_digest(key):
        return hashlib.sha256(key.encode()).hexdigest()

    def clean(self, value, form=False):
        if value is None or value == "":
            return self.generate()
        if not isinstance(value, str):
            raise Invalid("validation_invalid_type", "Must be text.")
        value = value.strip()
        if len(value) < 16 or any(c.isspace() for c in value):
            raise Invalid("validation_invalid_key",
                          "A key of your own must be at least 16 characters with no spaces.")
        return value

    def store(self, value):
        prefix = value[:self.SHOWN] if isinstance(value, GeneratedKey) else None
        return {self.name: self.digest(value), self.name + "_prefix": prefix, self.name + "_legacy": False}

    def cell(self, row):
        prefix = getattr(row, self.name + "_prefix")
        return prefix + "…" if prefix else "••••"

    def json_items(self, row):
        # never the key itself; "" for a key of one's own
        return {self.name + "_prefix": getattr(row, self.name + "_prefix") or ""}

    def form_field(self, creating):
        return wtf.StringField(
            self.label, description="Leave blank to generate a strong key. "
            "The full key is shown once, right after saving.",
            render_kw={"autocomplete": "off", "placeholder": "generated if left blank"})


def mask(secret):
    """Enough of a secret to recognise it, never enough to use it."""
    if len(secret) < 12:
        return "••••••••"
    return "••••••••" + secret[-4:]
