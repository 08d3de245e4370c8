import peewee
import pytest

from promptproxy.data import crypto
from promptproxy.data.fields import KEEP, Secret

from .table import column_types, keys, refusal, round_trip  # noqa: F401 (keys is a fixture)

API_KEY = Secret("api_key")


def test_columns():
    assert column_types(API_KEY) == {"api_key": peewee.TextField}
    assert API_KEY.secret and not API_KEY.sortable


@pytest.mark.parametrize("value, cleaned", [
    ("sk-abc", "sk-abc"), ("  sk-abc  ", "sk-abc"), ("", KEEP), ("   ", KEEP), (None, KEEP),
])
def test_valid(value, cleaned):
    assert API_KEY.clean(value) == cleaned


@pytest.mark.parametrize("value", [12, ["sk-abc"], {"key": "sk-abc"}])
def test_invalid(value):
    assert refusal(API_KEY, value) == ("validation_invalid_type", "Must be text.")


def test_stored_encrypted(keys):  # noqa: F811
    stored = API_KEY.store("sk-secret")["api_key"]
    assert "sk-secret" not in stored and crypto.decrypt_stored(stored) == "sk-secret"


@pytest.mark.parametrize("value, json", [("sk-secret", {"api_key_set": True})])
def test_json_round_trip(keys, value, json):  # noqa: F811
    assert round_trip(API_KEY, value) == json  # write-only: whether one is set, never the key
