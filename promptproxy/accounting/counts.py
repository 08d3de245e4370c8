"""Where the counts of rate limits and calls in flight are kept: one store per
kind of database, with the same few operations, used only on the limiter's
writer thread (see limits.py).

SQLiteCounts keeps them in limits.db, one file per machine, where a process's pid
names it and a dead pid is seen at once. PostgresCounts keeps them in the shared
database, where processes on several machines name themselves and prove they
live by a heartbeat; the calls of a process silent for DEAD_AFTER seconds stop
counting.
"""

import os
import secrets
import socket
import sqlite3
import time

HEARTBEAT = 5  # seconds between a process's heartbeats (PostgreSQL)
DEAD_AFTER = 20  # seconds of silence after which a process's calls stop counting


class SQLiteCounts:
    """limits.db: one file per machine, so a process's pid names it."""

    SCHEMA = ("""CREATE TABLE IF NOT EXISTS windows (subject TEXT, kind TEXT, "window" INTEGER, used INTEGER,
                                                   PRIMARY KEY (subject, kind, "window")) WITHOUT ROWID""",
              """CREATE TABLE IF NOT EXISTS inflight (subject TEXT, pid INTEGER, used INTEGER,
                                                    PRIMARY KEY (subject, pid)) WITHOUT ROWID""",
              """CREATE TABLE IF NOT EXISTS cooldowns (api TEXT PRIMARY KEY, failures INTEGER, since REAL,
                                                     until REAL, errors TEXT) WITHOUT ROWID""")
    WINDOWS, INFLIGHT, COOLDOWNS = "windows", "inflight", "cooldowns"

    def __init__(self, path):
        self.path = path
        self.process = os.getpid()
        self.conn = None

    def open(self):
        self.conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=wal")
        self.conn.execute("PRAGMA synchronous=off")
        for statement in self.SCHEMA:
            self.conn.execute(statement)
        self.conn.execute("DELETE FROM inflight WHERE pid = ?", (self.process,))  # a reused pid's leftovers

    def execute(self, sql, params=()):
        if self.conn is None:
            self.open()
        return self.conn.execute(sql, params)

    def begin(self, subjects):
        self.execute("BEGIN IMMEDIATE")

    def running(self, rows):
        """The processes among `rows` [(pid, used)] still alive; the dead ones' rows are deleted."""
        dead = [pid for pid, _ in rows if pid != self.process and not pid_alive(pid)]
        for pid in dead:
            self.execute("DELETE FROM inflight WHERE pid = ?", (pid,))
        return [(pid, used) for pid, used in rows if pid not in dead]

    def beat(self):
        pass  # a pid is checked directly

    def close(self, forget):
        if self.conn is not None:
            if forget:
                self.conn.execute("DELETE FROM inflight WHERE pid = ?", (self.process,))
            self.conn.close()
            self.conn = None


class PostgresCounts:
    """The shared PostgreSQL database: processes on several machines, so each names
    itself (host, pid and a random part) and proves it lives by a heartbeat."""

    SCHEMA = ("""CREATE TABLE IF NOT EXISTS _limit_windows (subject TEXT, kind TEXT, "window" BIGINT,
                 used BIGINT, PRIMARY KEY (subject, kind, "window"))""",
              """CREATE TABLE IF NOT EXISTS _limit_inflight (subject TEXT, pid TEXT, used INTEGER,
                 PRIMARY KEY (subject, pid))""",
              """CREATE TABLE IF NOT EXISTS _limit_processes (pid TEXT PRIMARY KEY, seen DOUBLE PRECISION)""",
              """CREATE TABLE IF NOT EXISTS _upstream_cooldowns (api TEXT PRIMARY KEY, failures INTEGER,
                 since DOUBLE PRECISION, until DOUBLE PRECISION, errors TEXT)""")
    WINDOWS, INFLIGHT, COOLDOWNS = "_limit_windows", "_limit_inflight", "_upstream_cooldowns"

    def __init__(self, url, clock=time.time):
        self.url = url
        self.clock = clock
        self.process = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.conn = None

    def open(self):
        import psycopg

        from ..data.db import SCHEMA_LOCK

        self.conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                    application_name="promptproxy-limits")
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in self.SCHEMA:
                self.conn.execute(statement)
        self.beat()

    def execute(self, sql, params=()):
        if self.conn is None or self.conn.closed:
            self.open()  # the server restarted since the last call
        return self.conn.execute(sql.replace("?", "%s"), params)

    def begin(self, subjects):
        """Lock the subjects being counted, in one order, for this transaction. The
        connection stays open between calls: when the server dropped it meanwhile (a
        restart), BEGIN is where that shows, and a new connection is opened."""
        import psycopg

        kept = self.conn is not None and not self.conn.closed
        try:
            self.execute("BEGIN")
        except psycopg.OperationalError:
            if not (kept and self.conn.closed):
                raise
            self.execute("BEGIN")  # on a new connection (see `execute`)
        self.execute("SELECT count(pg_advisory_xact_lock(hashtextextended(s, 0))) "
                     "FROM (SELECT unnest(?::text[]) AS s ORDER BY 1) AS subjects", (sorted(set(subjects)),))

    def running(self, rows):
        alive = {pid for (pid,) in self.execute(
            "SELECT pid FROM _limit_processes WHERE pid = ANY(?) AND seen >= ?",
            ([pid for pid, _ in rows], self.clock() - DEAD_AFTER))}
        return [(pid, used) for pid, used in rows if pid == self.process or pid in alive]

    def beat(self):
        """Say this process lives, and forget the calls of processes long gone."""
        now = self.clock()
        self.execute("INSERT INTO _limit_processes VALUES (?, ?) ON CONFLICT (pid) DO UPDATE SET seen = ?",
                      (self.process, now, now))
        self.execute("DELETE FROM _limit_inflight WHERE pid IN "
                     "(SELECT pid FROM _limit_processes WHERE seen < ?)", (now - 10 * DEAD_AFTER,))
        self.execute("DELETE FROM _limit_processes WHERE seen < ?", (now - 10 * DEAD_AFTER,))

    def close(self, forget):
        if self.conn is not None and not self.conn.closed:
            try:
                if forget:  # a stopping process's calls have ended
                    self.execute("DELETE FROM _limit_inflight WHERE pid = ?", (self.process,))
                    self.execute("DELETE FROM _limit_processes WHERE pid = ?", (self.process,))
            except Exception:  # noqa: BLE001 -- the database is gone: its rows expire with the heartbeat
                pass
            self.conn.close()
        self.conn = None


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def forget_spends(path):
    """Drop the budgets' spends from the limits.db at `path`, if there is one: after
    data.db is put back from a backup they start again from its request rows,
    which are their truth (see limits.py)."""
    if not os.path.exists(path):
        return
    conn = sqlite3.connect(path, timeout=10)
    try:
        with conn:
            conn.execute("DELETE FROM windows WHERE kind LIKE 'spend-%'")
    except sqlite3.OperationalError:  # no windows table: nothing was ever counted there
        pass
    finally:
        conn.close()


def counts_at(location):
    """The counts' store for a limits.db path or a postgresql:// URL."""
    if location.startswith(("postgresql://", "postgres://")):
        return PostgresCounts(location)
    return SQLiteCounts(location)
