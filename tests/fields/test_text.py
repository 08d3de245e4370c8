import peewee
import pytest

from promptproxy.data.fields import LongText, Text

from .table import column_types, refusal, round_trip

TEXT = Text("name", max_length=5)
LONG = LongText("body", max_length=8)


def test_columns():
    assert column_types(TEXT) == {"name": peewee.TextField}
    assert column_types(LONG) == {"body": peewee.TextField}
    assert TEXT.sortable and not LONG.sortable


@pytest.mark.parametrize("field, value, cleaned", [
    (TEXT, "abc", "abc"),
    (TEXT, "  abc  ", "abc"),
    (TEXT, "abcde", "abcde"),
    (TEXT, "   ", None),
    (TEXT, "", None),
    (TEXT, None, None),
    (LONG, "a\r\nb", "a\nb"),
    (LONG, "  kept  ", "  kept  "),
    (LONG, "   ", "   "),
    (LONG, None, None),
])
def test_valid(field, value, cleaned):
    assert field.clean(value) == cleaned


@pytest.mark.parametrize("field, value, code, message", [
    (TEXT, "abcdef", "validation_max_text_constraint", "Must be no more than 5 characters."),
    (TEXT, 12, "validation_invalid_type", "Must be text."),
    (TEXT, ["a"], "validation_invalid_type", "Must be text."),
    (LONG, "123456789", "validation_max_text_constraint", "Must be no more than 8 characters."),
    (LONG, True, "validation_invalid_type", "Must be text."),
    (LONG, {"a": 1}, "validation_invalid_type", "Must be text."),
])
def test_invalid(field, value, code, message):
    assert refusal(field, value) == (code, message)


@pytest.mark.parametrize("field, value, json", [
    (TEXT, " abc ", {"name": "abc"}),
    (TEXT, "", {"name": None}),
    (LONG, "l1\r\nl2", {"body": "l1\nl2"}),
])
def test_json_round_trip(field, value, json):
    assert round_trip(field, value) == json
