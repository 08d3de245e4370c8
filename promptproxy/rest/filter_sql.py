"""PocketBase-style record filters and sorts, turned into peewee expressions.

filter_grammar.py reads the text into a tree; this module gives each comparison
its SQL meaning:

* ``=`` and ``!=`` are NULL-safe (SQL ``IS`` / ``IS NOT``), so ``x = null`` is
  ``x IS NULL`` and ``x != null`` is ``x IS NOT NULL``; as in PocketBase, ``x = ""``
  matches NULL or the empty string and ``x != ""`` matches neither.
* ``a ~ b`` is "a contains b", case-insensitive (SQL LIKE): b is wrapped in
  ``%...%`` with ``_`` and ``\\`` escaped, unless it already contains a ``%``, in
  which case it is used as the pattern as is (``\\`` escapes a literal ``%`` or
  ``_`` there).  ``!~`` is NOT LIKE; like any SQL comparison other than
  ``=``/``!=`` it never matches a NULL.

Values are converted by the compared field's ``db_value`` and always bound as
query parameters; nothing from the filter text is ever put into the SQL itself.
Every problem raises ``FilterError`` whose message can be shown to an API client.
"""

import peewee

from . import filter_grammar as grammar
from .filter_grammar import Chain, FilterError, Literal, Name

__all__ = ["FilterError", "parse_filter", "parse_sort"]

INTEGER_RANGE = (-2 ** 63, 2 ** 63 - 1)  # what SQLite can bind as an integer
GLUE = {"&&": "AND", "||": "OR"}


def parse_filter(text, columns):
    """Parse a PocketBase filter into a peewee expression over ``columns`` (public field
    name -> peewee Field).  Returns None for an empty or blank filter."""
    tree = grammar.parse_filter(text, columns)
    return None if tree is None else expression(tree, columns)


def parse_sort(text, columns):
    """'-created,+name' -> [created.desc(), name.asc()]; blank -> []; unknown field -> FilterError."""
    return [columns[key.name].desc() if key.descending else columns[key.name].asc()
            for key in grammar.parse_sort(text, columns)]


def expression(node, columns):
    if isinstance(node, Chain):
        # Flat (``a AND b AND c``): peewee's ``&`` nests a pair of parentheses per
        # term, and a long chain of those overflows SQLite's parser stack.
        return peewee.NodeList([expression(term, columns) for term in node.terms],
                               f" {GLUE[node.op]} ", parens=True)
    return _compare(node.left, node.op, node.right, columns)


def _literal(value):
    if isinstance(value, int) and not isinstance(value, bool) and \
            not INTEGER_RANGE[0] <= value <= INTEGER_RANGE[1]:
        raise FilterError(f"the number {value} is out of range (at most 64-bit integers)")
    return peewee.Value(value, converter=False)  # bound as a parameter, never converted again


def _is_lit(side, value):
    return isinstance(side, Literal) and (side.value is None if value is None else side.value == value)


def _compare(left, op, right, columns):
    if op in ("~", "!~"):
        if isinstance(right, Literal):
            pattern = str(right.value)
            if "%" not in pattern:
                pattern = "%" + pattern.replace("\\", "\\\\").replace("_", "\\_") + "%"
            pattern = _literal(pattern)
        else:
            pattern = _literal("%").concat(columns[right.name]).concat(_literal("%"))
        lhs = columns[left.name] if isinstance(left, Name) else _literal(left.value)
        # Case-insensitive, on the field's text: peewee writes ILIKE as PostgreSQL's
        # ILIKE and as SQLite's LIKE (which ignores case already and takes any type).
        matches = peewee.Expression(peewee.Cast(lhs, "TEXT"), peewee.OP.ILIKE,
                                    peewee.NodeList((pattern, peewee.SQL("ESCAPE '\\'"))))
        return matches if op == "~" else peewee.Negated(matches)
    # A literal compared with a field is converted by it (e.g. "3" for an integer field).
    sides = []
    for side, other in ((left, right), (right, left)):
        if isinstance(side, Name):
            sides.append(columns[side.name])
        elif isinstance(other, Name) and side.value is not None and side.value != "":
            try:
                sides.append(_literal(columns[other.name].db_value(side.value)))
            except (TypeError, ValueError, ArithmeticError):
                raise FilterError(f'invalid value {side.value!r} for field "{other.name}"') from None
        else:
            sides.append(_literal(side.value))
    lhs, rhs = sides
    if op in ("=", "!="):
        # NULL-safe, like PocketBase (SQLite's IS and IS NOT; PostgreSQL's IS takes NULL only)
        is_op = "IS NOT DISTINCT FROM" if op == "=" else "IS DISTINCT FROM"
        if _is_lit(left, "") or _is_lit(right, ""):
            # Like PocketBase, "" stands for "no value": NULL or the empty string.
            other = rhs if _is_lit(left, "") else lhs
            null, blank = (peewee.Expression(other, "IS" if op == "=" else "IS NOT", None),
                           peewee.Expression(other, is_op, _literal("")))
            return (null | blank) if op == "=" else (null & blank)
        if _is_lit(right, None):
            return peewee.Expression(lhs, "IS" if op == "=" else "IS NOT", None)
        return peewee.Expression(lhs, is_op, rhs)
    return peewee.Expression(lhs, op, rhs)
