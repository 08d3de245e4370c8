"""How each field type shows in the admin: its form input, its table cell, and
how the form's text becomes the JSON value `records.save` takes.

Field types (`promptproxy/data/fields/`) know nothing of HTML or WTForms; this
registry does, one function per job, dispatched on the field's type:

    form_field(field, creating)  an unbound WTForms field for the create or edit form
    form_value(field, data)      the submitted data as a JSON value, or raise Invalid
    cell(field, row)             the field's text (or Markup) in a list or details table

A new field type works in the admin once it registers here, or it falls back on
the plain text input and cell of `Field`.
"""

import datetime as dt
import decimal
import json
from functools import singledispatch

from markupsafe import Markup
from wtforms import fields as wtf
from wtforms.validators import InputRequired
from wtforms.widgets import TextArea

from ..data import crypto
from ..data.fields import (
    MAX_NESTING,
    Bool,
    DateTime,
    Decimal,
    Email,
    GatewayKey,
    Invalid,
    Json,
    Labels,
    LongText,
    Number,
    Relation,
    Relations,
    Secret,
    Select,
    Url,
    storable_problem,
)

UNREADABLE = ("cannot be decrypted with the server's encryption key: type it again "
              "(or restore the key it was encrypted with)")


def mask(secret):
    """Enough of a secret to recognise it, never enough to use it."""
    if len(secret) < 12:
        return "••••••••"
    return "••••••••" + secret[-4:]


def shorten(text, limit=80):
    return text if len(text) <= limit else text[:limit - 1] + "…"


def clipped(text, limit=48):
    """Text for a list's cell: cut when long, and shown whole on hover, so that one
    long word (an end user is whatever a client sent) cannot widen the table."""
    if len(text) <= limit:
        return text
    return Markup('<span title="{}">{}</span>').format(text, shorten(text, limit))


# -- form inputs -----------------------------------------------------------------

class RequiredFlag(InputRequired):
    """Marks the input required (the label's star, the HTML attribute) and checks
    nothing: records.save says what is missing, with the same words as the REST API.
    An InputRequired, since that is what Flask-Admin looks for to draw the star."""

    def __call__(self, form, field):
        pass


class JSONTextArea(wtf.TextAreaField):
    """A textarea showing a JSON value indented, and giving back the text typed."""

    widget = TextArea()

    def _value(self):
        if self.raw_data:
            return self.raw_data[0]
        return "" if self.data in (None, "") else json.dumps(self.data, indent=2)

    def process_formdata(self, valuelist):
        self.data = valuelist[0] if valuelist else None


class DateTimeInput(wtf.StringField):
    """A datetime-local input: the stored value as the browser expects it."""

    def _value(self):
        if self.raw_data:
            return self.raw_data[0]
        if isinstance(self.data, dt.datetime):
            return self.data.strftime("%Y-%m-%dT%H:%M")
        return self.data or ""


def input_for(field, form_class=wtf.StringField, **options):
    """An input labelled, described and defaulted from `field`; `options` override."""
    validators = [RequiredFlag()] if field.required and field.default is None else []
    options = {"description": field.help, "default": field.initial(), **options}
    return form_class(field.label, validators=validators, **options)


@singledispatch
def form_field(field, creating):
    return input_for(field)


@form_field.register
def _(field: LongText, creating):
    return input_for(field, wtf.TextAreaField, render_kw={"rows": 6})


@form_field.register
def _(field: Email, creating):
    return input_for(field, render_kw={"type": "email"})


@form_field.register
def _(field: Url, creating):
    return input_for(field, render_kw={"type": "url", "placeholder": "https://api.openai.com/v1"})


@form_field.register
def _(field: Number, creating):
    return input_for(field, render_kw={"type": "number", "step": "1"})


@form_field.register
def _(field: Decimal, creating):
    bounds = {name: value for name, value in (("min", field.min), ("max", field.max)) if value is not None}
    return input_for(field, render_kw={"type": "number", "step": "any", **bounds})


@form_field.register
def _(field: Bool, creating):
    return wtf.BooleanField(field.label, description=field.help, default=field.initial())


@form_field.register
def _(field: Select, creating):
    choices = [wtf.SelectChoice(c, c) for c in field.choices]
    if not field.required:
        choices.insert(0, wtf.SelectChoice("", "—"))
    return input_for(field, wtf.SelectField, choices=choices)


@form_field.register
def _(field: Json, creating):
    return input_for(field, JSONTextArea,
                     render_kw={"rows": 5, "spellcheck": "false", "class": "form-control text-monospace"})


@form_field.register
def _(field: DateTime, creating):
    return input_for(field, DateTimeInput, render_kw={"type": "datetime-local"},
                     description=(field.help + " " if field.help else "") + "In UTC.")


@form_field.register
def _(field: Relation, creating):  # choices are filled per request (see views._with_choices)
    return input_for(field, wtf.SelectField, choices=[], validate_choice=False)


@form_field.register
def _(field: Relations, creating):
    return input_for(field, wtf.SelectMultipleField, choices=[], validate_choice=False, default=[],
                     render_kw={"data-role": "select2", "size": 6})


@form_field.register
def _(field: Secret, creating):
    hint = "Leave blank for none." if creating else "Leave blank to keep the current one."
    return input_for(field, wtf.PasswordField, render_kw={"autocomplete": "new-password", "placeholder": hint})


@form_field.register
def _(field: GatewayKey, creating):
    return wtf.StringField(
        field.label, description="Leave blank to generate a strong key. "
        "The full key is shown once, right after saving.",
        render_kw={"autocomplete": "off", "placeholder": "generated if left blank"})


# -- form data -> JSON values -----------------------------------------------------

@singledispatch
def form_value(field, data):
    """Text inputs, selects and checkboxes already give JSON values (text, lists of
    ids, booleans); the field's own `clean` does the rest."""
    return data


@form_value.register
def _(field: Bool, data):
    return bool(data)


@form_value.register(Number)
@form_value.register(Decimal)
def _(field, data):
    return None if isinstance(data, str) and not data.strip() else data


@form_value.register
def _(field: Json, data):
    if data is None or (isinstance(data, str) and not data.strip()):
        return None
    if not isinstance(data, str):
        return data
    problem = storable_problem(data)
    if problem:
        raise problem
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise Invalid("validation_invalid_json", f"Invalid JSON: {exc}.") from None
    except RecursionError:
        raise Invalid("validation_invalid_json", f"Must not nest deeper than {MAX_NESTING} levels.") from None
    return value


@form_value.register
def _(field: Labels, data):
    """Labels may be typed as words ("production, staging") as well as a JSON list."""
    if isinstance(data, str) and not data.strip().startswith("["):
        return data
    return form_value.dispatch(Json)(field, data)


# -- table cells ------------------------------------------------------------------

@singledispatch
def cell(field, row):
    value = getattr(row, field.name)
    return "" if value is None else str(value)


@cell.register
def _(field: LongText, row):
    value = getattr(row, field.name)
    return "" if value is None else shorten(str(value))


@cell.register
def _(field: Decimal, row):
    value = getattr(row, field.name)
    return "" if value is None else decimal_text(value)


def decimal_text(value):
    """A number as it was typed, never in exponent form: 0.000001, not 1e-06."""
    return format(decimal.Decimal(repr(value)), "f")


@cell.register
def _(field: Bool, row):
    return "yes" if getattr(row, field.name) else "no"


@cell.register
def _(field: Json, row):
    value = getattr(row, field.name)
    return "" if value is None else shorten(json.dumps(value))


@cell.register
def _(field: DateTime, row):
    value = getattr(row, field.name)
    return value.strftime("%Y-%m-%d %H:%M") + " UTC" if value else ""


@cell.register
def _(field: Secret, row):
    value = getattr(row, field.name)
    if not value:
        return ""
    try:
        return mask(crypto.decrypt_stored(value))
    except crypto.CannotDecrypt:
        return Markup('<span class="text-danger">{}</span>').format(UNREADABLE)


@cell.register
def _(field: GatewayKey, row):
    prefix = getattr(row, field.name + "_prefix")
    return prefix + "…" if prefix else "••••"
