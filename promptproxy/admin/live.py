"""The live log: calls as they finish, pushed to the admin's browser as server-sent events.

Every worker's recorder writes its request rows into the database, so the one
place that sees the calls of all workers and instances is the `requests` table.
`created` is when a call started, so a long call's row lands with an old time:
a stream follows the order rows were committed in, never their times.

SQLite (`RowidLog`): by rowid. One process writes at a time, so rowids grow in
commit order. A stream keeps its own read-only connection: in WAL mode a read
never waits for a writer, and each poll is one small indexed query.

PostgreSQL (`TransactionLog`): there is no rowid, and no insertion counter tells
commit order: a sequence number is taken at insert time, and a batch that took
the smaller numbers may commit after one that took larger ones (several workers
and instances write at once), so a poller reading `seq > last` would skip it for
good. Each row records instead the id of the transaction that inserted it (the
`txid` column, migration `live_log_order`), and a poll reads only rows of
transactions older than its snapshot's horizon, `pg_snapshot_xmin`: every
transaction below it has ended, so its rows are all visible to this very query,
or never will be. The cursor (txid, id) then moves over settled ground only: no
row is missed, none comes twice, whatever the order of commits, with no lock and
no change to how rows are written. A transaction that stays open holds the
horizon back, delaying (not losing) the rows of later ones; the recorder's
batches last milliseconds. Polls borrow a pooled connection for one query and
hand it back (psycopg yields to other greenlets while it waits); between polls a
stream holds none. LISTEN/NOTIFY would need the same cursor anyway, to catch up
after a reconnection, so polling stays the one mechanism.
"""

import json
import re
import sqlite3
import time

from flask import Response, request, url_for
from flask_admin import BaseView, expose

from ..collections import BY_NAME
from ..data.db import UNREACHABLE, connection, db, is_postgresql
from ..serving import is_stopping
from .views import LoginRequired

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15
BATCH = 200  # rows per poll at most; the rest come on the next one
RETRY_MS = 2000  # how soon a browser reconnects after the stream drops

# A record's name as its collection titles it (see Collection.title), the id when
# it has none or was deleted. Each log fills in its own {cursor} columns, where the
# rows {after} the cursor start, their {order} and its driver's {param} marker.
ROWS = """
SELECT {cursor}, r.id, r.created, r.endpoint, r.stream, r.status, r.error,
       r.total_tokens, r.latency_ms,
       COALESCE(NULLIF(u.name, ''), NULLIF(u.email, ''), r."user", '') AS user_name,
       COALESCE(NULLIF(m.name, ''), NULLIF(m.model, ''), r.model, '') AS model_name,
       COALESCE(NULLIF(p.name, ''), r.prompt, '') AS prompt_name
FROM requests AS r
LEFT JOIN users AS u ON u.id = r."user"
LEFT JOIN models AS m ON m.id = r.model
LEFT JOIN prompts AS p ON p.id = r.prompt
WHERE {after} {filters}
ORDER BY {order}
LIMIT {param}
"""


class RowidLog:
    """SQLite: rows after a rowid, on a read-only connection of the stream's own."""

    param = "?"
    busy = (sqlite3.OperationalError,)  # busy for a moment: the next poll reads it
    rows = ROWS.format(cursor="r.rowid", after="r.rowid > ?", order="r.rowid", param="?", filters="{filters}")

    def __init__(self):
        path = db.obj.database
        # timeout=0: a read that finds the file busy gives up at once and is tried on the next poll.
        self.reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0, check_same_thread=False,
                                      isolation_level=None)

    def start(self, last_event_id):
        """Where a stream starts: after the browser's last event, or from now on."""
        if last_event_id.isdigit():
            return int(last_event_id)
        return self.reader.execute("SELECT COALESCE(MAX(rowid), 0) FROM requests").fetchone()[0]

    def read(self, after, filters, params):
        """[(cursor, event id, columns)] of the rows after `after`."""
        rows = self.reader.execute(self.rows.format(filters=filters), [after, *params, BATCH]).fetchall()
        return [(row[0], str(row[0]), row[1:]) for row in rows]

    def close(self):
        self.reader.close()


class TransactionLog:
    """PostgreSQL: rows after (txid, id), of transactions that have all ended."""

    param = "%s"
    busy = UNREACHABLE  # the server is down or restarting: the next poll tries again
    rows = ROWS.format(
        cursor="r.txid::text", param="%s", filters="{filters}", order="r.txid, r.id",
        after="(r.txid, r.id) > (%s::xid8, %s) AND r.txid < pg_snapshot_xmin(pg_current_snapshot())")
    event_id = re.compile(r"(\d+)-([0-9a-z]+)")

    def start(self, last_event_id):
        """Where a stream starts: after the browser's last event, or else after every
        transaction older than the horizon (rows still being committed are shown)."""
        resumed = self.event_id.fullmatch(last_event_id)
        if resumed:
            return resumed.group(1), resumed.group(2)
        with connection():
            horizon = db.execute_sql("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()[0]
        return horizon, ""

    def read(self, after, filters, params):
        """[(cursor, event id, columns)] of the rows after `after`."""
        with connection():
            rows = db.execute_sql(self.rows.format(filters=filters), [*after, *params, BATCH]).fetchall()
        return [((row[0], row[1]), f"{row[0]}-{row[1]}", row[1:]) for row in rows]

    def close(self):
        pass  # polls hand their connection back at once


def new_calls(log, after, user=None, model=None):
    """The calls recorded after `after`, in commit order, as the page shows them:
    [(cursor, event id, call)]."""
    filters, params = "", []
    if user:
        filters += f' AND r."user" = {log.param}'
        params.append(user)
    if model:
        filters += f" AND r.model = {log.param}"
        params.append(model)
    return [(cursor, event_id, {
        "id": row[0], "time": str(row[1] or ""), "endpoint": row[2] or "", "stream": bool(row[3]),
        "status": row[4], "error": (row[5] or "")[:200], "tokens": row[6], "latency_ms": row[7],
        "user": row[8], "model": row[9], "prompt": row[10],
    }) for cursor, event_id, row in log.read(after, filters, params)]


def event_stream(log, after, user, model, details_url):
    """SSE text: one `call` event per new row, a comment now and then to keep the
    connection open. A client that went away is noticed at the next write, when the
    server ends this generator; the connection is closed then. It ends by itself
    when the server begins to stop."""
    try:
        yield f"retry: {RETRY_MS}\n: following the calls\n\n"
        quiet_since = time.monotonic()
        while not is_stopping():  # a browser reconnects to the next server by itself
            try:
                calls = new_calls(log, after, user, model)
            except log.busy:
                calls = []
            for cursor, event_id, call in calls:
                after = cursor
                call["url"] = details_url.replace("__id__", call["id"])
                yield f"id: {event_id}\nevent: call\ndata: {json.dumps(call)}\n\n"
            if calls:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            time.sleep(POLL_SECONDS)
    finally:
        log.close()


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
        log = TransactionLog() if is_postgresql() else RowidLog()
        try:
            after = log.start(request.headers.get("Last-Event-ID", ""))
        except Exception:
            log.close()
            raise
        stream = event_stream(log, after, request.args.get("user") or None,
                              request.args.get("model") or None,
                              url_for("requests.details_view", id="__id__"))
        response = Response(stream, mimetype="text/event-stream",
                            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.call_on_close(log.close)  # also when the stream never started
        return response
