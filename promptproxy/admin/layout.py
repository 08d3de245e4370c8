"""The admin's frame: a sidebar built from Flask-Admin's own menu, so a view added
with `admin.add_view` shows up in it without template edits, with each
collection's record count; and which list columns stay on a phone's screen."""

from flask import g
from markupsafe import Markup

from ..data.fields import DateTime

COUNT_CAP = 10_000  # past this a count shows as "10,000+"
KEY_COLUMNS = 3  # list columns kept on narrow screens; the others fold away


def record_count(collection):
    """How many records a collection holds, counted no further than COUNT_CAP + 1.
    SQLite counts by walking a table, and the requests table can hold millions of
    rows: every page shows these counts, so each costs at most a bounded index scan.
    Counted once per request (the sidebar and the dashboard share them)."""
    counts = g.setdefault("_record_counts", {})
    if collection.name not in counts:
        model = collection.model
        counts[collection.name] = model.select(model.id).limit(COUNT_CAP + 1).count()
    return counts[collection.name]


def count_text(count):
    return f"{COUNT_CAP:,}+" if count > COUNT_CAP else f"{count:,}"


def sidebar(admin_view):
    """The sidebar's sections, in the menu's order: [(heading, [entry, ...])], each
    entry a dict of name, url, active and count (text, collections only). The views
    before the first collection (the dashboard) come first, then the collections,
    then every view registered after them; a Flask-Admin category is a section."""
    top, collections, tools, categories = [], [], [], []
    for item in admin_view.admin.menu():
        if item.is_category():
            entries = [_entry(child, admin_view) for child in item.get_children()
                       if child.is_accessible() and child.is_visible()]
            if entries:
                categories.append((item.name, entries))
            continue
        if not (item.is_accessible() and item.is_visible()):
            continue
        entry = _entry(item, admin_view)
        if entry["count"] is not None:
            collections.append(entry)
        else:
            (tools if collections else top).append(entry)
    sections = [(None, top), ("Collections", collections), (None, tools), *categories]
    return [(heading, entries) for heading, entries in sections if entries]


def _entry(item, admin_view):
    collection = getattr(getattr(item, "_view", None), "collection", None)  # a MenuView's view
    return {"name": item.name, "url": item.get_url(), "active": item.is_active(admin_view),
            "count": count_text(record_count(collection)) if collection is not None else None}


def list_styles(admin_view):
    """CSS for a collection's list: dates on one line, and below 576 px only the
    first KEY_COLUMNS columns (Flask-Admin marks each cell with class col-<name>)."""
    collection = getattr(admin_view, "collection", None)
    if collection is None:
        return ""
    dates = [name for name in collection.list
             if name in ("created", "updated") or isinstance(collection.field.get(name), DateTime)]
    secondary = collection.list[KEY_COLUMNS:]
    rules = []
    if dates:
        rules.append(", ".join(f".model-list .col-{name}" for name in dates) + " { white-space: nowrap; }")
    if secondary:
        hidden = ", ".join(f".model-list .col-{name}" for name in secondary)
        rules.append(f"@media (max-width: 575.98px) {{ {hidden} {{ display: none; }} }}")
    return Markup("\n".join(rules))
