import peewee
import pytest

from promptproxy.data import crypto
from promptproxy.data.fields import GatewayKey, GeneratedKey

from .table import column_types, keys, refusal, round_trip  # noqa: F401 (keys is a fixture)

KEY = GatewayKey("key")
OWN = "my-own-key-0123456789"


def test_columns():
    assert column_types(KEY) == {"key": peewee.CharField, "key_prefix": peewee.CharField,
                                 "key_legacy": peewee.BooleanField}
    assert KEY.unique and KEY.secret and KEY.immutable and KEY.reveal_once


@pytest.mark.parametrize("value", [None, ""])
def test_blank_generates_a_key(value):
    key = KEY.clean(value)
    assert isinstance(key, GeneratedKey) and GatewayKey.generated(key) and len(key) == 43


@pytest.mark.parametrize("value, cleaned", [(OWN, OWN), (f"  {OWN} ", OWN)])
def test_valid(value, cleaned):
    cleaned_value = KEY.clean(value)
    assert cleaned_value == cleaned and not isinstance(cleaned_value, GeneratedKey)


@pytest.mark.parametrize("value, code, message", [
    ("short", "validation_invalid_key", "A key of your own must be at least 16 characters with no spaces."),
    ("has a space in the middle", "validation_invalid_key",
     "A key of your own must be at least 16 characters with no spaces."),
    (1234567890123456, "validation_invalid_type", "Must be text."),
])
def test_invalid(value, code, message):
    assert refusal(KEY, value) == (code, message)


def test_stored_as_digest(keys):  # noqa: F811
    generated = KEY.clean(None)
    stored = KEY.store(generated)
    assert stored == {"key": crypto.digest(generated), "key_prefix": generated[:10], "key_legacy": False}
    assert KEY.store(OWN)["key_prefix"] is None


def test_json_round_trip(keys):  # noqa: F811
    assert round_trip(KEY, OWN) == {"key_prefix": ""}
    json = round_trip(KEY, None)
    assert json["key_prefix"].startswith("pp-") and len(json["key_prefix"]) == 10
