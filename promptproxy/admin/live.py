"""The live log: calls as they finish, pushed to the admin's browser as server-sent events.

Every worker's recorder writes its request rows into data.db, so the one place that
sees the calls of all workers is the `requests` table. Each stream follows it by
rowid (the order rows were inserted, whichever process wrote them; `created` is when
a call started, so a long call would land behind the cursor). A stream keeps its own
read-only connection: in WAL mode a read never waits for a writer, and each poll is
one small indexed query, so the event loop is never held for long.
"""

import json
import sqlite3
import time

from flask import Response, request, url_for
from flask_admin import BaseView, expose

from ..collections import BY_NAME
from ..data.db import db
from ..serving import is_stopping
from .views import LoginRequired

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15
BATCH = 200  # rows per poll at most; the rest come on the next one
RETRY_MS = 2000  # how soon a browser reconnects after the stream drops

# A record's name as its collection titles it (see Collection.title), the id when
# it has none or was deleted.
ROWS = """
SELECT r.rowid, r.id, r.created, r.endpoint, r.stream, r.status, r.error,
       r.total_tokens, r.latency_ms, r.user, r.model,
       COALESCE(NULLIF(u.name, ''), NULLIF(u.email, ''), r.user, '') AS user_name,
       COALESCE(NULLIF(m.name, ''), NULLIF(m.model, ''), r.model, '') AS model_name,
       COALESCE(NULLIF(p.name, ''), r.prompt, '') AS prompt_name
FROM requests AS r
LEFT JOIN users AS u ON u.id = r.user
LEFT JOIN models AS m ON m.id = r.model
LEFT JOIN prompts AS p ON p.id = r.prompt
WHERE r.rowid > ? {filters}
ORDER BY r.rowid
LIMIT ?
"""


def open_reader():
    """A read-only connection to data.db of its own, for one stream."""
    path = db.obj.database
    # timeout=0: a read that finds the file busy gives up at once and is tried on the next poll.
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0, check_same_thread=False,
                           isolation_level=None)


def last_rowid(reader):
    return reader.execute("SELECT COALESCE(MAX(rowid), 0) FROM requests").fetchone()[0]


def new_calls(reader, after, user=None, model=None):
    """The calls recorded after rowid `after`, oldest first, as the page shows them."""
    filters, params = "", [after]
    if user:
        filters += " AND r.user = ?"
        params.append(user)
    if model:
        filters += " AND r.model = ?"
        params.append(model)
    rows = reader.execute(ROWS.format(filters=filters), [*params, BATCH]).fetchall()
    return [(row[0], {
        "id": row[1], "time": str(row[2] or ""), "endpoint": row[3] or "", "stream": bool(row[4]),
        "status": row[5], "error": (row[6] or "")[:200], "tokens": row[7], "latency_ms": row[8],
        "user": row[11], "model": row[12], "prompt": row[13],
    }) for row in rows]


def event_stream(reader, after, user, model, details_url):
    """SSE text: one `call` event per new row, a comment now and then to keep the
    connection open. A client that went away is noticed at the next write, when the
    server ends this generator; the connection is closed then. It ends by itself
    when the server begins to stop."""
    try:
        yield f"retry: {RETRY_MS}\n: following the calls\n\n"
        quiet_since = time.monotonic()
        while not is_stopping():  # a browser reconnects to the next server by itself
            try:
                calls = new_calls(reader, after, user, model)
            except sqlite3.OperationalError:  # busy for a moment: the next poll reads it
                calls = []
            for rowid, call in calls:
                after = rowid
                call["url"] = details_url.replace("__id__", call["id"])
                yield f"id: {rowid}\nevent: call\ndata: {json.dumps(call)}\n\n"
            if calls:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            time.sleep(POLL_SECONDS)
    finally:
        reader.close()


def choices(collection):
    """(id, name) of every record of `collection`, by name, for the filter dropdowns."""
    target = BY_NAME[collection]
    rows = [(row.id, target.title(row)) for row in target.model.select()]
    return sorted(rows, key=lambda pair: pair[1].lower())


class LiveView(LoginRequired, BaseView):
    @expose("/")
    def index(self):
        return self.render("promptproxy/live.html", users=choices("users"), models=choices("models"))

    @expose("/events")
    def events(self):
        reader = open_reader()
        try:
            start = request.headers.get("Last-Event-ID", "")
            after = int(start) if start.isdigit() else last_rowid(reader)  # only calls from now on
        except Exception:
            reader.close()
            raise
        stream = event_stream(reader, after, request.args.get("user") or None,
                              request.args.get("model") or None,
                              url_for("requests.details_view", id="__id__"))
        response = Response(stream, mimetype="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.call_on_close(reader.close)  # also when the stream never started
        return response
