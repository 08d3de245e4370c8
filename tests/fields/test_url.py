import peewee
import pytest

from promptproxy.data.fields import Url

from .table import column_types, refusal, round_trip

URL = Url("base_url", required=True)
NOT_HTTP = "Must be an http:// or https:// URL, like http://localhost:11434/v1."


def test_columns():
    assert column_types(URL) == {"base_url": peewee.TextField}


@pytest.mark.parametrize("value, cleaned", [
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("http://localhost:11434/v1/", "http://localhost:11434/v1"),
    ("  http://[::1]:8080  ", "http://[::1]:8080"),
    ("", None),
    (None, None),
])
def test_valid(value, cleaned):
    assert URL.clean(value) == cleaned


@pytest.mark.parametrize("value, code, message", [
    ("api.openai.com", "validation_invalid_url", NOT_HTTP),
    ("ftp://example.com", "validation_invalid_url", NOT_HTTP),
    ("http://", "validation_invalid_url", NOT_HTTP),
    ("http://[::1", "validation_invalid_url", "The host is not a valid name or address."),
    ("http://localhost:port/v1", "validation_invalid_url", "The port is not a number."),
    ("http://x/" + "a" * 2048, "validation_max_text_constraint", "Must be no more than 2048 characters."),
    (["http://x"], "validation_invalid_type", "Must be text."),
])
def test_invalid(value, code, message):
    assert refusal(URL, value) == (code, message)


def test_json_round_trip():
    assert round_trip(URL, "https://example.com/v1/") == {"base_url": "https://example.com/v1"}
