import pytest

from promptproxy.data.fields import Json, JSONColumn

from .table import column_types, refusal, round_trip

ANY = Json("params")
HEADERS = Json("headers", kind=dict)
TOOLS = Json("tools", kind=list)


def test_columns():
    assert column_types(ANY) == {"params": JSONColumn}
    assert not ANY.sortable


@pytest.mark.parametrize("field, value, cleaned", [
    (ANY, {"temperature": 0.2}, {"temperature": 0.2}),
    (ANY, [1, "two", None], [1, "two", None]),
    (ANY, "text", "text"),
    (ANY, 3, 3),
    (ANY, None, None),
    (HEADERS, {"X-Name": "value"}, {"X-Name": "value"}),
    (HEADERS, {}, {}),
    (TOOLS, [], []),
])
def test_valid(field, value, cleaned):
    assert field.clean(value) == cleaned


@pytest.mark.parametrize("field, value, message", [
    (HEADERS, ["X-Name"], "Must be a JSON object, like {\"X-Name\": \"value\"}."),
    (HEADERS, "X-Name: value", "Must be a JSON object, like {\"X-Name\": \"value\"}."),
    (TOOLS, {"type": "function"}, "Must be a JSON array."),
    (TOOLS, 0, "Must be a JSON array."),
])
def test_invalid(field, value, message):
    assert refusal(field, value) == ("validation_invalid_json", message)


@pytest.mark.parametrize("field, value, json", [
    (ANY, {"a": [1, {"b": None}], "é": "ü"}, {"params": {"a": [1, {"b": None}], "é": "ü"}}),
    (ANY, None, {"params": None}),
    (TOOLS, [{"type": "function"}], {"tools": [{"type": "function"}]}),
])
def test_json_round_trip(field, value, json):
    assert round_trip(field, value) == json
