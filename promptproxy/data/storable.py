"""Making a row storable before it is queued.

Request rows carry strings and numbers from clients and upstreams, which are
untrusted: a `model` of "\\ud800" (a lone surrogate, which UTF-8 cannot encode),
an upstream usage of `"prompt_tokens": "n/a"`, a float, a bool, an integer larger
than SQLite's. One such value used to make a whole batch fail, forever. `clean`
turns any row into one the database accepts, by column type, and says what it
changed so the row itself records that its figures were not as received.
"""

import datetime as dt
import json
import math

import peewee

from .fields import INTEGER_RANGE, JSONColumn, utcnow

INT_MIN, INT_MAX = INTEGER_RANGE


def clean(model, row, notes_column="error"):
    """A copy of `row` (column name -> value) in which every value of `model`'s
    columns can be stored, and read back as it was meant; a note of each change
    is appended to `notes_column`. Never raises."""
    cleaned, notes = {}, []
    for name, kind, field in _columns(model):
        if name not in row:
            continue
        value = row[name]
        if value is None:
            pass
        elif type(value) is not kind or (kind is int and not INT_MIN <= value <= INT_MAX):
            value, note = _clean_value(field, value)
            if note:
                notes.append(f"{name} {note}")
        elif kind is str:  # the only common type that can hold what cannot be stored
            value, note = text(value)
            if note:
                notes.append(f"{name} {note}")
        cleaned[name] = value
    if notes:
        before = cleaned.get(notes_column)
        cleaned[notes_column] = "; ".join(([before] if before else []) + notes)
    return cleaned


def _columns(model):
    """[(name, the Python type its values normally have, field)], worked out once per model."""
    try:
        return _COLUMNS[model]
    except KeyError:
        pass
    columns = []
    for field in model._meta.sorted_fields:
        if isinstance(field, peewee.BooleanField):
            kind = bool
        elif isinstance(field, peewee.IntegerField):
            kind = int
        elif isinstance(field, peewee.FloatField):
            kind = float
        elif isinstance(field, peewee.DateTimeField):
            kind = dt.datetime
        elif isinstance(field, JSONColumn):
            kind = None  # always encoded here
        elif isinstance(field, (peewee.TextField, peewee.CharField)):
            kind = str
        else:
            kind = object
        columns.append((field.name, kind, field))
    _COLUMNS[model] = columns
    return columns


_COLUMNS = {}


def _clean_value(field, value):
    """(storable value, None) or (replacement, what was changed)."""
    try:
        if isinstance(field, peewee.BooleanField):
            if isinstance(value, bool):
                return value, None
            return (bool(value), "was not a boolean, stored as one") if value in (0, 1) else \
                (None, "was not a boolean, left empty")
        if isinstance(field, peewee.IntegerField):
            return _integer(value)
        if isinstance(field, peewee.FloatField):
            number = _number(value)
            if isinstance(value, float) and number is not None:
                return value, None
            return (None, "was not a number, left empty") if number is None else \
                (float(number), "was not a number, stored as one")
        if isinstance(field, peewee.DateTimeField):
            if isinstance(value, dt.datetime):
                return value, None
            try:
                return dt.datetime.fromisoformat(str(value)), None
            except ValueError:
                return utcnow(), "was not a date and time, stored as the time recorded"
        if isinstance(field, JSONColumn):
            return _json(value)
        if isinstance(field, (peewee.TextField, peewee.CharField)):
            return text(value if isinstance(value, str) else str(value))
        return value, None
    except Exception:  # noqa: BLE001 -- whatever it was, the row is still stored
        return None, "could not be stored, left empty"


def text(value):
    """(value, None), or value with the code points that cannot be stored replaced
    by U+FFFD and a note: lone surrogates (not UTF-8), and NUL (which PostgreSQL's
    text cannot hold; replaced on either database, so rows read the same); a valid
    surrogate pair becomes its character."""
    try:
        value.encode("utf-8")
        if "\x00" not in value:
            return value, None
        fixed = value
    except UnicodeEncodeError:
        fixed = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return fixed.replace("\x00", "\ufffd"), "had characters that cannot be stored, replaced with U+FFFD"


def _number(value):
    """The finite number `value` honestly is (int or float), or None. Bools are not numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str) and len(value) <= 100:
        try:
            number = int(value.strip())
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                return None
    else:
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return None
    return number


def integer(value):
    """The integer `value` honestly is (rounded), within SQLite's range; else None."""
    number = _number(value)
    if number is None:
        return None
    number = round(number)
    return number if INT_MIN <= number <= INT_MAX else None


def _integer(value):
    if type(value) is int and INT_MIN <= value <= INT_MAX:
        return value, None
    number = integer(value)
    if number is None:
        return None, "was not a number, left empty" if _number(value) is None else "was out of range, left empty"
    return number, "was not an integer, stored as " + str(number)


def _json(value):
    """A JSON column's stored text: what `json.loads` gives back as it was, with
    unencodable code points replaced, NaN and Infinity as null."""
    try:
        stored = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)
        note = None
    except ValueError:  # NaN or Infinity: not JSON, and not readable by a browser
        stored = json.dumps(json.loads(json.dumps(value, default=str), parse_constant=lambda _: None),
                            separators=(",", ":"), ensure_ascii=False)
        note = "had numbers that are not JSON (NaN, Infinity), stored as null"
    except RecursionError:
        return None, "was nested too deeply to store, left empty"
    stored, replaced = text(stored)  # surrogates only ever occur inside JSON strings
    return stored, replaced or note
