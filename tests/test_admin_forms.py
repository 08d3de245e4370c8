"""The admin's boundary: what its form inputs submit, turned into the JSON values
records.save takes (the REST API's), with the form's own messages for text that
cannot be read."""

import pytest

from promptproxy.admin import forms
from promptproxy.data.fields import Bool, Invalid, Json, Number, Relations, Text


@pytest.mark.parametrize("field, submitted, value", [
    (Json("params"), '{"temperature": 0.2}', {"temperature": 0.2}),
    (Json("params"), "  [1, 2]\n", [1, 2]),
    (Json("params"), "   ", None),
    (Json("params"), None, None),
    (Json("params"), {"already": "parsed"}, {"already": "parsed"}),
    (Number("rpm"), "", None),
    (Number("rpm"), "  ", None),
    (Number("rpm"), "12", "12"),
    (Bool("active"), True, True),
    (Bool("active"), None, False),
    (Relations("models", "models"), ["a", "b"], ["a", "b"]),
    (Text("name"), " ada ", " ada "),
])
def test_form_value(field, submitted, value):
    assert forms.form_value(field, submitted) == value


@pytest.mark.parametrize("submitted, message", [
    ("{not json", "Invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)."),
    ("[" * 100_000, "Must not nest deeper than 64 levels."),
    ('"\ud800"', "Must be valid Unicode text (it contains a lone surrogate)."),
])
def test_unreadable_json(submitted, message):
    with pytest.raises(Invalid) as refused:
        forms.form_value(Json("params"), submitted)
    assert refused.value.message == message
