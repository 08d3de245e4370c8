"""Creating, updating and deleting records with a collection's rules.

The admin forms, its bulk actions, the REST API and the CLI all come through
here with JSON values (the admin turns its form text into them first), so they
accept and refuse exactly the same things with the same messages,
and every write tells the proxy through the change counter. Each save or delete
is one transaction on data.db's writer thread (`db.write`): the checks and the
write see the same data, and no request greenlet waits on a database lock.
"""

from ..collections import BY_NAME, dependents
from . import versions
from .db import bump_version, write
from .fields import KEEP, Invalid, blank, storable_problem, utcnow


class RecordInvalid(Exception):
    """Some fields were refused: `errors` maps field name -> Invalid."""

    def __init__(self, errors):
        super().__init__("; ".join(f"{name}: {e.message}" for name, e in errors.items()))
        self.errors = errors


class RecordInUse(Exception):
    """A delete refused because other records still point at this one.

    `dependents` lists them per collection as (collection, [(id, title), ...], more):
    the first few records, and how many more there are, for pages that link to
    them; the message itself is plain text."""

    def __init__(self, collection, row, dependents):
        self.collection, self.row, self.dependents = collection, row, dependents
        used_by = "; ".join(f"{other.name} ({', '.join(title for _, title in shown)}{more_text(more)})"
                            for other, shown, more in dependents)
        super().__init__(f"Cannot delete {collection.singular} {collection.title(row)}: "
                         f"still used by {used_by}. Delete or change those first.")


def more_text(more):
    """The tail of a list cut short: ", and 3 more"."""
    return f", and {more} more" if more else ""


class RecordReadOnly(Exception):
    """A write refused because the collection's rows are written by PromptProxy only
    (or, for recorded collections, created and deleted by it only)."""

    def __init__(self, collection):
        if collection.recorded:
            super().__init__(f"Records of {collection.name} are created and deleted by PromptProxy only; "
                             "only their editable fields can be changed.")
        else:
            super().__init__(f"Records of {collection.name} are written by PromptProxy only.")


def writable(collection, creating_or_deleting=True):
    if collection.readonly or (collection.recorded and creating_or_deleting):
        raise RecordReadOnly(collection)


def save(collection, data, row=None, refused=None, by=None, note=None):
    """Validate `data` (field name -> JSON value) and create (row=None) or update `row`.

    Returns (row, revealed): `revealed` holds values to show once and never again,
    such as a newly generated gateway key. Only fields present in `data` change on
    update; on create, absent fields take their defaults. `refused` (field name ->
    Invalid) holds fields the caller could not even read (the admin's JSON text
    that does not parse): they are reported with every other field's errors, and
    nothing is written.

    A save that changes a prompt's content records a new version of it in the same
    transaction (see data/versions.py), saved by `by` (an admin's email) with `note`.
    """
    writable(collection, creating_or_deleting=row is None)
    refused = dict(refused or {})
    if note is not None and (problem := storable_problem(note)):
        refused["note"] = problem  # reported with the fields' errors, as the note is typed beside them
    return write(_save, collection, data, row, refused, by, note)


def _save(collection, data, row, errors, by=None, note=None):
    creating = row is None
    values = {}
    for field in collection.fields:
        if not field.editable and not creating and field.name in data \
                and data[field.name] != field.to_json(getattr(row, field.name)):
            errors[field.name] = Invalid("validation_read_only", "Set by PromptProxy; cannot be changed.")
        if not field.editable or (field.immutable and not creating) or field.name in errors:
            continue
        if field.name in data:
            try:
                problem = storable_problem(data[field.name])
                if problem:
                    raise problem
                value = field.clean(data[field.name])
            except Invalid as exc:
                errors[field.name] = exc
                continue
            if value is None and field.default is not None:
                value = field.initial()  # blank means "the default", as the form showed
        elif creating:
            value = field.clean(None) if field.secret else field.initial()
        else:
            continue
        values[field.name] = value

    current = (lambda name: getattr(row, name)) if row is not None else (lambda name: None)
    for field in collection.fields:
        if field.name in errors or not field.required:
            continue
        value = values.get(field.name, KEEP if not creating else None)
        if (value is KEEP and blank(current(field.name))) or (value is not KEEP and blank(value)):
            errors[field.name] = Invalid("validation_required", "Cannot be blank.")

    for name, value in values.items():
        field = collection.field[name]
        if name in errors or value is KEEP or blank(value):
            continue
        if getattr(field, "target", None):
            target = BY_NAME[field.target].model
            wanted = field.ids(value)
            found = {row.id for row in target.select(target.id).where(target.id.in_(wanted))}
            missing = [record_id for record_id in wanted if record_id not in found]
            if missing:
                errors[name] = Invalid("validation_missing_rel_records",
                                       f"No {field.target} record with id {missing[0]!r}.")
        elif field.unique:
            model = collection.model
            query = model.select().where(getattr(model, name) == field.store(value)[name])
            if row is not None:
                query = query.where(model.id != row.id)
            if query.exists():
                errors[name] = Invalid("validation_not_unique", taken(collection, field, value))
    if errors:
        raise RecordInvalid(errors)

    revealed = {}
    row = row if row is not None else collection.model()
    if collection.name == "prompt_versions":  # its labels may move: one save of the prompt's at a time
        versions.lock_prompt(row.prompt)
        labels_before = row.labels
    for name, value in values.items():
        if value is KEEP:
            continue
        field = collection.field[name]
        for column, stored in field.store(value).items():
            setattr(row, column, stored)
        if field.reveal_once and creating:
            revealed[name] = value
    row.updated = utcnow()
    if collection.name == "prompt_versions":
        versions.note_labels(row, labels_before)
    row.save(force_insert=creating)
    if collection.name == "prompts":
        versions.record(row, by, note)
    elif collection.name == "prompt_versions":
        versions.take_labels_off_others(row)
    if not collection.readonly:  # what the proxy's catalog holds (request rows and feedback are not)
        bump_version()
    return row, revealed


def taken(collection, field, value):
    """"A user with the email tom@example.com already exists." Secrets are never repeated."""
    what, record = field.label.lower(), collection.singular
    a_record = ("An " if record[0] in "aeio" else "A ") + record  # "a user", "an api"
    if field.secret or field.reveal_once:
        return f"{a_record} with this {what} already exists."
    return f"{a_record} with the {what} {value} already exists."


SHOWN_DEPENDENTS = 5  # per collection, in a refused delete's message


def delete(collection, row):
    """Delete `row`, unless records that must not lose it still point at it."""
    writable(collection)
    write(_delete, collection, row)


def _delete(collection, row):
    blockers, cascades = [], []
    for other, field in dependents(collection):
        if field.on_delete == "cascade":
            cascades.append((other, field))
        if field.on_delete != "restrict":
            continue
        model = other.model
        users = model.select().where(field.refers_to(model, row.id)).order_by(model.created)
        shown = [(user.id, other.title(user)) for user in users.limit(SHOWN_DEPENDENTS)]
        if shown:
            more = users.count() - len(shown) if len(shown) == SHOWN_DEPENDENTS else 0
            blockers.append((other, shown, more))
    if blockers:
        raise RecordInUse(collection, row, blockers)
    for other, field in cascades:
        other.model.delete().where(field.refers_to(other.model, row.id)).execute()
    row.delete_instance()
    bump_version()


# -- prompt versions: labels moved as one transaction -------------------------------

def promote(version, label=versions.PRODUCTION):
    """Put `label` on `version` (a prompt_versions row), taking it off the prompt's
    other versions, in one transaction. Returns the version as saved. With the
    default label, the next call to `model:prompt` that pins no version serves it
    (unless the prompt's versions have weights)."""
    return write(_promote, version.id, label)


def _promote(version_id, label):
    collection = BY_NAME["prompt_versions"]
    fresh = collection.model.get_by_id(version_id)  # labels as committed, not as the caller last read them
    if label in (fresh.labels or []):
        return fresh
    return _save(collection, {"labels": [*(fresh.labels or []), label]}, fresh, {})[0]


def rollback(prompt, label=versions.PRODUCTION):
    """Move `label` back to the version of `prompt` that carried it before (see
    versions.rollback_target), in one transaction; returns that version. Raises
    versions.NoEarlierVersion when there is none. That version keeps the time it
    was given the label before, so rolling back again goes further back."""
    def move():
        versions.lock_prompt(prompt.id)
        target = versions.rollback_target(prompt.id, label)
        since = (target.promoted or {}).get(label)
        return versions.labelled_since(_promote(target.id, label), label, since)
    return write(move)


# -- feedback: written by PromptProxy for the caller of a call ------------------------

def save_feedback(request_id, key_id, score, comment=None):
    """Store a caller's feedback on one of its request rows (checked by the caller:
    the row is its key's), replacing feedback given on it before. Raises
    RecordInvalid for a score out of 0..1 or a comment that cannot be stored."""
    collection = BY_NAME["feedback"]

    def upsert():
        model = collection.model
        row = model.get_or_none(model.request == request_id)
        data = {"request": request_id, "key": key_id, "score": score, "comment": comment}
        return _save(collection, data, row, {})[0]
    return write(upsert)
