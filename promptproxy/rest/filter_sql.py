"""PocketBase-style record filters and sorts, turned into peewee expressions.

Filter syntax (``GET /api/collections/<name>/records?filter=...``)::

    name = "alice" && (count >= 3 || notes ~ 'urgent') && created > "2024-01-01"

* A comparison is ``operand OP operand``; either side may be a field name or a
  literal (``field OP value``, ``value OP field``, ``field OP field``).
* Operators: ``=  !=  >  >=  <  <=  ~  !~``.  ``=`` and ``!=`` are NULL-safe
  (SQL ``IS`` / ``IS NOT``), so ``x = null`` is ``x IS NULL`` and ``x != null`` is
  ``x IS NOT NULL``; as in PocketBase, ``x = ""`` matches NULL or the empty string
  and ``x != ""`` matches neither.  ``a ~ b`` is "a contains b", case-insensitive
  (SQL LIKE): b is wrapped in ``%...%`` with ``_`` and ``\\`` escaped, unless it
  already contains a ``%``, in which case it is used as the pattern as is
  (``\\`` escapes a literal ``%`` or ``_`` there).  ``!~`` is NOT LIKE; like any
  SQL comparison other than ``=``/``!=`` it never matches a NULL.
* Field names are letters, digits and underscores; only names in ``columns`` are
  accepted.  Literals: single- or double-quoted strings (a backslash escapes the
  quote or another backslash; any other backslash is kept), integers and decimals
  with an optional leading minus, ``true``, ``false`` and ``null``.
* Comparisons combine with ``&&`` and ``||`` (``&&`` binds tighter) and
  parentheses, nested up to 32 deep.  Whitespace is free; filters are limited to
  2000 characters.

Values are converted by the compared field's ``db_value`` and always bound as
query parameters; nothing from the filter text is ever put into the SQL itself.
Every problem raises ``FilterError`` whose message (positions count from 0) can be
shown to an API client as is.

Sort syntax: comma-separated field names, each optionally prefixed with ``-``
(descending) or ``+`` (ascending, the default): ``-created,name``.
"""

import re

import peewee

MAX_LENGTH = 2000
MAX_DEPTH = 32
OPERATORS = ("=", "!=", ">", ">=", "<", "<=", "~", "!~")
LITERALS = {"true": True, "false": False, "null": None}

_TOKEN = re.compile(r"(?P<num>-?[0-9]+(?:\.[0-9]+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<op>[=!<>~&|]+)|(?P<paren>[()])")


class FilterError(ValueError):
    """Raised for any invalid filter; str(e) is a short message fit for an API client."""


def _tokenize(text):
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


INTEGER_RANGE = (-2 ** 63, 2 ** 63 - 1)  # what SQLite can bind as an integer


def _literal(value):
    if isinstance(value, int) and not isinstance(value, bool) and \
            not INTEGER_RANGE[0] <= value <= INTEGER_RANGE[1]:
        raise FilterError(f"the number {value} is out of range (at most 64-bit integers)")
    return peewee.Value(value, converter=False)  # bound as a parameter, never converted again


def _joined(terms, glue):
    """Terms joined flat (``a AND b AND c``): peewee's ``&`` nests a pair of parentheses
    per term, and a long chain of those overflows SQLite's parser stack."""
    return terms[0] if len(terms) == 1 else peewee.NodeList(terms, f" {glue} ", parens=True)


def _is_lit(side, value):
    return side[0] == "lit" and (side[1] is None if value is None else side[1] == value)


def _compare(left, op, right):
    """Build the expression for one comparison; operands are ("field", name, column) or
    ("lit", value, None)."""
    if op in ("~", "!~"):
        if right[0] == "lit":
            if right[1] is None or isinstance(right[1], bool):
                raise FilterError(f'"{op}" needs a text or number value')
            pattern = str(right[1])
            if "%" not in pattern:
                pattern = "%" + pattern.replace("\\", "\\\\").replace("_", "\\_") + "%"
            pattern = _literal(pattern)
        else:
            pattern = _literal("%").concat(right[2]).concat(_literal("%"))
        lhs = left[2] if left[0] == "field" else _literal(left[1])
        like = "LIKE" if op == "~" else "NOT LIKE"
        return peewee.NodeList((lhs, peewee.SQL(like), pattern, peewee.SQL("ESCAPE '\\'")),
                               parens=True)
    # A literal compared with a field is converted by it (e.g. "3" for an integer field).
    sides = []
    for (kind, value, column), other in ((left, right), (right, left)):
        if kind == "field":
            sides.append(column)
        elif other[0] == "field" and value is not None and value != "":
            try:
                sides.append(_literal(other[2].db_value(value)))
            except (TypeError, ValueError, ArithmeticError):
                raise FilterError(f'invalid value {value!r} for field "{other[1]}"') from None
        else:
            sides.append(_literal(value))
    lhs, rhs = sides
    if op in ("=", "!="):
        is_op = "IS" if op == "=" else "IS NOT"  # NULL-safe, like PocketBase
        if _is_lit(left, "") or _is_lit(right, ""):
            # Like PocketBase, "" stands for "no value": NULL or the empty string.
            other = rhs if _is_lit(left, "") else lhs
            null, blank = (peewee.Expression(other, is_op, None),
                           peewee.Expression(other, is_op, _literal("")))
            return (null | blank) if op == "=" else (null & blank)
        return peewee.Expression(lhs, is_op, None if _is_lit(right, None) else rhs)
    return peewee.Expression(lhs, op, rhs)


def parse_filter(text, columns):
    """Parse a PocketBase filter into a peewee expression over ``columns`` (public field
    name -> peewee Field).  Returns None for an empty or blank filter."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if not isinstance(text, str):
        raise FilterError("filter must be a string")
    if len(text) > MAX_LENGTH:
        raise FilterError(f"filter is longer than {MAX_LENGTH} characters")
    tokens = list(_tokenize(text))
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
            return ("lit", LITERALS[value], None)
        if kind == "name":
            if value not in columns:
                raise FilterError(f'unknown field "{value}"')
            return ("field", value, columns[value])
        if kind in ("num", "str"):
            return ("lit", value, None)
        raise unexpected(token)

    def primary(depth):
        token = peek()
        if token is not None and token[2] == "(":
            if depth >= MAX_DEPTH:
                raise FilterError(f"filter is nested deeper than {MAX_DEPTH} levels")
            take()
            expr = or_expr(depth + 1)
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
        return _compare(left, token[2], operand())

    def and_expr(depth):
        terms = [primary(depth)]
        while peek() is not None and peek()[2] == "&&":
            take()
            terms.append(primary(depth))
        return _joined(terms, "AND")

    def or_expr(depth):
        terms = [and_expr(depth)]
        while peek() is not None and peek()[2] == "||":
            take()
            terms.append(and_expr(depth))
        return _joined(terms, "OR")

    expr = or_expr(0)
    if peek() is not None:
        raise unexpected(peek())
    return expr


def parse_sort(text, columns):
    """'-created,+name' -> [created.desc(), name.asc()]; blank -> []; unknown field -> FilterError."""
    if text is None or not str(text).strip():
        return []
    if len(text) > MAX_LENGTH:
        raise FilterError(f"sort is longer than {MAX_LENGTH} characters")
    order = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        desc = item.startswith("-")
        name = item[1:].strip() if item[0] in "+-" else item
        if name not in columns:
            raise FilterError(f'unknown field "{name}"')
        order.append(columns[name].desc() if desc else columns[name].asc())
    return order
