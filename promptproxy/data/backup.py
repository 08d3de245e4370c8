"""Backups of data.db taken while the server runs, and putting one back while it is stopped.

A file copy of data.db made while the server writes can be torn (pages from before
and after a commit) and misses what is still in data.db-wal. SQLite's online backup
API copies the database as one read transaction sees it: in WAL mode, everything
committed before it began and nothing after, while the server's writers go on
appending to the WAL (only a checkpoint waits for the copy). It copies in a single
step: copied a few pages at a time, a backup starts over whenever another
connection commits, and with request rows committed every few milliseconds it might
never end. The live database is opened read-only: a backup never writes to it.

A backup is one self-contained file (rollback journal, nothing beside it), private
to this user, and checked as `restore` checks it. Only data.db is copied: limits.db
holds the current rate-limit windows and concurrency counts, which mean nothing once
their minute or day is over. The secrets (.secret_key, .encryption_key, or their
environment variables) are not copied either: in the same file, they would hand
whoever holds a backup the upstream api keys it keeps encrypted.

`restore` copies a backup beside the database the same way, checks the copy, and
moves it into place with one rename; the database it replaces is kept, with its -wal.
"""

import datetime as dt
import os
import sqlite3
import tempfile
from contextlib import closing, contextmanager
from pathlib import Path

from .migrations import BASELINE

# Tables every PromptProxy database has had from the start; tables added since are
# created by the server's migrations when it starts on an older backup.
TABLES = frozenset(BASELINE)
BUSY_SECONDS = 10  # as the server's busy timeout: a checkpoint or a WAL recovery is waited out


class Refused(Exception):
    """A backup or restore that cannot be done; the message says why, for the operator."""


def timestamp(now=None):
    """UTC to the second, usable in file names, and sorted as the times it names."""
    return (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")


def default_target(directory):
    """A backup's file in `directory`, named by when it was taken. Given no file,
    `app.py backup` writes to <data dir>/backups/, which the Docker image's volume keeps."""
    return Path(directory) / f"promptproxy-{timestamp()}.db"


def backup(database, target, replace=False):
    """Copy the live `database` to `target`, a new file private to this user. An
    existing `target` is replaced only when `replace` is true. Returns its size in bytes."""
    database, target = Path(database), Path(target)
    if not database.is_file():
        raise Refused(f"No database at {database}.")
    if target.exists():
        if os.path.samefile(target, database):
            raise Refused(f"{target} is the database itself.")
        if not replace:
            raise Refused(f"{target} exists already (--force replaces it).")
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with partial_beside(target) as partial:
        copy(database, partial)
        check(partial, database)  # a damaged copy means a damaged database
        if replace:
            os.replace(partial, target)
        else:
            try:
                os.link(partial, target)  # never replaces: another backup may have just taken the name
            except FileExistsError:
                raise Refused(f"{target} exists already (--force replaces it).") from None
    return target.stat().st_size


def restore(source, database):
    """Put the backup `source` in place of `database`, which no server may be using.
    The copy is checked before anything is touched. The database it replaces is kept
    as <name>.before-restore-<UTC time>, with its -wal (commits a checkpoint had not
    yet moved into the file); its -shm, an index rebuilt from the -wal, is removed.
    Returns where the replaced database is kept, or None when there was none."""
    source, database = Path(source), Path(database)
    if not source.is_file():
        raise Refused(f"No file {source}.")
    if database.exists() and os.path.samefile(source, database):
        raise Refused(f"{source} is the database itself.")
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with partial_beside(database) as incoming:
        copy(source, incoming)
        check(incoming, source)
        kept = None
        if database.exists():
            kept = database.with_name(f"{database.name}.before-restore-{timestamp()}")
            try:
                os.link(database, kept)  # never replaces the database kept by an earlier restore
            except FileExistsError:
                raise Refused(f"{kept} exists already: restore again in a second.") from None
            os.unlink(database)
        wal = Path(f"{database}-wal")
        if kept and wal.exists() and wal.stat().st_size:
            os.rename(wal, f"{kept}-wal")  # SQLite reads <file>-wal with <file>
        wal.unlink(missing_ok=True)
        Path(f"{database}-shm").unlink(missing_ok=True)
        os.rename(incoming, database)
    return kept


def copy(source, destination):
    """Copy the database `source` into the empty file `destination` as one read
    transaction sees it, and leave the copy in rollback-journal mode: one file."""
    uri = Path(source).resolve().as_uri() + "?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=BUSY_SECONDS)) as reader, \
                closing(sqlite3.connect(destination)) as writer:
            reader.backup(writer)  # pages=-1: in one step, see the module's docstring
            writer.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.DatabaseError as exc:
        raise Refused(f"{source} is not a readable SQLite database ({exc}).") from None


def check(path, name):
    """Refuse `path` (shown as `name`) unless it is a sound SQLite database with
    PromptProxy's tables."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:  # a SQLite file (`copy` read it) that breaks when read through
        raise Refused(f"{name} is damaged ({exc}).") from None
    if problems != ["ok"]:
        raise Refused(f"{name} is damaged ({problems[0]}).")
    missing = TABLES - tables
    if missing:
        raise Refused(f"{name} is not a PromptProxy database (missing tables: {', '.join(sorted(missing))}).")


@contextmanager
def partial_beside(path):
    """An empty file private to this user (0600 whatever the umask) in the directory
    of `path`, for a copy that is renamed into place once whole and checked (a rename
    within one directory is atomic); removed if it is not."""
    fd, name = tempfile.mkstemp(prefix=f".{Path(path).name}.", suffix=".partial", dir=Path(path).parent)
    os.close(fd)
    partial = Path(name)
    try:
        yield partial
    finally:
        for leftover in (partial, Path(f"{partial}-journal")):
            leftover.unlink(missing_ok=True)
