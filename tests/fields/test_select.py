import peewee
import pytest

from promptproxy.data.fields import Select

from .table import column_types, refusal, round_trip

PROTOCOL = Select("protocol", choices=["openai", "anthropic"], default="openai")


def test_columns():
    assert column_types(PROTOCOL) == {"protocol": peewee.TextField}


@pytest.mark.parametrize("value, cleaned", [
    ("openai", "openai"), ("anthropic", "anthropic"), ("", None), (None, None),
])
def test_valid(value, cleaned):
    assert PROTOCOL.clean(value) == cleaned


@pytest.mark.parametrize("value", ["OpenAI", " openai", "gemini", 1, ["openai"]])
def test_invalid(value):
    assert refusal(PROTOCOL, value) == ("validation_invalid_value", "Must be one of: openai, anthropic.")


def test_json_round_trip():
    assert round_trip(PROTOCOL, "anthropic") == {"protocol": "anthropic"}
