"""One Flask-Admin view class serves every collection: columns, search, filters,
forms and formatting are all read off the collection's declaration (and, per
field type, off the registry in forms.py)."""

import json

from flask import flash, g, redirect, request, session, url_for
from flask_admin import expose
from flask_admin.actions import action
from flask_admin.contrib.peewee import ModelView
from flask_admin.contrib.peewee import filters as peewee_filters
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms.fields import HiddenField, SelectChoice

from ..collections import BY_NAME
from ..data import crypto, records
from ..data.fields import Bool, DateTime, Invalid, Json, LongText, Relation, Relations, Secret, Text, blank
from . import forms

REVEAL_KEY = "_reveal"


def reveal_once(collection, row, revealed):
    """Keep values to show once (a new key) for the next page, encrypted in the
    session cookie so they are never readable from it."""
    payload = {"collection": collection.name, "title": collection.title(row), "values": revealed}
    session[REVEAL_KEY] = crypto.encrypt(json.dumps(payload))


def pop_reveal():
    token = session.pop(REVEAL_KEY, None)
    if not token:
        return None
    text = crypto.decrypt(token)
    return json.loads(text) if text else None


class LoginRequired:
    """Every collection page needs a logged-in admin."""

    def is_accessible(self):
        return current_user.is_authenticated

    def inaccessible_callback(self, name, **kwargs):
        return redirect(url_for("admin.login_view", next=request.full_path))


def relation_title(field, record_id):
    """A related record's readable name, looked up once per request."""
    if not record_id:
        return ""
    cache = g.setdefault("_titles", {})
    key = (field.target, record_id)
    if key not in cache:
        target = BY_NAME[field.target]
        row = target.model.get_or_none(target.model.id == record_id)
        cache[key] = target.title(row) if row else None
    return cache[key]


def relation_choices(field):
    target = BY_NAME[field.target]
    return [(row.id, target.title(row)) for row in target.model.select().order_by(target.model.created)]


def cell(field, listed=False):
    """A list/details formatter for one field; in a list, long text is clipped."""
    if isinstance(field, Relations):
        def format_relations(view, context, row, name):
            ids = getattr(row, name) or []
            if not ids:
                return Markup('<span class="text-muted">all</span>')
            return ", ".join(relation_title(field, record_id) or f"{record_id} (deleted)" for record_id in ids)
        return format_relations
    if isinstance(field, Relation):
        def format_relation(view, context, row, name):
            record_id = getattr(row, name)
            title = relation_title(field, record_id)
            if title is None:
                return Markup('<span class="text-muted" title="deleted">{} (deleted)</span>').format(record_id)
            if not record_id:
                return ""
            url = url_for(f"{field.target}.details_view", id=record_id)
            return Markup('<a href="{}" title="{}">{}</a>').format(url, record_id, title)
        return format_relation
    if listed and isinstance(field, Text) and not isinstance(field, LongText):
        return lambda view, context, row, name: forms.clipped(forms.cell(field, row))
    return lambda view, context, row, name: forms.cell(field, row)


def copy_button(text, what):
    """The text, and a button that copies it (static/copy.js)."""
    return Markup('<code>{}</code> <button type="button" class="btn btn-sm btn-link p-0 pp-copy" '
                  'data-copy="{}" aria-label="Copy {}">Copy</button>').format(text, text, what)


def id_cell(view, context, row, name):
    return copy_button(row.id, "the id")


def reference_cell(collection):
    """What a client writes to use the record: a model's `model` value, a prompt's
    part after `<model>:`."""
    if collection.name == "models":
        return lambda view, context, row, name: copy_button(collection.reference_of(row), "the model name")
    return lambda view, context, row, name: (
        Markup('<span class="text-muted">&lt;model&gt;:</span>')
        + copy_button(collection.reference_of(row), "the prompt reference"))


REFERENCE_HELP = {
    "models": "What a client sends as model, alone or as <model>:<prompt>.",
    "prompts": "What a client puts after a model: <model>:<reference>.",
}


def in_use_message(refused):
    """A refused delete, with a link to each record still using this one."""
    used_by = Markup("; ").join(
        Markup("{} ({}{})").format(
            other.name,
            Markup(", ").join(Markup('<a href="{}">{}</a>').format(
                url_for(f"{other.name}.details_view", id=record_id), title) for record_id, title in shown),
            records.more_text(more))
        for other, shown, more in refused.dependents)
    return Markup("Cannot delete {} {}: still used by {}. Delete or change those first.").format(
        refused.collection.singular, refused.collection.title(refused.row), used_by)


# What Flask-Admin says after a write, naming nothing: our own messages name the record.
GENERIC_MESSAGES = {"Record was successfully created.", "Record was successfully saved.",
                    "Record was successfully deleted."}


def without_generic_messages(response):
    flashes = session.get("_flashes")
    if flashes:
        session["_flashes"] = [(category, message) for category, message in flashes
                               if message not in GENERIC_MESSAGES]
    return response


# Form groups in the order forms show them; all but the first fold away until opened.
FORM_GROUPS = (("basics", None), ("prices", "Prices"), ("access", "Access rules"), ("limits", "Limits"),
               ("routing", "Retries and load"), ("advanced", "Advanced settings"))


def holds_value(field, data):
    """Whether a form input holds something other than the field's default."""
    if blank(data) or data is False:
        return False
    default = field.initial()
    return blank(default) or str(data) != str(default)


def detail_cell(field):
    """Details pages show long text and JSON whole and readable."""
    if isinstance(field, Json):
        def format_json(view, context, row, name):
            value = getattr(row, name)
            if value is None:
                return ""
            return Markup('<pre class="pp-pre">{}</pre>').format(json.dumps(value, indent=2, ensure_ascii=False))
        return format_json
    if isinstance(field, LongText):
        return lambda view, context, row, name: (
            Markup('<pre class="pp-pre">{}</pre>').format(getattr(row, name)) if getattr(row, name) else "")
    return cell(field)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def defuse_formula(text):
    """A CSV cell a spreadsheet would run as a formula, made plain text (OWASP's advice)."""
    return "'" + text if isinstance(text, str) and text.startswith(FORMULA_STARTS) else text


def export_cell(field):
    """A CSV export formatter: whole values as plain text, related records by name."""
    def format_export(view, context, row, name):
        value = getattr(row, name)
        if isinstance(field, Relation) and not isinstance(field, Relations):
            return relation_title(field, value) or value or ""
        if isinstance(field, Json):
            return "" if value is None else json.dumps(value, ensure_ascii=False)
        if isinstance(field, LongText):
            return value or ""
        return forms.cell(field, row)
    return format_export


KEPT = "_kept"  # suffix of the hidden input that carries a typed secret through a failed submit


def keep_token(collection, field, value):
    return crypto.encrypt(f"{collection.name}.{field.name}:{value}")


def kept_value(collection, field, token):
    """The secret typed on the previous try, from its hidden input; None if absent or not ours."""
    prefix = f"{collection.name}.{field.name}:"
    text = crypto.decrypt(token) if token else ""
    return text[len(prefix):] if text and text.startswith(prefix) else None


def filters_for(collection):
    model = collection.model
    result = []
    for name in collection.filters:
        field = collection.field.get(name)
        column = getattr(model, name)
        if field is None or isinstance(field, (Bool, DateTime)):
            result.append(column)  # Flask-Admin's own filters for the column's type
        elif isinstance(field, Relation):
            result.append(peewee_filters.FilterEqual(
                column, field.label, options=lambda field=field: relation_choices(field)))
        else:
            result.extend([peewee_filters.FilterEqual(column, field.label),
                           peewee_filters.FilterNotEqual(column, field.label)])
    return result


class CollectionView(LoginRequired, ModelView):
    form_base_class = FlaskForm  # CSRF tokens come from Flask-WTF's CSRFProtect
    named_filter_urls = True
    can_view_details = True
    can_set_page_size = True
    page_size = 20
    details_modal = False

    list_template = "promptproxy/list.html"
    create_template = "promptproxy/create.html"
    edit_template = "promptproxy/edit.html"

    def __init__(self, collection, **kwargs):
        self.collection = collection
        model = collection.model
        fields = collection.field
        self.column_list = list(collection.list)
        if collection.reference:
            self.column_list.insert(self.column_list.index("id") + 1 if "id" in collection.list else 1,
                                    "reference")
        self.column_details_list = ["id", *fields, "created", "updated"]
        self.column_labels = {column: f.label for f in collection.fields for column in f.columns()}
        self.column_labels.update(id="Id", created="Created", updated="Updated", reference="Reference")
        self.column_descriptions = {name: f.help for name, f in fields.items() if f.help}
        if collection.reference:
            self.column_descriptions["reference"] = REFERENCE_HELP.get(collection.name, "")
        self.column_searchable_list = [getattr(model, name) for name in collection.search]
        self.column_filters = filters_for(collection)
        self.column_sortable_list = [n for n in collection.list
                                     if n != "reference" and (n not in fields or fields[n].sortable)]
        descending = collection.sort.startswith("-")
        self.column_default_sort = (collection.sort.lstrip("-"), descending)
        self.column_formatters = {name: cell(field, listed=True) for name, field in fields.items()}
        self.column_formatters.update(created=cell(DateTime("created")), updated=cell(DateTime("updated")))
        self.column_formatters_detail = {**self.column_formatters,
                                         **{name: detail_cell(field) for name, field in fields.items()}}
        self.column_formatters.update(id=id_cell, reference=reference_cell(collection))
        # Every write goes through records.py: create_model, update_model, delete_model and
        # action_delete below. Flask-Admin's other write paths stay off: no inline
        # (ajax) editing, no inline models, no mass delete by query.
        self.can_create = self.can_edit = self.can_delete = not collection.readonly
        self.can_create = self.can_delete = self.can_create and not collection.recorded
        self.column_editable_list = None
        self.inline_models = None
        self.fast_mass_delete = False
        self.can_export = collection.readonly
        self.column_export_list = self.column_details_list
        self.column_formatters_export = {name: export_cell(field) for name, field in fields.items()}
        self.column_formatters_export.update(created=cell(DateTime("created")), updated=cell(DateTime("updated")))
        super().__init__(model, name=collection.label, endpoint=collection.name,
                         url=collection.name, **kwargs)

    # -- forms ---------------------------------------------------------------
    def _form_class(self, creating):
        attrs = {f.name: forms.form_field(f, creating) for f in self.collection.fields
                 if f.editable and (creating or not f.immutable)}
        attrs.update({f.name + KEPT: HiddenField() for f in self.collection.fields if isinstance(f, Secret)})
        return type(f"{self.collection.name.title()}Form", (self.form_base_class,), attrs)

    def scaffold_form(self):
        return self._form_class(creating=True)

    def get_edit_form(self):
        return self._form_class(creating=False)

    def form_groups(self, form):
        """The form's inputs in their declared groups, as (name, label, inputs, open):
        a group is open when one of its inputs holds a value or an error."""
        groups = []
        for name, label in FORM_GROUPS:
            fields = [f for f in self.collection.fields if f.group == name and f.name in form]
            inputs = [form[f.name] for f in fields]
            if inputs:
                opened = any(form[f.name].errors or holds_value(f, form[f.name].data) for f in fields)
                groups.append((name, label, inputs, opened))
        return groups

    def _with_choices(self, form):
        for field in self.collection.fields:
            if isinstance(field, Relation) and field.name in form:
                blank_choice = not field.required and not isinstance(field, Relations)
                choices = [("", "—")] * blank_choice + relation_choices(field)
                form[field.name].choices = [SelectChoice(value, label) for value, label in choices]
        return form

    def create_form(self, obj=None):
        return self._with_choices(super().create_form(obj))

    def edit_form(self, obj=None):
        return self._with_choices(super().edit_form(obj))

    def _secrets(self, form):
        return [f for f in self.collection.fields if isinstance(f, Secret) and f.name in form]

    def _form_data(self, form):
        """The form's data as JSON values, the way the REST API receives them, and
        the fields whose text could not be read as such (field name -> Invalid)."""
        data, refused = {}, {}
        for field in self.collection.fields:
            if field.name not in form:
                continue
            try:
                data[field.name] = forms.form_value(field, form[field.name].data)
            except Invalid as invalid:
                refused[field.name] = invalid
        for field in self._secrets(form):
            # Only what was typed: an edit form's data starts as the stored (encrypted) value.
            typed = (form[field.name].raw_data or [""])[0]
            data[field.name] = typed or kept_value(self.collection, field, form[field.name + KEPT].data)
        return data, refused

    def _save(self, form, row=None):
        data, refused = self._form_data(form)
        try:
            return records.save(self.collection, data, row=row, refused=refused, by=current_user.email,
                                note=self.version_note(form))
        except records.RecordInvalid as invalid:
            for name, error in invalid.errors.items():
                form[name].errors = list(form[name].errors or []) + [error.message]
            self._keep_secrets(form, data, invalid.errors)
            return None, None

    def version_note(self, form):
        """What a save says it changes, kept on the prompt version it makes (see admin/prompts.py)."""
        return None

    def _keep_secrets(self, form, data, errors):
        """Browsers never refill a password input, so a typed secret would be lost on a
        failed submit: carry it, encrypted, in a hidden input, and say so."""
        for field in self._secrets(form):
            value = data.get(field.name)
            if not value or field.name in errors:
                continue
            kept = form[field.name + KEPT]
            kept.data, kept.raw_data = (token := keep_token(self.collection, field, value)), [token]
            form[field.name].description = ("The key you typed is kept (not shown): leave this blank "
                                            "to save it, or type another.")

    def create_model(self, form):
        row, revealed = self._save(form)
        if row is None:
            return False
        if revealed:
            reveal_once(self.collection, row, revealed)
        self.after_model_change(form, row, True)
        flash(self._named("Created", row), "success")
        return row

    def update_model(self, form, model):
        row, _ = self._save(form, model)
        if row is None:
            return False
        self.after_model_change(form, row, False)
        flash(self._named("Saved", row), "success")
        return True

    def delete_model(self, model):
        if not self._delete(model):
            return False
        flash(self._named("Deleted", model), "success")
        return True

    def _named(self, done, row):
        """"Created user Tom": what was done to which record."""
        return f"{done} {self.collection.singular} {self.collection.title(row)}"

    def _delete(self, row):
        """Delete through records.delete; a refusal is flashed, linking to what still uses the record."""
        try:
            records.delete(self.collection, row)
        except records.RecordInUse as refused:
            flash(in_use_message(refused), "error")
            return False
        except records.RecordReadOnly as refused:
            flash(str(refused), "error")
            return False
        return True

    @expose("/new/", methods=("GET", "POST"))
    def create_view(self):
        return without_generic_messages(super().create_view())

    @expose("/edit/", methods=("GET", "POST"))
    def edit_view(self):
        return without_generic_messages(super().edit_view())

    @expose("/delete/", methods=("POST",))
    def delete_view(self):
        return without_generic_messages(super().delete_view())

    @action("delete", "Delete", "Are you sure you want to delete selected records?")
    def action_delete(self, ids):
        """"With selected → Delete": each record through records.delete, as the delete
        button does, so refusals are reported and the proxy hears of each change."""
        model = self.model
        deleted = [self.collection.title(row) for row in model.select().where(model.id.in_(ids))
                   if self._delete(row)]
        if deleted:
            what = self.collection.singular if len(deleted) == 1 else self.collection.name
            flash(f"Deleted {what} {', '.join(deleted)}", "success")

    def get_export_value(self, model, name):
        return defuse_formula(super().get_export_value(model, name))

    def search_placeholder(self):
        labels = [self.column_labels.get(name, name).lower() for name in self.collection.search]
        return "Search " + ", ".join(labels)
