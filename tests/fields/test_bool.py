import peewee
import pytest

from promptproxy.data.fields import Bool

from .table import column_types, refusal, round_trip

ACTIVE = Bool("active", default=True)
TRACK = Bool("track")


def test_columns():
    assert column_types(TRACK) == {"track": peewee.BooleanField}
    assert TRACK.initial() is False and ACTIVE.initial() is True


@pytest.mark.parametrize("value, cleaned", [(True, True), (False, False), (None, False)])
def test_valid(value, cleaned):
    assert TRACK.clean(value) is cleaned


@pytest.mark.parametrize("value", ["true", "", 1, 0, [], {}])
def test_invalid(value):
    assert refusal(TRACK, value) == ("validation_invalid_type", "Must be true or false.")


@pytest.mark.parametrize("value, json", [(True, {"track": True}), (None, {"track": False})])
def test_json_round_trip(value, json):
    assert round_trip(TRACK, value) == json
