import peewee
import pytest

from promptproxy.data.fields import EMAIL_PATTERN, Email

from .table import column_types, refusal, round_trip

EMAIL = Email("email", unique=True)


def test_columns():
    assert column_types(EMAIL) == {"email": peewee.TextField}
    assert EMAIL.columns()["email"].unique


@pytest.mark.parametrize("value, cleaned", [
    ("ada@example.com", "ada@example.com"),
    ("  Ada@Example.COM ", "ada@example.com"),
    ("a+b@sub.example.org", "a+b@sub.example.org"),
    ("", None),
    (None, None),
])
def test_valid(value, cleaned):
    assert EMAIL.clean(value) == cleaned


@pytest.mark.parametrize("value, code, message", [
    ("ada", "validation_invalid_email", "Must be a valid email address."),
    ("ada@example", "validation_invalid_email", "Must be a valid email address."),
    ("a da@example.com", "validation_invalid_email", "Must be a valid email address."),
    ("@example.com", "validation_invalid_email", "Must be a valid email address."),
    ("x" * 250 + "@example.com", "validation_max_text_constraint", "Must be no more than 255 characters."),
    (42, "validation_invalid_type", "Must be text."),
])
def test_invalid(value, code, message):
    assert refusal(EMAIL, value) == (code, message)


def test_one_pattern_for_records_and_admins():
    from promptproxy.auth import superusers

    assert superusers.check_credentials("ada@example", "long enough") == {"email": "Must be a valid email address."}
    assert EMAIL_PATTERN.fullmatch("ada@example.com")


def test_json_round_trip():
    assert round_trip(EMAIL, " ADA@example.com") == {"email": "ada@example.com"}
