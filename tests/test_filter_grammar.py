"""promptproxy.rest.filter_grammar: PocketBase's filter and sort syntax read into a
tree, with no SQL (filter_sql.py gives the tree its meaning)."""

import re

import pytest

from promptproxy.rest.filter_grammar import (
    Chain,
    Comparison,
    FilterError,
    Literal,
    Name,
    SortKey,
    parse_filter,
    parse_sort,
)

NAMES = {"name", "count", "notes"}


@pytest.mark.parametrize("text, tree", [
    ('name = "alice"', Comparison(Name("name"), "=", Literal("alice"))),
    ("3 <= count", Comparison(Literal(3), "<=", Name("count"))),
    ("count != -1.5", Comparison(Name("count"), "!=", Literal(-1.5))),
    ("notes ~ name", Comparison(Name("notes"), "~", Name("name"))),
    ("name = null && count = true || notes != false",
     Chain("||", (Chain("&&", (Comparison(Name("name"), "=", Literal(None)),
                               Comparison(Name("count"), "=", Literal(True)))),
                  Comparison(Name("notes"), "!=", Literal(False))))),
    ("name = 'a' && (count > 1 || count < 0) && notes !~ 'x'",
     Chain("&&", (Comparison(Name("name"), "=", Literal("a")),
                  Chain("||", (Comparison(Name("count"), ">", Literal(1)),
                               Comparison(Name("count"), "<", Literal(0)))),
                  Comparison(Name("notes"), "!~", Literal("x"))))),
    (r'name = "say \"hi\" \\ \n"', Comparison(Name("name"), "=", Literal('say "hi" \\ \\n'))),
    ("  ", None),
])
def test_filters_read_into_a_tree(text, tree):
    assert parse_filter(text, NAMES) == tree


def test_long_chains_stay_flat():
    tree = parse_filter("&&".join(["count=1"] * 200), NAMES)
    assert tree.op == "&&" and len(tree.terms) == 200
    assert all(isinstance(term, Comparison) for term in tree.terms)


@pytest.mark.parametrize("text, message", [
    ("nope = 1", 'unknown field "nope"'),
    ("name = ", "unexpected end of filter"),
    ("name ~ null", '"~" needs a text or number value'),
    ("(name = 1", 'missing ")"'),
    ("name == 1", 'unknown operator "=="'),
])
def test_bad_filters_are_refused_before_any_sql(text, message):
    with pytest.raises(FilterError, match=re.escape(message)):
        parse_filter(text, NAMES)


def test_sort_keys():
    assert parse_sort("-count, +name,notes,", NAMES) == [
        SortKey("count", True), SortKey("name", False), SortKey("notes", False)]
    assert parse_sort("", NAMES) == []
    with pytest.raises(FilterError, match='unknown field "nope"'):
        parse_sort("-nope", NAMES)
