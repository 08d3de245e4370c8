"""A prompt's page: its versions (who saved each, when, with what note, and the
labels on them), a diff between any two, buttons that move labels (promote,
roll back) through records.py, and its versions side by side
(accounting/comparison.py). Its form takes a note, kept on the version a save
makes."""

import difflib
import json

from flask import flash, redirect, request, url_for
from flask_admin import expose
from wtforms.fields import StringField
from wtforms.validators import Length

from ..accounting.comparison import compare_versions
from ..collections import BY_NAME
from ..data import records, versions
from .views import CollectionView

NOTE_LENGTH = 500
LABEL_LENGTH = 40  # as data/fields/json.py's LABEL allows

def content_lines(version, part):
    """One part of a version's content as the lines a diff compares."""
    value = getattr(version, part)
    if part == "instructions":
        return (value or "").splitlines()
    if part == "tools":
        return json.dumps(value, indent=2, ensure_ascii=False).splitlines() if value else []
    return ["yes" if value else "no"]


def version_diff(old, new):
    """What changed from version `old` to version `new`: a unified diff of each part
    that differs, as (kind, text) lines, kind being "head", "hunk", "del", "add" or
    "same". Plain text: the page escapes every line, whatever a prompt holds."""
    lines = []
    for part in versions.CONTENT:
        label = BY_NAME["prompt_versions"].field[part].label
        diff = difflib.unified_diff(content_lines(old, part), content_lines(new, part),
                                    f"version {old.version}: {label}", f"version {new.version}: {label}",
                                    lineterm="")
        for number, line in enumerate(diff):
            kind = ("head" if number < 2 else "hunk" if line.startswith("@")
                    else {"-": "del", "+": "add"}.get(line[:1], "same"))
            lines.append((kind, line))
    return lines


def label_holders(history):
    """{label: version number} of a prompt's versions, `production` first."""
    held = {label: version.version for version in history for label in version.labels or []}
    return dict(sorted(held.items(), key=lambda item: (item[0] != versions.PRODUCTION, item[0])))


def in_production(history):
    """The version labelled production, or None."""
    return next((version for version in history if versions.PRODUCTION in (version.labels or [])), None)


def served(history):
    """What a call to `model:prompt` that pins nothing is served, as the proxy chooses
    it (promptproxy/prompting.py), in words for the page."""
    weighted = [version for version in history if version.weight]
    if weighted:
        shares = ", ".join(f"version {version.version} (weight {version.weight})" for version in weighted)
        return f"split by weight between {shares}"
    production = in_production(history)
    if production is not None:
        return f"version {production.version}, labelled production"
    return f"version {history[-1].version}, the latest (no version is labelled production)"


def rollback_targets(prompt_id, labels):
    """{label: the version number rolling it back would move it to, or None}."""
    targets = {}
    for label in labels:
        try:
            targets[label] = versions.rollback_target(prompt_id, label).version
        except versions.NoEarlierVersion:
            targets[label] = None
    return targets


def picked(history, name, default):
    """The version the diff's `name` argument picks (a version number), else `default`."""
    by_number = {str(version.version): version for version in history}
    return by_number.get(request.args.get(name, "").strip(), default)


def posted_label():
    """The label a button's form names (production when it names none), or None
    once the admin was told it is too long to be one. records.py checks the rest;
    a long one is refused here, as its message would quote all of it."""
    label = (request.form.get("label") or versions.PRODUCTION).strip()
    if len(label) > LABEL_LENGTH:
        flash(f"Could not set the label: a label is a word of at most {LABEL_LENGTH} characters.", "error")
        return None
    return label


class PromptView(CollectionView):
    details_template = "promptproxy/prompt_details.html"

    # -- the form's note ----------------------------------------------------------
    def _form_class(self, creating):
        form = super()._form_class(creating)
        note = StringField("Note", validators=[Length(max=NOTE_LENGTH)], description=(
            "What this save changes, kept on the version it makes (when it changes the instructions, tools "
            "or system-message handling)."))
        return type(form.__name__, (form,), {"note": note})

    def form_groups(self, form):
        """The note goes right under the instructions, whose change it describes."""
        groups = []
        for name, label, inputs, opened in super().form_groups(form):
            if name == "basics":
                at = next((i + 1 for i, field in enumerate(inputs) if field.name == "instructions"), len(inputs))
                inputs = [*inputs[:at], form["note"], *inputs[at:]]
            groups.append((name, label, inputs, opened))
        return groups

    def version_note(self, form):
        note = (form["note"].data or "").strip()
        return note or None

    # -- the page ------------------------------------------------------------------
    @expose("/details/")
    def details_view(self):
        prompt = self.get_one(request.args.get("id", ""))
        history = versions.of_prompt(prompt.id) if prompt is not None else []
        if history:
            labels = label_holders(history)
            rollbackable = [versions.PRODUCTION, *(label for label in labels if label != versions.PRODUCTION)]
            # By default, what the latest version changes from what calls are served (or from the one before).
            serving, newer = in_production(history) or history[-1], picked(history, "new", history[-1])
            before = [version for version in history if version.version < newer.version]
            older = picked(history, "old", serving if serving is not newer else (before or [newer])[-1])
            self._template_args.update(
                history=history[::-1], labels=labels, served=served(history),
                rollback=rollback_targets(prompt.id, rollbackable),
                older=older, newer=newer, diff=version_diff(older, newer),
                comparison=compare_versions(prompt.id), production=versions.PRODUCTION)
        else:
            self._template_args.update(history=[])
        return super().details_view()

    # -- moving labels: records.promote and records.rollback ----------------------------
    def _back_to(self, prompt_id):
        return redirect(url_for(".details_view", id=prompt_id, _anchor="versions"))

    @expose("/promote/", methods=("POST",))
    def promote_view(self):
        """Put a label (production unless another is typed) on one version."""
        model = BY_NAME["prompt_versions"].model
        version = model.get_or_none(model.id == request.form.get("version", ""))
        if version is None:
            flash("That version no longer exists.", "error")
            return redirect(url_for(".index_view"))
        label = posted_label()
        if label is None:
            return self._back_to(version.prompt)
        before = next((v.version for v in versions.of_prompt(version.prompt)
                       if label in (v.labels or [])), None)
        try:
            records.promote(version, label)
        except records.RecordInvalid as invalid:
            flash(f"Could not set the label: {invalid.errors['labels'].message}", "error")
            return self._back_to(version.prompt)
        where = f"version {version.version} of {self._prompt_title(version.prompt)}"
        if before == version.version:
            flash(f"The label {label} was already on {where}.", "info")
        elif before is None:
            flash(f"The label {label} is now on {where}.", "success")
        else:
            flash(f"The label {label} moved from version {before} to {where}.", "success")
        return self._back_to(version.prompt)

    @expose("/rollback/", methods=("POST",))
    def rollback_view(self):
        """Move a label (production unless another is named) back to the version
        that carried it before."""
        prompt = self.get_one(request.form.get("id", ""))
        if prompt is None:
            flash("That prompt no longer exists.", "error")
            return redirect(url_for(".index_view"))
        label = posted_label()
        if label is None:
            return self._back_to(prompt.id)
        history = versions.of_prompt(prompt.id)
        before = next((v.version for v in history if label in (v.labels or [])), None)
        try:
            target = records.rollback(prompt, label)
        except versions.NoEarlierVersion as refused:
            flash(f"Could not roll back: {refused}", "error")
            return self._back_to(prompt.id)
        except records.RecordInvalid as invalid:
            flash(f"Could not roll back: {invalid.errors['labels'].message}", "error")
            return self._back_to(prompt.id)
        was = f"version {before}" if before is not None else f"the latest version ({history[-1].version})"
        flash(f"Rolled back the label {label} of {self.collection.title(prompt)} from {was} "
              f"to version {target.version}.", "success")
        return self._back_to(prompt.id)

    def _prompt_title(self, prompt_id):
        return self.collection.title(self.get_one(prompt_id))
