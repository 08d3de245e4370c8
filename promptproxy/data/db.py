"""The database: SQLite in the data directory, or PostgreSQL when
PROMPTPROXY_DATABASE_URL names one (its schema changes are in migrations.py).

`db` is a proxy so models can be declared at import time and bound when the app
starts. Every write runs on one writer thread (`write`, see writer.py), so no
request greenlet waits on a database lock; SQLite runs in WAL mode with a busy
timeout, so the workers sharing the file wait their turn instead of failing with
"database is locked".

PostgreSQL is reached through psycopg 3, whose waits go through the `select`
module: under gevent's monkey-patching they yield to the event loop, so a slow
query holds up only the greenlet that made it (tests/test_postgresql.py shows
it). psycopg picks its way of waiting when it is first imported, so it must be
imported after the patching, as gunicorn's gevent worker and `app.py serve` do
(gunicorn's --preload would not: every query would then stall the worker).
Connections come from a pool, which checks one before handing it out, so after a
server restart the next query gets a new one; the writer thread keeps its own
connection, and `write` replaces it when the server dropped it meanwhile.
"""

import fcntl
import logging
import os
import selectors
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

import peewee
from playhouse.pool import PooledPostgresqlDatabase

log = logging.getLogger(__name__)

db = peewee.DatabaseProxy()
_writer = None  # data.db's writer thread while the app runs (see writer.py and `write`)

PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",  # safe with WAL; a power cut loses at most the last commits
    "busy_timeout": 10_000,
    "cache_size": -16_000,
    "foreign_keys": 0,  # relations are checked by PromptProxy itself (see records.delete)
}


class BaseModel(peewee.Model):
    class Meta:
        database = db


class Meta(BaseModel):
    """Small facts about the database itself, such as the change counter."""

    name = peewee.CharField(primary_key=True)
    value = peewee.IntegerField(default=0)

    class Meta:
        table_name = "_meta"


# The advisory lock that starting instances take before changing the schema (PostgreSQL).
SCHEMA_LOCK = 0x7050_5072_6f78_79  # "pPProxy"

# Errors that say the database cannot be reached or is shutting down, not that a
# statement or a row is wrong: the call fails cleanly and the next one reconnects.
UNREACHABLE = (peewee.OperationalError, peewee.InterfaceError)


def is_postgresql():
    return isinstance(db.obj, peewee.PostgresqlDatabase)


# The channel on which `bump_version` tells listening instances that the counter moved (PostgreSQL).
CHANGES = "promptproxy_changes"


def bump_version():
    """Tell every worker's catalog that keys, users, apis, models or prompts changed.
    With PostgreSQL, also notify every instance's `ChangeListener`: a NOTIFY made in
    a transaction is delivered when it commits, so whoever hears it reads the new
    counter, and one made in a transaction that rolls back is never heard."""
    Meta.insert(name="catalog", value=1).on_conflict(
        conflict_target=[Meta.name], update={Meta.value: Meta.value + 1}).execute()
    if is_postgresql():
        db.execute_sql(f"NOTIFY {CHANGES}")


def read_version():
    row = Meta.get_or_none(Meta.name == "catalog")
    return row.value if row else 0


class ChangeListener:
    """Hears `bump_version`'s notifications and calls `on_change()` for each, so an
    admin's change reaches this process at once instead of at its next look at the
    counter (the catalog's TTL, which stays the fallback: a notification lost while
    the connection was down is late by that much at most).

    PostgreSQL only, on a connection of its own (LISTEN needs the same session all
    along, and the pool's connections are lent out and back). The loop runs in a
    thread, which under gevent's monkey-patching is a greenlet: its waits go
    through `selectors` and psycopg's own, which gevent patches, so they yield to
    the event loop. When the connection breaks
    (the server restarted) it reconnects, waiting longer after each failure, and
    calls `on_change(True)` once connected, for what it could not hear meanwhile.
    """

    FIRST_RETRY = 0.1  # seconds before reconnecting, doubled after each failure
    LAST_RETRY = 5.0

    def __init__(self, url, on_change):
        self.url, self.on_change = url, on_change
        self._stopping = threading.Event()
        self._wake_read, self._wake_write = os.pipe()  # `stop` ends a wait at once
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="promptproxy-changes", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout=5):
        """End the loop and close its connection. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        os.write(self._wake_write, b"x")
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return  # still closing its connection: the pipe stays open for it
        for fd in (self._wake_read, self._wake_write):
            os.close(fd)

    def _run(self):
        import psycopg

        delay = self.FIRST_RETRY
        while not self._stopping.is_set():
            try:
                # Keepalives: a server that vanished without closing the connection is noticed too.
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                     application_name=f"promptproxy-listener {os.getpid()}",
                                     keepalives=1, keepalives_idle=30, keepalives_interval=10,
                                     keepalives_count=3) as connection_:
                    connection_.execute(f"LISTEN {CHANGES}")
                    if delay > self.FIRST_RETRY:
                        log.info("listening for changes again")
                    delay = self.FIRST_RETRY
                    self.on_change(True)
                    self._listen(connection_)
            except (psycopg.Error, OSError) as exc:
                if self._stopping.is_set():
                    break
                reason = (str(exc).strip() or type(exc).__name__).splitlines()[0]
                # Said once per outage; the catalog's TTL keeps changes coming meanwhile.
                log.log(logging.WARNING if delay == self.FIRST_RETRY else logging.DEBUG,
                        "not listening for changes (%s); trying again in %.1f s", reason, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, self.LAST_RETRY)

    def _listen(self, connection_):
        """Until `stop`: wait for the server to send something, then take every
        notification it sent. A broken connection raises psycopg.Error."""
        with selectors.DefaultSelector() as selector:  # gevent's own under its monkey-patching
            selector.register(connection_.fileno(), selectors.EVENT_READ, "database")
            selector.register(self._wake_read, selectors.EVENT_READ, "stop")
            while True:
                ready = {key.data for key, _ in selector.select()}
                if "stop" in ready:
                    return
                if sum(1 for _ in connection_.notifies(timeout=0)):
                    self.on_change()


def use_writer(writer):
    """Send every `write` to `writer`'s thread from now on (None: write in place)."""
    global _writer
    _writer = writer


def write(function, *args, **kwargs):
    """Run `function(*args, **kwargs)` as one transaction on data.db's writer thread,
    where the app runs one, and return its result. A write may wait for a lock that
    another process holds; on the writer's thread only the caller waits, never the
    event loop. Without a writer (the CLI, scripts) it runs here."""
    def transaction():
        for tries_left in (1, 0):
            begun = False
            db.connect(reuse_if_open=True)
            try:
                with db.atomic():
                    begun = True
                    return function(*args, **kwargs)
            except UNREACHABLE:
                # The writer keeps its connection open; one the server dropped while
                # it was idle (a PostgreSQL restart) fails at BEGIN, before anything
                # was written, so the write is tried once more on a new connection.
                if not (drop_broken_connection() and not begun and tries_left):
                    raise
    return _writer.run(transaction) if _writer is not None else transaction()


def drop_broken_connection():
    """After an error, give up this thread's connection if it no longer works (a
    PostgreSQL restart breaks every open connection), so the next use opens one.
    True when it was given up."""
    if db.is_closed():
        return False
    connection_ = db.connection()
    broken = getattr(connection_, "closed", False) or getattr(connection_, "broken", False)
    if broken:
        db.close()
    return bool(broken)


@contextmanager
def connection():
    """Use the current connection, or open one just for this block."""
    opened = db.is_closed()
    if opened:
        db.connect()
    try:
        yield
    finally:
        if opened and not db.is_closed():
            db.close()


def open_database(settings):
    """Bind `db` to the PostgreSQL database of settings["DATABASE_URL"], or else to
    <DATA_DIR>/data.db, created if needed (private to this user)."""
    database = make_database(settings)
    db.initialize(database)
    return database


def make_database(settings):
    """The database `open_database` binds, without binding it: `copy-data` holds
    two at once."""
    url = settings.get("DATABASE_URL")
    if url:
        if peewee.psycopg is None:
            raise RuntimeError("peewee was imported without psycopg (see data.load_peewee)")
        database = PooledPostgresqlDatabase(
            url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url,
            max_connections=settings.get("DATABASE_POOL", 20),
            stale_timeout=300,  # seconds before an idle connection is replaced
            timeout=10,  # seconds a greenlet waits for a free connection before failing
            connect_timeout=5,
            application_name="promptproxy",
        )
    else:
        path = Path(settings["DATA_DIR"]) / "data.db"
        make_private(path)
        use_wal(path)
        database = peewee.SqliteDatabase(str(path), pragmas=PRAGMAS, check_same_thread=False)
    return database


def use_wal(path):
    """Put the SQLite file in WAL mode, one process at a time. Workers starting
    together on a new data dir would otherwise switch it at the same moment, and
    SQLite refuses one of them at once ("database is locked") instead of letting it
    wait; on a file already in WAL mode this is a quick no-op."""
    with open(path, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # released when the file is closed
        connection_ = sqlite3.connect(path, timeout=10)
        try:
            connection_.execute("PRAGMA journal_mode=wal")
        finally:
            connection_.close()


def make_private(path):
    """Create the SQLite file `path` readable by this user only (0600, whatever the
    umask), and set that mode on it and its -wal/-shm files if they exist already.
    SQLite gives the -wal and -shm files it creates the database file's mode."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            os.chmod(name, 0o600)
        except FileNotFoundError:
            pass
