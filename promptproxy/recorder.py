"""Writes request rows in batches, off the request path.

A call ends by handing its row to `Recorder.record`, which only appends it to a
queue. A background writer (a greenlet under gevent, a thread otherwise) inserts
whatever has queued up in one transaction, and stamps each key's last use in the
same go. `flush` writes everything still pending and runs at shutdown, so no row
is lost when the server stops.
"""

import logging
import threading
import time
from collections import deque

from . import stats
from .collections import BY_NAME
from .db import db
from .fields import new_id

log = logging.getLogger(__name__)

BATCH = 500


class Recorder:
    def __init__(self, interval=0.05):
        self.interval = interval
        self.pending = deque()
        self.written = 0
        self._wake = threading.Event()
        self._write_lock = threading.Lock()
        self._written_cond = threading.Condition()
        self._thread = None
        self._stopping = False

    def start(self):
        self._thread = threading.Thread(target=self._run, name="promptproxy-recorder", daemon=True)
        self._thread.start()
        return self

    def record(self, row):
        """Queue one request row (a dict of column values). Never blocks."""
        self.pending.append(row)
        self._wake.set()

    def _run(self):
        while not self._stopping:
            self._wake.wait()
            self._wake.clear()
            if self.interval:
                time.sleep(self.interval)  # let a batch gather
            try:
                self.flush()
            except Exception:  # keep the writer alive; rows stay queued for the next try
                log.exception("writing request rows failed; retrying")
                time.sleep(1)
                self._wake.set()

    def flush(self):
        """Write every queued row now."""
        with self._write_lock:
            while self.pending:
                batch = []
                while self.pending and len(batch) < BATCH:
                    batch.append(self.pending.popleft())
                try:
                    self._write(batch)
                except Exception:
                    self.pending.extendleft(reversed(batch))
                    raise
                with self._written_cond:
                    self.written += len(batch)
                    self._written_cond.notify_all()

    def _write(self, batch):
        """One transaction per batch, with the SQL prepared once: building each
        INSERT through the ORM cost more CPU than the proxying itself."""
        requests = BY_NAME["requests"].model
        keys = BY_NAME["keys"].model
        fields = list(requests._meta.sorted_fields)
        insert = (f'INSERT INTO "{requests._meta.table_name}" ('
                  + ", ".join(f'"{f.column_name}"' for f in fields)
                  + ") VALUES (" + ", ".join("?" * len(fields)) + ")")
        rows, last_used = [], {}
        for row in batch:
            row.setdefault("id", new_id())
            row.setdefault("updated", row["created"])
            rows.append(tuple(None if row.get(f.name) is None else f.db_value(row[f.name]) for f in fields))
            if row.get("key"):
                last_used[row["key"]] = max(row["created"], last_used.get(row["key"], row["created"]))
        db.connect(reuse_if_open=True)  # the writer keeps its own connection open
        with db.atomic():
            db.cursor().executemany(insert, rows)
            stats.add(batch)
            for key_id, when in last_used.items():
                keys.update(last_used=when).where(
                    (keys.id == key_id) & ((keys.last_used.is_null()) | (keys.last_used < when))).execute()

    def wait_for(self, count, timeout=10):
        """Block until at least `count` rows have been written (for tests and tools)."""
        with self._written_cond:
            return self._written_cond.wait_for(lambda: self.written >= count, timeout)

    def stop(self):
        self._stopping = True
        self._wake.set()
        self.flush()
