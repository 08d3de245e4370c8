"""promptproxy.rest.filter_sql: PocketBase filter and sort syntax -> peewee, run against real SQLite."""

import datetime as dt
import sys
from pathlib import Path

import peewee
import pytest

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # so the module imports however pytest is started
    sys.path.insert(0, ROOT)

from promptproxy.rest.filter_sql import FilterError, parse_filter, parse_sort  # noqa: E402

db = peewee.SqliteDatabase(":memory:")


class Item(peewee.Model):
    name = peewee.TextField()
    count = peewee.IntegerField()
    active = peewee.BooleanField()
    notes = peewee.TextField(null=True)
    created = peewee.DateTimeField()

    class Meta:
        database = db


COLUMNS = {"id": Item.id, "name": Item.name, "count": Item.count, "active": Item.active,
           "notes": Item.notes, "created": Item.created}

ROWS = [  # name, count, active, notes, created (month)
    ("alice", 1, True, "Urgent: call back", 1),
    ("Bob", 2, False, None, 2),
    ("carol", 3, True, "", 3),
    ("O'Brien", 4, False, 'said "hi"', 4),
    ("dave_x", -5, True, "50% off", 5),
    ("back\\slash", 0, False, None, 6),
    ("eve", 7, True, "eve", 7),
]
ALL = [row[0] for row in ROWS]


@pytest.fixture(autouse=True)
def table():
    db.connect(reuse_if_open=True)
    db.create_tables([Item])
    for name, count, active, notes, month in ROWS:
        Item.create(name=name, count=count, active=active, notes=notes,
                    created=dt.datetime(2024, month, 1, 10, 0, 0))
    yield
    db.drop_tables([Item])


def names(text):
    """Names of the rows the filter selects, in insertion order."""
    query = Item.select().order_by(Item.id)
    expr = parse_filter(text, COLUMNS)
    if expr is not None:
        query = query.where(expr)
    return [row.name for row in query]


@pytest.mark.parametrize("text, expected", [
    # each operator
    ('name = "alice"', ["alice"]),
    ('name != "alice"', [n for n in ALL if n != "alice"]),
    ("count > 3", ["O'Brien", "eve"]),
    ("count >= 3", ["carol", "O'Brien", "eve"]),
    ("count < 1", ["dave_x", "back\\slash"]),
    ("count <= 1", ["alice", "dave_x", "back\\slash"]),
    ('name ~ "ar"', ["carol"]),
    ('name !~ "a"', ["Bob", "O'Brien", "eve"]),
    # operand order and field-to-field comparisons
    ("3 < count", ["O'Brien", "eve"]),
    ('"alice" = name', ["alice"]),
    ("name = notes", ["eve"]),
    ("count > id", []),
    ("count = id", ["alice", "Bob", "carol", "O'Brien", "eve"]),
    ('"alice smith" ~ name', ["alice"]),
    # numbers, booleans, dates; literals are converted by the compared field
    ("count > 2.5", ["carol", "O'Brien", "eve"]),
    ("count < -1", ["dave_x"]),
    ("count = -5", ["dave_x"]),
    ('count = "3"', ["carol"]),
    ('count = "abc"', []),
    ("active = true", ["alice", "carol", "dave_x", "eve"]),
    ("active = false", ["Bob", "O'Brien", "back\\slash"]),
    ("active != true", ["Bob", "O'Brien", "back\\slash"]),
    ("true = active && count > 2", ["carol", "eve"]),
    ('created >= "2024-06-01"', ["back\\slash", "eve"]),
    ('created < "2024-02-01 10:00:00"', ["alice"]),
    ('created > "2024-02-01 10:00:00" && created <= "2024-03-01 10:00:00"', ["carol"]),
    # null and empty string
    ("notes = null", ["Bob", "back\\slash"]),
    ("null = notes", ["Bob", "back\\slash"]),
    ("notes != null", ["alice", "carol", "O'Brien", "dave_x", "eve"]),
    ('notes = ""', ["Bob", "carol", "back\\slash"]),
    ("notes = ''", ["Bob", "carol", "back\\slash"]),
    ('"" = notes', ["Bob", "carol", "back\\slash"]),
    ('notes != ""', ["alice", "O'Brien", "dave_x", "eve"]),
    ('notes != "eve"', ["alice", "Bob", "carol", "O'Brien", "dave_x", "back\\slash"]),
    ("null = null", ALL),
    # contains: case-insensitive, _ and \ literal, % makes it a pattern
    ('name ~ "ALI"', ["alice"]),
    ('notes ~ "urgent"', ["alice"]),
    ("notes ~ 'CALL Back'", ["alice"]),
    ('name ~ "_"', ["dave_x"]),
    ('name ~ "\\\\"', ["back\\slash"]),
    ('notes ~ "50%"', ["dave_x"]),
    ('name ~ "a%e"', ["alice"]),
    ('name ~ "%e"', ["alice", "eve"]),
    ('notes ~ "\\\\%"', []),
    ("count ~ 5", ["dave_x"]),
    ('notes !~ "e"', ["carol", "O'Brien", "dave_x"]),
    # quotes and escapes
    ("name = 'O\\'Brien'", ["O'Brien"]),
    ('name = "O\'Brien"', ["O'Brien"]),
    ('notes = "said \\"hi\\""', ["O'Brien"]),
    ("notes = 'said \"hi\"'", ["O'Brien"]),
    ('name = "back\\\\slash"', ["back\\slash"]),
    ('name = "back\\slash"', ["back\\slash"]),  # a backslash before other characters stays
    ('name = "a && b || (c)"', []),
    # precedence, parentheses, whitespace
    ('name = "alice" || name = "Bob" && active = true', ["alice"]),
    ('(name = "alice" || name = "Bob") && active = false', ["Bob"]),
    ('active = true && count > 2 || name = "Bob"', ["Bob", "carol", "eve"]),
    ('active = true && (count > 2 || name = "alice")', ["alice", "carol", "eve"]),
    ('((((name = "alice"))))', ["alice"]),
    ('(name = "alice" || (count > 3 && (active = true || notes = null))) && id > 0',
     ["alice", "eve"]),
    ('  name="alice"||count=2\n\t&&\r\nactive=false  ', ["alice", "Bob"]),
    ("count>=-5&&count<=-5", ["dave_x"]),
    # blank
    ("", ALL),
    ("   \n\t", ALL),
])
def test_filter_selects_exact_rows(text, expected):
    assert names(text) == expected


def test_blank_filter_is_none():
    assert parse_filter("", COLUMNS) is None
    assert parse_filter("  \t\n", COLUMNS) is None
    assert parse_filter(None, COLUMNS) is None


def test_null_comparisons_compile_to_is_null():
    sql, params = Item.select().where(parse_filter("notes = null", COLUMNS)).sql()
    assert 'IS NULL' in sql and params == []
    sql, params = Item.select().where(parse_filter("notes != null", COLUMNS)).sql()
    assert 'IS NOT NULL' in sql and params == []


def test_max_depth_is_accepted():
    assert names("(" * 32 + 'name = "alice"' + ")" * 32) == ["alice"]


@pytest.mark.parametrize("text, message", [
    ('foo = 1', 'unknown field "foo"'),
    ('name = bar', 'unknown field "bar"'),
    ('name == "x"', 'unknown operator "==" at position 5'),
    ('name & "x"', 'unknown operator "&"'),
    ('name = "x" &&& count = 1', 'unknown operator "&&&"'),
    ('name <> "x"', 'unknown operator "<>"'),
    ('name =', 'unexpected end of filter'),
    ('name', 'unexpected end of filter'),
    ('name = "x" &&', 'unexpected end of filter'),
    ('name = "x" ||', 'unexpected end of filter'),
    ('&& name = "x"', 'unexpected && at position 0'),
    ('name = "x" || || count = 1', 'unexpected ||'),
    ('name = = "x"', 'unexpected ='),
    ('name "x"', 'expected an operator at position 5'),
    ('name && "x"', 'expected an operator'),
    ('(name = "x"', 'missing ")"'),
    ('((name = "x")', 'missing ")"'),
    ('name = "x")', 'unexpected ) at position 10'),
    ('()', 'unexpected )'),
    ('name = "x" name', 'unexpected name at position 11'),
    ('name = "x" 5', 'unexpected 5'),
    ('name = "x" (count = 1)', 'unexpected ('),
    ('name = "abc', 'unterminated string at position 7'),
    ("name = 'abc\\'", 'unterminated string at position 7'),
    ('name = "a" # x', 'unexpected character "#" at position 11'),
    ('name = 1.', 'unexpected character "."'),
    ('count = --1', 'unexpected character "-"'),
    ('name.first = "x"', 'unexpected character "."'),
    ('name ~ null', '"~" needs a text or number value'),
    ('name !~ true', '"!~" needs a text or number value'),
    ('name = "' + "a" * 2000 + '"', 'longer than 2000 characters'),
    ("(" * 33 + 'name = "x"' + ")" * 33, 'nested deeper than 32'),
])
def test_invalid_filters_raise(text, message):
    with pytest.raises(FilterError) as info:
        parse_filter(text, COLUMNS)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_messages_are_short_and_plain():
    with pytest.raises(FilterError) as info:
        parse_filter('nope = 1', COLUMNS)
    assert str(info.value) == 'unknown field "nope"'
    with pytest.raises(FilterError) as info:
        parse_filter('name = "abc', COLUMNS)
    assert str(info.value) == 'unterminated string at position 7'
    with pytest.raises(FilterError) as info:
        parse_filter('name =  ', COLUMNS)
    assert str(info.value) == 'unexpected end of filter'


def test_only_given_columns_are_accepted():
    with pytest.raises(FilterError, match='unknown field "notes"'):
        parse_filter('notes = null', {"name": Item.name})
    assert parse_filter('name = "x"', {"name": Item.name}) is not None


INJECTIONS = [
    "x' OR 1=1 --",
    'x" OR 1=1',
    "x' OR '1'='1",
    "'; DROP TABLE item; --",
    '"; DROP TABLE item; --',
    "x\\' OR 1=1 --",
    "%' OR '1'='1",
]


@pytest.mark.parametrize("text", [
    'name = "x\' OR 1=1 --"',
    'name = "x\\" OR 1=1"',
    "name = 'x\\' OR 1=1 --'",
    "name = 'x\\' OR \\'1\\'=\\'1'",
    "name = \"'; DROP TABLE item; --\"",
    "name = '\"; DROP TABLE item; --'",
    "name != \"x' OR 1=1 --\" && name = \"x' OR 1=1 --\"",
    "name ~ \"x' OR 1=1 --\"",
    "name ~ \"%' OR '1'='1\"",
    "notes = \"'; DROP TABLE item; --\" || name < \"\"",
])
def test_injection_attempts_match_nothing_and_leave_table(text):
    assert names(text) == []
    assert Item.table_exists()
    assert Item.select().count() == len(ROWS)


@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_values_compare_literally(value):
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    literal = [r.name for r in Item.select().where(Item.name == value)]
    assert names("name = " + quoted) == literal == []
    # Stored as data, the same text is found by exactly that comparison.
    Item.create(name=value, count=0, active=False, created=dt.datetime(2024, 1, 1))
    assert names("name = " + quoted) == [value]
    assert names("name ~ " + quoted) == [value]
    sql, params = Item.select().where(parse_filter("name = " + quoted, COLUMNS)).sql()
    assert value in params
    assert "OR" not in sql and "DROP" not in sql and "1=1" not in sql
    assert Item.table_exists()


def order(text):
    return [row.name for row in Item.select().order_by(*parse_sort(text, COLUMNS), Item.id)]


def test_parse_sort_builds_orderings():
    assert parse_sort("", COLUMNS) == []
    assert parse_sort("  ", COLUMNS) == []
    assert parse_sort(None, COLUMNS) == []
    result = parse_sort("-created,name", COLUMNS)
    assert len(result) == 2
    assert isinstance(result[0], peewee.Ordering) and result[0].node is Item.created
    assert result[0].direction == "DESC"
    assert result[1].node is Item.name and result[1].direction == "ASC"
    plus = parse_sort("+name", COLUMNS)
    assert plus[0].node is Item.name and plus[0].direction == "ASC"


def test_parse_sort_orders_rows():
    assert order("-created") == list(reversed(ALL))
    assert order("count") == ["dave_x", "back\\slash", "alice", "Bob", "carol", "O'Brien", "eve"]
    assert order("-active, -count") == ["eve", "carol", "alice", "dave_x",
                                       "O'Brien", "Bob", "back\\slash"]
    assert order("+active,count,") == ["back\\slash", "Bob", "O'Brien",
                                      "dave_x", "alice", "carol", "eve"]


@pytest.mark.parametrize("text", ["foo", "-foo", "name,bogus", "+", "-", "name desc",
                                  "name; DROP TABLE item"])
def test_parse_sort_rejects_unknown_fields(text):
    with pytest.raises(FilterError, match="unknown field"):
        parse_sort(text, COLUMNS)
    assert Item.table_exists()


def test_value_the_field_cannot_take_is_a_filter_error():
    class StrictIntegerField(peewee.IntegerField):  # built-in fields pass bad values through
        def db_value(self, value):
            return int(value)

    class Token(peewee.Model):
        key = StrictIntegerField()

    with pytest.raises(FilterError, match='invalid value \'abc\' for field "key"'):
        parse_filter('key = "abc"', {"key": Token.key})
    assert parse_filter('key = "12"', {"key": Token.key}) is not None
