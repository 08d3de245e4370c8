import peewee
import pytest

from promptproxy.data.fields import Number

from .table import column_types, refusal, round_trip

ANY = Number("tokens")
BOUNDED = Number("rpm", min=0, max=100)


def test_columns():
    assert column_types(ANY) == {"tokens": peewee.BigIntegerField}  # 64 bits on PostgreSQL too


@pytest.mark.parametrize("field, value, cleaned", [
    (ANY, 12, 12),
    (ANY, -3, -3),
    (ANY, "12", 12),
    (ANY, " 7 ", 7),
    (ANY, 2.0, 2),
    (ANY, "2.0", 2),
    (ANY, 2 ** 63 - 1, 2 ** 63 - 1),
    (ANY, "", None),
    (ANY, None, None),
    (BOUNDED, 0, 0),
    (BOUNDED, 100, 100),
])
def test_valid(field, value, cleaned):
    assert field.clean(value) == cleaned


@pytest.mark.parametrize("field, value, code, message", [
    (ANY, "twelve", "validation_invalid_number", "Must be a whole number."),
    (ANY, 1.5, "validation_invalid_number", "Must be a whole number."),
    (ANY, "nan", "validation_invalid_number", "Must be a whole number."),
    (ANY, float("inf"), "validation_invalid_number", "Must be a whole number."),
    (ANY, [1], "validation_invalid_number", "Must be a whole number."),
    (ANY, True, "validation_invalid_number", "Must be a number."),
    (ANY, 2 ** 63, "validation_max_number_constraint", f"Must be at most {2 ** 63 - 1}."),
    (ANY, -2 ** 63 - 1, "validation_min_number_constraint", f"Must be at least {-2 ** 63}."),
    (ANY, 1e300, "validation_max_number_constraint", f"Must be at most {2 ** 63 - 1}."),
    (BOUNDED, -1, "validation_min_number_constraint", "Must be at least 0."),
    (BOUNDED, 101, "validation_max_number_constraint", "Must be at most 100."),
])
def test_invalid(field, value, code, message):
    assert refusal(field, value) == (code, message)


@pytest.mark.parametrize("value, json", [(" 42 ", {"tokens": 42}), (None, {"tokens": None})])
def test_json_round_trip(value, json):
    assert round_trip(ANY, value) == json
