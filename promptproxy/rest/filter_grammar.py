"""PocketBase's record filter and sort syntax, read into a small expression tree.

Filter syntax (``GET /api/collections/<name>/records?filter=...``)::

    name = "alice" && (count >= 3 || notes ~ 'urgent') && created > "2024-01-01"

* A comparison is ``operand OP operand``; either side may be a field name or a
  literal (``field OP value``, ``value OP field``, ``field OP field``).
* Operators: ``=  !=  >  >=  <  <=  ~  !~`` (their meaning is in filter_sql.py).
  ``~`` and ``!~`` need a text or number on their right when it is a literal.
* Field names are letters, digits and underscores; only the names given are
  accepted.  Literals: single- or double-quoted strings (a backslash escapes the
  quote or another backslash; any other backslash is kept), integers and decimals
  with an optional leading minus, ``true``, ``false`` and ``null``.
* Comparisons combine with ``&&`` and ``||`` (``&&`` binds tighter) and
  parentheses, nested up to 32 deep.  Whitespace is free; filters are limited to
  2000 characters.

Sort syntax: comma-separated field names, each optionally prefixed with ``-``
(descending) or ``+`` (ascending, the default): ``-created,name``.

This module knows the syntax only, no SQL (PocketBase keeps its ``fexpr`` apart
from its SQL builder the same way); filter_sql.py turns the tree into peewee
expressions.  Every problem raises ``FilterError`` whose message (positions count
from 0) can be shown to an API client as is.
"""

import re
from dataclasses import dataclass

MAX_LENGTH = 2000
MAX_DEPTH = 32
OPERATORS = ("=", "!=", ">", ">=", "<", "<=", "~", "!~")
LITERALS = {"true": True, "false": False, "null": None}

_TOKEN = re.compile(r"(?P<num>-?[0-9]+(?:\.[0-9]+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<op>[=!<>~&|]+)|(?P<paren>[()])")


class FilterError(ValueError):
    """Raised for any invalid filter; str(e) is a short message fit for an API client."""


@dataclass(frozen=True)
class Name:
    """A field of the collection, by its public name."""
    name: str


@dataclass(frozen=True)
class Literal:
    value: object  # str, int, float, bool or None


@dataclass(frozen=True)
class Comparison:
    left: object  # Name or Literal
    op: str  # one of OPERATORS
    right: object


@dataclass(frozen=True)
class Chain:
    """Two or more terms joined by one operator, kept flat: ``a && b && c``."""
    op: str  # "&&" or "||"
    terms: tuple


@dataclass(frozen=True)
class SortKey:
    name: str
    descending: bool


def tokenize(text):
    """Yield (kind, value, raw text, position); kind is num, name, str, op or paren."""
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
        elif text[i] in "'\"":
            quote, start, chars = text[i], i, []
            i += 1
            while i < len(text) and text[i] != quote:
                if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
                    i += 1
                chars.append(text[i])
                i += 1
            if i >= len(text):
                raise FilterError(f"unterminated string at position {start}")
            i += 1
            yield "str", "".join(chars), text[start:i], start
        else:
            m = _TOKEN.match(text, i)
            if not m:
                raise FilterError(f'unexpected character "{text[i]}" at position {i}')
            kind, raw = m.lastgroup, m.group()
            if kind == "op" and raw not in OPERATORS + ("&&", "||"):
                raise FilterError(f'unknown operator "{raw}" at position {i}')
            value = (float(raw) if "." in raw else int(raw)) if kind == "num" else raw
            yield kind, value, raw, i
            i = m.end()


def parse_filter(text, names):
    """The tree of a filter over the field ``names``; None for an empty or blank filter."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if not isinstance(text, str):
        raise FilterError("filter must be a string")
    if len(text) > MAX_LENGTH:
        raise FilterError(f"filter is longer than {MAX_LENGTH} characters")
    tokens = list(tokenize(text))
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        token = peek()
        if token is None:
            raise FilterError("unexpected end of filter")
        pos += 1
        return token

    def unexpected(token):
        return FilterError(f"unexpected {token[2]} at position {token[3]}")

    def operand():
        token = take()
        kind, value = token[0], token[1]
        if kind == "name" and value in LITERALS:
            return Literal(LITERALS[value])
        if kind == "name":
            if value not in names:
                raise FilterError(f'unknown field "{value}"')
            return Name(value)
        if kind in ("num", "str"):
            return Literal(value)
        raise unexpected(token)

    def comparison(left, op, right):
        if op in ("~", "!~") and isinstance(right, Literal) and (
                right.value is None or isinstance(right.value, bool)):
            raise FilterError(f'"{op}" needs a text or number value')
        return Comparison(left, op, right)

    def primary(depth):
        token = peek()
        if token is not None and token[2] == "(":
            if depth >= MAX_DEPTH:
                raise FilterError(f"filter is nested deeper than {MAX_DEPTH} levels")
            take()
            expr = chain(depth + 1, "||")
            token = peek()
            if token is None:
                raise FilterError('unexpected end of filter, missing ")"')
            if token[2] != ")":
                raise unexpected(token)
            take()
            return expr
        left = operand()
        token = take()
        if token[0] != "op" or token[2] in ("&&", "||"):
            raise FilterError(f"expected an operator at position {token[3]}, got {token[2]}")
        return comparison(left, token[2], operand())

    def chain(depth, op):
        """Terms joined by ``op``; the terms of ``||`` are chains of ``&&``."""
        term = (lambda: primary(depth)) if op == "&&" else (lambda: chain(depth, "&&"))
        terms = [term()]
        while peek() is not None and peek()[2] == op:
            take()
            terms.append(term())
        return terms[0] if len(terms) == 1 else Chain(op, tuple(terms))

    expr = chain(0, "||")
    if peek() is not None:
        raise unexpected(peek())
    return expr


def parse_sort(text, names):
    """'-created,+name' -> [SortKey("created", True), SortKey("name", False)]; blank -> []."""
    if text is None or not str(text).strip():
        return []
    if len(text) > MAX_LENGTH:
        raise FilterError(f"sort is longer than {MAX_LENGTH} characters")
    keys = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name = item[1:].strip() if item[0] in "+-" else item
        if name not in names:
            raise FilterError(f'unknown field "{name}"')
        keys.append(SortKey(name, item.startswith("-")))
    return keys
