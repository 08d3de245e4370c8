"""The SQLite database in the data directory, and schema upgrades.

`db` is a proxy so models can be declared at import time and bound when the app
starts. SQLite runs in WAL mode with a busy timeout, so many greenlets writing
request rows at once wait their turn instead of failing with "database is locked".
"""

import logging
from contextlib import contextmanager
from pathlib import Path

import peewee
from playhouse.migrate import SqliteMigrator, migrate

log = logging.getLogger(__name__)

db = peewee.DatabaseProxy()

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
    """Bind `db` to <data_dir>/data.db, creating it if needed."""
    path = Path(data_dir) / "data.db"
    database = peewee.SqliteDatabase(str(path), pragmas=PRAGMAS, check_same_thread=False)
    db.initialize(database)
    return database


def upgrade(models):
    """Create missing tables, then add columns that declarations gained since the
    database was made. Existing rows are kept; nothing is ever dropped."""
    with db.connection_context():
        migrator = SqliteMigrator(db.obj)
        tables = set(db.get_tables())
        for model in models:
            table = model._meta.table_name
            if table not in tables:
                continue
            existing = {column.name for column in db.get_columns(table)}
            missing = [f for f in model._meta.sorted_fields if f.column_name not in existing]
            if missing:
                log.info("adding %s to table %s", ", ".join(f.column_name for f in missing), table)
                with db.atomic():
                    migrate(*[migrator.add_column(table, f.column_name, f) for f in missing])
        db.create_tables([Meta, *models], safe=True)  # new tables, and any index still missing
