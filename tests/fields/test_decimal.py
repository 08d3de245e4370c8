import peewee
import pytest

from promptproxy.data.fields import Decimal

from .table import column_types, refusal, round_trip

ANY = Decimal("price")
PRICE = Decimal("price", min=0, max=1000)


def test_columns():
    assert column_types(ANY) == {"price": peewee.DoubleField}


@pytest.mark.parametrize("field, value, cleaned", [
    (ANY, 0.15, 0.15),
    (ANY, "0.15", 0.15),
    (ANY, " 2.5 ", 2.5),
    (ANY, 3, 3.0),
    (ANY, "12", 12.0),
    (ANY, -1.25, -1.25),
    (ANY, "1e-3", 0.001),
    (ANY, "", None),
    (ANY, None, None),
    (PRICE, 0, 0.0),
    (PRICE, "-0", 0.0),
    (PRICE, 1000, 1000.0),
])
def test_valid(field, value, cleaned):
    result = field.clean(value)
    assert result == cleaned and (result is None or type(result) is float)


@pytest.mark.parametrize("field, value, code, message", [
    (ANY, "cheap", "validation_invalid_number", "Must be a number, like 0.15."),
    (ANY, "0,15", "validation_invalid_number", "Must be a number, like 0.15."),
    (ANY, "nan", "validation_invalid_number", "Must be a number, like 0.15."),
    (ANY, float("inf"), "validation_invalid_number", "Must be a number, like 0.15."),
    (ANY, "-Infinity", "validation_invalid_number", "Must be a number, like 0.15."),
    (ANY, 10 ** 400, "validation_invalid_number", "Must be a number, like 0.15."),
    (ANY, True, "validation_invalid_number", "Must be a number."),
    (ANY, [0.15], "validation_invalid_number", "Must be a number."),
    (ANY, {"usd": 1}, "validation_invalid_number", "Must be a number."),
    (PRICE, -0.01, "validation_min_number_constraint", "Must be at least 0."),
    (PRICE, "1000.5", "validation_max_number_constraint", "Must be at most 1000."),
])
def test_invalid(field, value, code, message):
    assert refusal(field, value) == (code, message)


@pytest.mark.parametrize("value, json", [
    ("0.075", {"price": 0.075}),
    (0.1 + 0.2, {"price": 0.1 + 0.2}),  # the double itself comes back, not a rounding of it
    (None, {"price": None}),
])
def test_json_round_trip(value, json):
    assert round_trip(ANY, value) == json
