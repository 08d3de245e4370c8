"""Prompt versions, as records.py keeps them: each runs inside the transaction of
the save (or delete) it belongs to, so a version and the save that made it, or a
label and the move that took it off another version, commit together.

A prompt's versions are numbered 1, 2, 3… in the order they were saved. A save
records one only when the content (instructions, tools, system-message handling)
differs from the latest version's, so saving a prompt's name or description
alone makes none. A label is on one version of a prompt at most: putting it on one
takes it off the others. Each version notes when each label was last put on it
(`promoted`), which is what rolling a label back follows.
"""

from ..collections import BY_NAME
from .fields import utcnow

CONTENT = ("instructions", "tools", "replace_system")
PRODUCTION = "production"


class NoEarlierVersion(Exception):
    """A roll back with nowhere to go: the label is on the prompt's first version."""


def versions_model():
    return BY_NAME["prompt_versions"].model


def content(row):
    """What a version keeps of a prompt (or another version), comparable with `==`."""
    return {"instructions": row.instructions, "tools": row.tools or None, "replace_system": bool(row.replace_system)}


def lock_prompt(prompt_id):
    """Take the prompt's row lock for the rest of the transaction (PostgreSQL; with
    SQLite the transaction holds the database's write lock from its first write), so
    that two saves never number a version alike nor both keep a label."""
    prompts = BY_NAME["prompts"].model
    prompts.update(id=prompts.id).where(prompts.id == prompt_id).execute()


def of_prompt(prompt_id):
    """The prompt's versions, oldest first."""
    model = versions_model()
    return list(model.select().where(model.prompt == prompt_id).order_by(model.version))


def record(prompt, by=None, note=None):
    """A new version of `prompt` when its content differs from its latest version's
    (or it has none yet); None when it does not. Run after the prompt's row was
    written in this transaction, which holds its lock."""
    model = versions_model()
    latest = model.select().where(model.prompt == prompt.id).order_by(model.version.desc()).first()
    if latest is not None and content(latest) == content(prompt):
        return None
    return model.create(prompt=prompt.id, version=(latest.version if latest else 0) + 1, **content(prompt),
                        note=note or None, saved_by=by or None, labels=[], promoted={}, created=utcnow(),
                        updated=utcnow())


def note_labels(version, before):
    """Before a version is written with its new labels: note when each label that was
    not on it (`before`) was put on it."""
    added = [label for label in version.labels or [] if label not in (before or [])]
    if added:
        now = utcnow().isoformat()
        version.promoted = {**(version.promoted or {}), **dict.fromkeys(added, now)}


def labelled_since(version, label, since):
    """Set when `label` was put on `version` (None: never before), and return it."""
    promoted = {name: when for name, when in (version.promoted or {}).items() if name != label}
    version.promoted = {**promoted, label: since} if since else promoted
    version.save()
    return version


def take_labels_off_others(version):
    """After a version was written: its labels leave every other version of its prompt."""
    labels = set(version.labels or [])
    if not labels:
        return
    for other in of_prompt(version.prompt):
        if other.id != version.id and labels & set(other.labels or []):
            other.labels = [label for label in other.labels if label not in labels]
            other.updated = utcnow()
            other.save()


def rollback_target(prompt_id, label=PRODUCTION):
    """The version `label` goes back to: the one that carried it before the version
    it is on now; when it was on no earlier one, the version numbered just below.
    A label on no version stands for the latest (as `production` does for calls),
    so it goes to the version before the latest."""
    versions = of_prompt(prompt_id)
    holder = next((v for v in versions if label in (v.labels or [])), None) or (versions[-1] if versions else None)
    if holder is None:
        raise NoEarlierVersion("This prompt has no versions.")

    def labelled(version):  # when `label` was last put on `version`, or None
        return (version.promoted or {}).get(label)

    since = labelled(holder)
    earlier = [v for v in versions if v.id != holder.id and since and labelled(v) and labelled(v) < since]
    if earlier:
        return max(earlier, key=labelled)
    below = [v for v in versions if v.version < holder.version]
    if not below:
        raise NoEarlierVersion(f"The label {label!r} is on version {holder.version}, the first one: "
                               "there is no earlier version to roll back to.")
    return below[-1]
