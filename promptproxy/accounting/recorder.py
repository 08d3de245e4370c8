"""Writes request rows in batches, on the database's writer thread.

A call ends by handing its row to `Recorder.record`, which makes it storable
(`storable.clean`), appends it to this process's spool file and queues it: no
database work, so ending a call never waits for data.db. A background loop (a
greenlet under gevent, a thread otherwise) hands whatever has queued up to the
data writer (`writer.Writer`), which inserts it in one transaction per 500 rows on
its own OS thread, adds it to the usage rollup and stamps each key's last use in
the same transaction; then the spool segment holding those rows is removed.

No row holds back the others: when a batch fails, its rows are written one by one,
and a row that still fails is logged (its id, endpoint and the error, never its
contents) and dropped. When the database itself is unavailable (locked past the
busy timeout, disk full), the rows stay queued and the next try comes a second
later. `stop` writes everything pending and never raises; rows it could not write
stay in the spool, and the next process to start replays them (`spool.Spool`).
"""

import datetime as dt
import logging
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path

import peewee

from ..collections import BY_NAME
from ..data import storable
from ..data.db import UNREACHABLE, connection, db, drop_broken_connection, is_postgresql
from ..data.fields import JSONColumn, new_id
from ..data.writer import Writer
from . import stats
from .spool import Spool

log = logging.getLogger(__name__)

BATCH = 500
FIND_WAIT = 2.0  # seconds `find` waits for a row another process queued (its batches are 50 ms apart)
FIND_POLL = 0.05
# sqlite3.OperationalError messages that say the database, not the row, is the problem
UNAVAILABLE = ("locked", "busy", "disk", "full", "readonly", "unable to open", "no such table")


def close_connection():
    """The writer thread's peewee connection, closed when the writer stops."""
    if not db.is_closed():
        db.close()


class Recorder:
    def __init__(self, data_dir=None, writer=None, interval=0.05):
        self.interval = interval
        self.writer = writer or Writer("data.db", on_stop=close_connection)
        self.spool = Spool(Path(data_dir) / "spool") if data_dir else None
        self.pending = deque()
        self.written = 0
        self.dropped = 0
        self._sealed = []  # spool segments whose rows are taken but not yet committed
        self._queue_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._written_cond = threading.Condition()
        self._thread = None
        self._stopping = False

    def start(self):
        """Replay rows that stopped workers left in the spool, then start writing."""
        if self.spool:
            self.spool.replay(lambda rows: self.writer.run(self._write_all, rows, replay=True))
            self.spool.open()
        self._thread = threading.Thread(target=self._run, name="promptproxy-recorder", daemon=True)
        self._thread.start()
        return self

    def record(self, row):
        """Queue one request row (a dict of column values). Never waits for the
        database; once it returns, the row survives the death of the process."""
        row = storable.clean(BY_NAME["requests"].model, row)
        row.setdefault("id", new_id())
        row.setdefault("updated", row.get("created"))
        with self._queue_lock:
            if self.spool:
                try:
                    self.spool.append(row)
                except OSError:
                    log.exception("could not append to the request spool")
            self.pending.append(row)
        self._wake.set()

    def _run(self):
        while not self._stopping:
            self._wake.wait()
            self._wake.clear()
            if self.interval:
                time.sleep(self.interval)  # let a batch gather
            if not self.flush():
                time.sleep(1)  # the database is unavailable; the rows wait, queued and spooled
                self._wake.set()

    def flush(self):
        """Write every queued row now. True when all were written (or dropped as
        unstorable); False when the database was unavailable and rows remain queued.
        Never raises."""
        with self._flush_lock:
            with self._queue_lock:
                sealed = self.spool.seal() if self.spool else None
                if sealed:
                    self._sealed.append(sealed)
                rows = list(self.pending)
                self.pending.clear()
            if rows:
                try:
                    written, dropped, left = self.writer.run(self._write_all, rows)
                except Exception:  # noqa: BLE001 -- e.g. the writer is gone; keep the rows
                    log.exception("writing request rows failed; will retry")
                    written, dropped, left = 0, 0, rows
                if left:
                    with self._queue_lock:
                        self.pending.extendleft(reversed(left))
                with self._written_cond:
                    self.written += written
                    self.dropped += dropped
                    self._written_cond.notify_all()
                if left:
                    return False
            if self.spool:
                self.spool.remove(self._sealed)
            self._sealed.clear()
            return True

    def _write_all(self, rows, replay=False):
        """On the writer's thread: (written, dropped, rows left for a later try)."""
        written = dropped = 0
        for start in range(0, len(rows), BATCH):
            batch = rows[start:start + BATCH]
            try:
                written += self._write(batch, replay)
                continue
            except Exception as exc:  # noqa: BLE001
                drop_broken_connection()
                if unavailable(exc):
                    log.warning("database unavailable (%s); %d request rows wait", exc, len(rows) - start)
                    return written, dropped, rows[start:]
            for i, row in enumerate(batch):  # one bad row must not hold back the others
                try:
                    written += self._write([row], replay)
                except Exception as exc:  # noqa: BLE001
                    drop_broken_connection()
                    if unavailable(exc):
                        return written, dropped, batch[i:] + rows[start + BATCH:]
                    log.error("dropped request row %s (%s, status %s): %s: %s", row.get("id"),
                              row.get("endpoint"), row.get("status"), type(exc).__name__, exc)
                    dropped += 1
        return written, dropped, []

    def _write(self, batch, replay=False):
        """One transaction per batch, with the SQL prepared once: building each
        INSERT through the ORM cost more CPU than the proxying itself. Replayed rows
        already in the table (written before a crash) are skipped, rollup included."""
        requests = BY_NAME["requests"].model
        keys = BY_NAME["keys"].model
        fields = list(requests._meta.sorted_fields)
        insert = (f'INSERT INTO "{requests._meta.table_name}" ('
                  + ", ".join(f'"{f.column_name}"' for f in fields)
                  + ") VALUES (" + ", ".join([db.param] * len(fields)) + ")")
        convert = [(f.name, None if isinstance(f, JSONColumn) else f.db_value) for f in fields]
        db.connect(reuse_if_open=True)  # the writer thread's own connection, kept open
        with db.atomic():
            if replay:
                batch = [dict(row, created=_datetime(row["created"]), updated=_datetime(row["updated"]))
                         for row in batch]
                ids = [row["id"] for row in batch]
                present = {r[0] for r in db.execute_sql(
                    f'SELECT "id" FROM "{requests._meta.table_name}" WHERE "id" IN '
                    f'({", ".join([db.param] * len(ids))})', ids)}
                batch = [row for row in batch if row["id"] not in present]
            rows, last_used = [], {}
            for row in batch:
                rows.append(tuple(None if row.get(name) is None else (value(row[name]) if value else row[name])
                                  for name, value in convert))
                if row.get("key"):
                    last_used[row["key"]] = max(row["created"], last_used.get(row["key"], row["created"]))
            db.cursor().executemany(insert, rows)
            stats.add(batch)
            for key_id, when in last_used.items():
                keys.update(last_used=when).where(
                    (keys.id == key_id) & ((keys.last_used.is_null()) | (keys.last_used < when))).execute()
        return len(batch)

    def find(self, request_id, wait=FIND_WAIT):
        """The request row with this id, as its caller may ask right after its call
        (to give feedback): read-your-writes although rows are written in batches.
        A row this process queued is written first; one another worker or instance
        queued is waited for, up to `wait` seconds, while its batch is written. None
        when no such row is there by then. Only the calling greenlet waits."""
        requests = BY_NAME["requests"].model

        def read():
            with connection():
                return requests.get_or_none(requests.id == request_id)

        row = read()
        if row is None and self.flush():
            row = read()
        deadline = time.monotonic() + wait
        while row is None and time.monotonic() < deadline:
            time.sleep(FIND_POLL)
            row = read()
        return row

    def wait_for(self, count, timeout=10):
        """Block until at least `count` rows have been written (for tests and tools)."""
        with self._written_cond:
            return self._written_cond.wait_for(lambda: self.written >= count, timeout)

    def stop(self):
        """Write everything pending, release the spool and the writer. Never raises."""
        self._stopping = True
        self._wake.set()
        try:
            if not self.flush():
                log.error("%d request rows could not be written now; they stay in the spool "
                          "and are written at the next start", len(self.pending))
            if self.spool:
                self.spool.close()
            self.writer.stop()
        except Exception:  # noqa: BLE001 -- shutting down: say so, never raise
            log.exception("stopping the recorder failed")


def unavailable(exc):
    """True when the error is the database's state, not the row's content. In
    PostgreSQL, rows are refused with data and integrity errors; operational ones
    are about the server or the connection (down, restarting, unreachable)."""
    if is_postgresql():
        return isinstance(exc, UNREACHABLE)
    if not isinstance(exc, (sqlite3.OperationalError, peewee.OperationalError)):
        return False
    return any(word in str(exc).lower() for word in UNAVAILABLE)


def _datetime(value):
    return value if isinstance(value, dt.datetime) or value is None else dt.datetime.fromisoformat(value)
