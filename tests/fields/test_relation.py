import peewee
import pytest

from promptproxy.data.fields import JSONColumn, Relation, Relations

from .table import column_types, refusal, round_trip

USER = Relation("user", "users", required=True)
API = Relation("api", "apis", on_delete="keep")
MODELS = Relations("models", "models")


def test_columns():
    assert column_types(USER) == {"user": peewee.TextField}
    assert USER.columns()["user"].index
    assert column_types(MODELS) == {"models": JSONColumn}
    assert (USER.on_delete, API.on_delete, MODELS.on_delete) == ("restrict", "keep", "restrict")


@pytest.mark.parametrize("field, value, cleaned", [
    (USER, "abc123", "abc123"),
    (USER, " abc123 ", "abc123"),
    (USER, "", None),
    (USER, None, None),
    (MODELS, ["a", " b ", "a", ""], ["a", "b"]),
    (MODELS, "a", ["a"]),
    (MODELS, [], []),
    (MODELS, "", []),
    (MODELS, None, []),
])
def test_valid(field, value, cleaned):
    assert field.clean(value) == cleaned


@pytest.mark.parametrize("field, value, message", [
    (USER, 12, "Must be a record id."),
    (USER, ["abc"], "Must be a record id."),
    (MODELS, [1, 2], "Must be a list of record ids."),
    (MODELS, {"id": "a"}, "Must be a list of record ids."),
    (MODELS, 7, "Must be a list of record ids."),
])
def test_invalid(field, value, message):
    assert refusal(field, value) == ("validation_invalid_type", message)


@pytest.mark.parametrize("field, value, ids", [
    (USER, "abc", ["abc"]), (USER, None, []), (MODELS, ["a", "b"], ["a", "b"]), (MODELS, None, []),
])
def test_ids(field, value, ids):
    assert field.ids(value) == ids


@pytest.mark.parametrize("field, value, json", [
    (USER, " abc ", {"user": "abc"}),
    (MODELS, ["b", "a", "b"], {"models": ["b", "a"]}),
    (MODELS, None, {"models": []}),
])
def test_json_round_trip(field, value, json):
    assert round_trip(field, value) == json
