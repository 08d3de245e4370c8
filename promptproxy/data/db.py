"""The SQLite database in the data directory (its schema changes are in migrations.py).

`db` is a proxy so models can be declared at import time and bound when the app
starts. Every write runs on one writer thread (`write`, see writer.py), so no
request greenlet waits on a database lock; SQLite runs in WAL mode with a busy
timeout, so the workers sharing the file wait their turn instead of failing with
"database is locked".
"""

import os
from contextlib import contextmanager
from pathlib import Path

import peewee

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


def bump_version():
    """Tell every worker's catalog that keys, users, apis, models or prompts changed."""
    Meta.insert(name="catalog", value=1).on_conflict(
        conflict_target=[Meta.name], update={Meta.value: Meta.value + 1}).execute()


def read_version():
    row = Meta.get_or_none(Meta.name == "catalog")
    return row.value if row else 0


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
        db.connect(reuse_if_open=True)
        with db.atomic():
            return function(*args, **kwargs)
    return _writer.run(transaction) if _writer is not None else transaction()


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


def open_database(data_dir):
    """Bind `db` to <data_dir>/data.db, creating it if needed (private to this user)."""
    path = Path(data_dir) / "data.db"
    make_private(path)
    database = peewee.SqliteDatabase(str(path), pragmas=PRAGMAS, check_same_thread=False)
    db.initialize(database)
    return database


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
