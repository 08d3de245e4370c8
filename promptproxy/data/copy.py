"""Copying an install's data into another, empty database: `python app.py
copy-data --to postgresql://...` moves a SQLite install to PostgreSQL (and a
`sqlite:///DIR/data.db` destination makes the way back possible).

What is copied is every table the app declares (admins, the collections with
their ids, request rows, the usage rollup, login failures) and `_meta`, whose
change counter the catalogs compare. The tables are taken from the models, not
listed here, so a table added later is copied with no change to this module. Not
copied: `_migrations`, which the destination's own upgrade fills, and the rate
limits' `_limit_*` windows on PostgreSQL, which last a minute or a day.

Values keep their meaning across engines. Text columns, JSON included, go across
as the stored text, untouched. Every other column is read as its field reads it
and written as its field writes it, so SQLite's 0/1 becomes a boolean, its date
text a timestamp with its microseconds, and 64-bit numbers stay whole. The one
thing PostgreSQL cannot hold is a NUL character in text: it becomes U+FFFD, and
the count of such values is reported.

Each side is one transaction. The source's is one snapshot, so its tables agree
with each other even while a server still writes (whatever it writes later is
not copied). The destination's commits at the end: an instance started on it
never sees half the data, and a copy that fails or is interrupted leaves it
empty, so it can simply be run again. Rows are read a page at a time by primary
key (`WHERE key > last ORDER BY key LIMIT n`): memory stays at one page however
many request rows there are, on both engines and without a server-side cursor.
A page goes into SQLite with one executemany and into PostgreSQL with COPY: the
CLI runs under gevent's patched sockets, where psycopg's pipelined executemany
waits on the event loop for every statement and took eight times as long.
"""

from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import peewee

from . import migrations
from .db import Meta, db, make_database

PAGE = 1000  # rows read and written at a time

POSTGRESQL = ("postgresql://", "postgres://")
SQLITE = "sqlite:///"


class CopyRefused(Exception):
    """Why the copy did not run or did not finish, in one line that never holds a password."""


def tables(models):
    """What is copied: the declared models, then the change counter."""
    return [*models, Meta]


def copy_data(source, url, models, on_table=None, page=PAGE):
    """Copy every table of `models`, and `_meta`, from the `source` database into
    the database at `url`, after bringing its schema up to date with the same
    migrations a server runs. Refuses a destination that holds any row already.
    Calls `on_table(table name, rows copied, texts changed)` after each table, and
    returns the total number of rows. Raises CopyRefused, with nothing copied."""
    destination = destination_database(url)
    try:
        try:
            destination.connect()
        except peewee.DatabaseError as error:
            raise CopyRefused(f"cannot reach {masked(url)}: {reason(error, url)}") from None
        destination.close()
        upgrade(destination, models)
        total = 0
        with snapshot(source), destination.connection_context(), destination.atomic():
            holding = [model._meta.table_name for model in tables(models) if model.select().exists(destination)]
            if holding:
                raise CopyRefused(f"{masked(url)} already holds data (rows in {', '.join(holding)}): "
                                  "copy-data only fills an empty database.")
            for model in tables(models):
                rows, changed = copy_table(model, source, destination, page)
                total += rows
                if on_table:
                    on_table(model._meta.table_name, rows, changed)
        return total
    except (peewee.DatabaseError, peewee.InterfaceError) as error:
        raise CopyRefused(f"copying into {masked(url)} failed, nothing was copied: "
                          f"{reason(error, url)}") from None
    finally:
        close_all = getattr(destination, "close_all", None)  # PostgreSQL's pool
        if close_all:
            close_all()
        elif not destination.is_closed():
            destination.close()


def destination_database(url):
    """An unbound database for `url`: postgresql://... or sqlite:///DIR/data.db."""
    if url.startswith(POSTGRESQL):
        return make_database({"DATABASE_URL": url, "DATABASE_POOL": 2})
    if url.startswith(SQLITE):
        path = Path(url[len(SQLITE):])
        if path.name != "data.db":
            raise CopyRefused("a SQLite destination is the data.db of a data directory: "
                              "sqlite:///DIR/data.db (sqlite:////DIR/data.db for an absolute path).")
        path.parent.mkdir(parents=True, exist_ok=True)
        return make_database({"DATA_DIR": str(path.parent)})
    raise CopyRefused(f"the destination must be a postgresql:// URL (or sqlite:///DIR/data.db), not {masked(url)}")


def upgrade(destination, models):
    """Create or upgrade the destination's schema with the migrations, which work
    on the `db` proxy: it points at the destination for the while."""
    previous = db.obj
    db.initialize(destination)
    try:
        migrations.upgrade(models)
    finally:
        db.initialize(previous)


@contextmanager
def snapshot(database):
    """One read transaction: every query in it sees the data as of its first one.
    SQLite's WAL gives that to any transaction; PostgreSQL's default isolation
    takes a new snapshot per statement, so ask for REPEATABLE READ."""
    with database.connection_context(), database.atomic():
        if isinstance(database, peewee.PostgresqlDatabase):
            database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def copy_table(model, source, destination, page=PAGE):
    """Copy one table a page at a time. Returns (rows, texts changed)."""
    fields = model._meta.sorted_fields
    keys = model._meta.get_primary_keys()
    key_at = [[field.name for field in fields].index(key.name) for key in keys]  # (a field's == is SQL)
    to_destination = [converter(field, destination) for field in fields]
    write = writer(model, destination)
    query = model.select(*fields).order_by(*keys).limit(page)
    copied, changed, last = 0, [0], None
    while True:
        rows = source.execute(query if last is None else
                              query.where(peewee.Tuple(*keys) > peewee.Tuple(*last))).fetchall()
        if not rows:
            break
        with peewee.__exception_wrapper__:  # the driver's errors as peewee's, as for any query
            write([tuple(value if convert is None else convert(value, changed)
                         for convert, value in zip(to_destination, row)) for row in rows])
        copied += len(rows)
        if len(rows) < page:
            break
        last = [rows[-1][i] for i in key_at]
    return copied, changed[0]


def writer(model, destination):
    """A function that writes a page of rows (tuples of every column, in order) to
    `model`'s table in `destination`: PostgreSQL's COPY, SQLite's executemany."""
    table = model._meta.table_name
    columns = ", ".join(f'"{field.column_name}"' for field in model._meta.sorted_fields)
    if isinstance(destination, peewee.PostgresqlDatabase):
        def copy_rows(rows):
            with destination.cursor().copy(f'COPY "{table}" ({columns}) FROM STDIN') as pipe:
                for row in rows:
                    pipe.write_row(row)
        return copy_rows
    insert = (f'INSERT INTO "{table}" ({columns}) '
              f'VALUES ({", ".join([destination.param] * len(model._meta.sorted_fields))})')
    return lambda rows: destination.cursor().executemany(insert, rows)


def converter(field, destination):
    """How a value as the source's driver returns it becomes what the destination
    stores: None for "as it is" (text, which is the stored value itself)."""
    if isinstance(field, (peewee.CharField, peewee.TextField)):
        return without_nul if isinstance(destination, peewee.PostgresqlDatabase) else None
    return lambda value, changed: field.db_value(field.python_value(value))


def without_nul(text, changed):
    """PostgreSQL's text cannot hold NUL characters (SQLite's can): U+FFFD instead."""
    if text is None or "\x00" not in text:
        return text
    changed[0] += 1
    return text.replace("\x00", "\ufffd")


# -- never a password in a message ----------------------------------------------------

def masked(url):
    """`url` with its password, in the user part or a `password=` parameter, as ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the given URL"
    if parts.password is None and not passwords(url):
        return url
    netloc = parts.netloc
    if parts.password is not None:
        user_info, _, host = netloc.rpartition("@")
        netloc = f"{user_info.partition(':')[0]}:***@{host}"
    query = "&".join("password=***" if item.partition("=")[0].lower() == "password" else item
                     for item in parts.query.split("&")) if parts.query else ""
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def reason(error, url):
    """The first line of a database error, with `url` masked and its password, in
    any spelling the driver might repeat it, removed."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if url:
        text = text.replace(url, masked(url))
    for secret in passwords(url):
        text = text.replace(secret, "***")
    return text


def passwords(url):
    """The password `url` carries, as written and decoded (longest first); [] for none."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [parts.password] if parts.password else []
    found += [item.partition("=")[2] for item in parts.query.split("&")
              if item.partition("=")[0].lower() == "password" and item.partition("=")[2]]
    return sorted({spelling for secret in found for spelling in (secret, unquote(secret))}, key=len, reverse=True)
