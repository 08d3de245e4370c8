import datetime as dt

import peewee
import pytest

from promptproxy.data.fields import DateTime

from .table import column_types, refusal, round_trip

EXPIRES = DateTime("expires")
WHEN = dt.datetime(2026, 12, 31, 23, 59)


def test_columns():
    assert column_types(EXPIRES) == {"expires": peewee.DateTimeField}


@pytest.mark.parametrize("value, cleaned", [
    ("2026-12-31 23:59", WHEN),
    ("2026-12-31T23:59", WHEN),
    ("2026-12-31 23:59:00.000Z", WHEN),
    ("2026-12-31T23:59:00", WHEN),
    ("2026-12-31", dt.datetime(2026, 12, 31)),
    ("2027-01-01T01:59:00+02:00", WHEN),
    (WHEN, WHEN),
    ("", None),
    (None, None),
])
def test_valid(value, cleaned):
    assert EXPIRES.clean(value) == cleaned


@pytest.mark.parametrize("value, message", [
    ("tomorrow", "Must be a date and time, like 2026-12-31 23:59."),
    ("2026-13-01", "Must be a date and time, like 2026-12-31 23:59."),
    (1767225540, "Must be a date and time."),
    (["2026-12-31"], "Must be a date and time."),
])
def test_invalid(value, message):
    assert refusal(EXPIRES, value) == ("validation_invalid_date", message)


@pytest.mark.parametrize("value, json", [
    ("2026-12-31 23:59:05.123Z", {"expires": "2026-12-31 23:59:05.123Z"}),
    ("", {"expires": ""}),
])
def test_json_round_trip(value, json):
    assert round_trip(EXPIRES, value) == json
