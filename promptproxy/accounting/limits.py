"""Per-user rate limits, shared by every worker of a deployment.

Four limits: requests per minute (rpm), tokens per minute (tpm), requests per day
(rpd) and concurrent requests. Each is set on the user, may be overridden on a key
(which then counts on its own), and otherwise falls back to the instance default
(PROMPTPROXY_DEFAULT_RPM and friends; 0 means none). A caller with no limit at all
costs nothing here.

Counts live in their own SQLite file beside the data (`limits.db`), so all
gunicorn workers share them, in fixed windows: the current minute and the current
UTC day. It is written with `synchronous=OFF`: after a power cut a window may
forget some calls, which for rate limits is harmless, and each check stays a small
local transaction. Concurrent calls are counted per worker process, and the
counts of a process that died are ignored.

Every read and write of `limits.db` runs on the limiter's own writer thread
(`writer.Writer`): while another process holds the file's lock, the calls that
need a limit checked or released wait for it (up to the 10 s busy timeout, then
the call fails), and everything else the worker serves goes on.
"""

import math
import os
import sqlite3
import time
from dataclasses import dataclass, field

from ..data.storable import integer
from ..data.writer import Writer

KINDS = ("rpm", "tpm", "rpd", "concurrency")
SCHEMA = """
CREATE TABLE IF NOT EXISTS windows (subject TEXT, kind TEXT, window INTEGER, used INTEGER,
                                    PRIMARY KEY (subject, kind, window)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inflight (subject TEXT, pid INTEGER, used INTEGER,
                                     PRIMARY KEY (subject, pid)) WITHOUT ROWID;
"""


class Limited(Exception):
    """Over a limit: the 429 to send, with when to retry and the limit headers."""

    def __init__(self, kind, limit, retry_after, headers):
        what = {"rpm": "requests per minute", "tpm": "tokens per minute", "rpd": "requests per day",
                "concurrency": "concurrent requests"}[kind]
        super().__init__(f"Rate limit reached: {limit} {what}. Try again in {retry_after} s.")
        self.kind, self.retry_after, self.headers = kind, retry_after, headers


@dataclass
class Ticket:
    """What one admitted call holds: its subjects per kind, to release at the end."""

    subjects: dict
    minute: int
    headers: dict = field(default_factory=dict)


def effective(key, user, defaults):
    """{kind: (subject, limit)} for the limits that apply to this caller."""
    applied = {}
    for kind in KINDS:
        if getattr(key, kind, None):
            applied[kind] = (f"key:{key.id}", getattr(key, kind))
        elif getattr(user, kind, None):
            applied[kind] = (f"user:{user.id}", getattr(user, kind))
        elif defaults.get(kind):
            applied[kind] = (f"user:{user.id}", defaults[kind])
    return applied


def reset_text(seconds):
    """OpenAI's reset format: '59s', '6m0s', '13h20m0s'."""
    seconds = max(0, math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def tokens_count(value):
    """A call's token count as an integer; 0 when the upstream's figure is not a number."""
    return integer(value) or 0


class Limiter:
    def __init__(self, path, defaults=None, clock=time.time, writer=None):
        self.defaults = {kind: value for kind, value in (defaults or {}).items() if value}
        self.clock = clock
        self.pid = os.getpid()
        self.writer = writer or Writer("limits.db", on_stop=self._close)
        self._db = None
        self._calls = 0
        self.writer.run(self._open, path)

    def _open(self, path):
        self._db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=wal")
        self._db.execute("PRAGMA synchronous=off")
        self._db.executescript(SCHEMA)
        self._db.execute("DELETE FROM inflight WHERE pid = ?", (self.pid,))  # a reused pid's leftovers

    def _close(self):
        if self._db is not None:
            self._db.close()
            self._db = None

    def stop(self):
        """Close the database on the writer's thread and end the thread."""
        self.writer.stop()

    def acquire(self, key, user):
        """A Ticket for a call within its limits, None when none apply; raises Limited."""
        applied = effective(key, user, self.defaults)
        if not applied:
            return None
        now = self.clock()
        minute, day = int(now // 60), int(now // 86400)
        to_minute, to_day = 60 - now % 60, 86400 - now % 86400
        windows = {"rpm": minute, "tpm": minute, "rpd": day}
        headers = self.writer.run(self._admit, applied, windows, to_minute, to_day)
        return Ticket({kind: subject for kind, (subject, _) in applied.items()}, minute, headers)

    def _admit(self, applied, windows, to_minute, to_day):
        """On the writer's thread: check and count the call in one transaction."""
        minute, day = windows["rpm"], windows["rpd"]
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            used = dict.fromkeys(applied, 0)
            counted = [(subject, kind, windows[kind]) for kind, (subject, _) in applied.items()
                       if kind != "concurrency"]
            if counted:  # every window in one query
                values = ", ".join(["(?, ?, ?)"] * len(counted))
                for kind, count in db.execute(
                        f"SELECT kind, used FROM windows WHERE (subject, kind, window) IN (VALUES {values})",
                        [v for triple in counted for v in triple]):
                    used[kind] = count
            if "concurrency" in applied:
                used["concurrency"] = self._inflight(applied["concurrency"][0])
            headers = self._headers(applied, used, to_minute, to_day)
            for kind, (_subject, limit) in applied.items():
                if used[kind] >= limit:
                    retry = {"rpm": to_minute, "tpm": to_minute, "rpd": to_day}.get(kind, 1)
                    raise Limited(kind, limit, max(1, math.ceil(retry)), headers)
            for kind in ("rpm", "rpd"):
                if kind in applied:
                    self._add(applied[kind][0], kind, windows[kind], 1)
            if "concurrency" in applied:
                db.execute("INSERT INTO inflight VALUES (?, ?, 1) ON CONFLICT (subject, pid) "
                           "DO UPDATE SET used = used + 1", (applied["concurrency"][0], self.pid))
            self._calls += 1
            if self._calls % 1000 == 0:  # forget finished windows now and then
                db.execute("DELETE FROM windows WHERE (kind != 'rpd' AND window < ?) OR "
                           "(kind = 'rpd' AND window < ?)", (minute - 1, day - 1))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return headers

    def release(self, ticket, tokens):
        """The call ended: it no longer counts as running, and its tokens count."""
        if ticket is None:
            return
        tokens = tokens_count(tokens)
        running = "concurrency" in ticket.subjects
        counted = "tpm" in ticket.subjects and tokens
        if not (running or counted):
            return
        self.writer.run(self._release, ticket, running, counted, tokens)

    def _release(self, ticket, running, counted, tokens):
        self._db.execute("BEGIN IMMEDIATE")  # one commit for both
        try:
            if running:
                self._db.execute("UPDATE inflight SET used = used - 1 WHERE subject = ? AND pid = ?",
                                 (ticket.subjects["concurrency"], self.pid))
            if counted:
                self._add(ticket.subjects["tpm"], "tpm", int(self.clock() // 60), tokens)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _add(self, subject, kind, window, amount):
        self._db.execute("INSERT INTO windows VALUES (?, ?, ?, ?) ON CONFLICT (subject, kind, window) "
                         "DO UPDATE SET used = used + excluded.used", (subject, kind, window, amount))

    def _inflight(self, subject):
        rows = self._db.execute("SELECT pid, used FROM inflight WHERE subject = ? AND used > 0",
                                (subject,)).fetchall()
        dead = [pid for pid, _ in rows if pid != self.pid and not alive(pid)]
        for pid in dead:
            self._db.execute("DELETE FROM inflight WHERE pid = ?", (pid,))
        return sum(used for pid, used in rows if pid not in dead)

    @staticmethod
    def _headers(applied, used, to_minute, to_day):
        """OpenAI's x-ratelimit-* headers, counting the call being admitted."""
        headers = {}
        requests = "rpm" if "rpm" in applied else "rpd" if "rpd" in applied else None
        if requests:
            limit = applied[requests][1]
            headers["x-ratelimit-limit-requests"] = str(limit)
            headers["x-ratelimit-remaining-requests"] = str(max(0, limit - used[requests] - 1))
            headers["x-ratelimit-reset-requests"] = reset_text(to_minute if requests == "rpm" else to_day)
        if "tpm" in applied:
            limit = applied["tpm"][1]
            headers["x-ratelimit-limit-tokens"] = str(limit)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, limit - used["tpm"]))
            headers["x-ratelimit-reset-tokens"] = reset_text(to_minute)
        return headers
