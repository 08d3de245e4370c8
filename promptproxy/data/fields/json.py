"""Any JSON value, or one of a given shape (`kind=dict` or `kind=list`), stored as
JSON text; and two shapes with rules of their own, for prompts and their versions:
`Variables` (name -> default) and `Labels` (a list of words)."""

import re

from .base import Field, Invalid, JSONColumn


class Json(Field):
    column_class = JSONColumn
    sortable = False

    def __init__(self, name, *, kind=None, **kw):
        super().__init__(name, **kw)
        self.kind = kind  # dict or list to insist on a shape

    def clean(self, value):
        if value is None:
            return None
        if self.kind is dict and not isinstance(value, dict):
            raise Invalid("validation_invalid_json", "Must be a JSON object, like {\"X-Name\": \"value\"}.")
        if self.kind is list and not isinstance(value, list):
            raise Invalid("validation_invalid_json", "Must be a JSON array.")
        return value


#: A variable's name, as `{{name}}` in a prompt's instructions: words joined by dots.
VARIABLE_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
#: Variables every call fills in itself (see promptproxy/prompting.py); a prompt cannot declare them.
BUILT_IN_VARIABLES = ("user.name", "user.email", "end_user", "date", "datetime")


class Variables(Json):
    """A prompt's variables: a JSON object of name -> default text, `null` for a
    variable each call must give. Numbers are kept as defaults too (inserted as text)."""

    def __init__(self, name, **kw):
        super().__init__(name, kind=dict, **kw)

    def clean(self, value):
        value = super().clean(value)
        for name, default in (value or {}).items():
            if not re.fullmatch(VARIABLE_NAME, name):
                raise Invalid("validation_invalid_variable",
                              f"{name!r} is not a variable name: use letters, digits and _, joined by dots.")
            if name in BUILT_IN_VARIABLES:
                raise Invalid("validation_invalid_variable", f"{{{{{name}}}}} is built in; it cannot be declared.")
            if isinstance(default, bool) or not isinstance(default, (str, int, float, type(None))):
                raise Invalid("validation_invalid_variable",
                              f"The default of {name!r} must be text, a number, or null (required).")
        return value


LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


class Labels(Json):
    """Labels such as `production` or `staging`: words of letters, digits, `_`, `.`
    and `-`, never all digits (`@3` names version 3, `@staging` a label)."""

    def __init__(self, name, **kw):
        super().__init__(name, kind=list, **kw)

    def clean(self, value):
        if isinstance(value, str):  # one label, or several separated by commas or spaces
            value = [word for word in re.split(r"[\s,]+", value) if word]
        value = super().clean(value)
        for label in value or []:
            if not isinstance(label, str) or not LABEL.fullmatch(label) or label.isdigit():
                raise Invalid("validation_invalid_label",
                              f"{label!r} is not a label: use a word of letters, digits, _, . and - "
                              "(at most 40, not all digits).")
        return list(dict.fromkeys(value or []))
