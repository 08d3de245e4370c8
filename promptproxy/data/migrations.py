"""Schema changes, numbered and run once per database, PocketBase-style.

A new model needs no migration: the tables of declared models that do not exist
yet are created from their declarations, after the migrations. A change to a
table that exists (a new column, a data fix) is a small function appended to
MIGRATIONS; its number is its place in the list, so never reorder or remove one.
A migration finds the database as its predecessors left it, except that on a
fresh database the tables are not there yet: `add_columns` and `has_table` let it
skip what does not exist (the declarations will create those tables whole).

Every worker and instance calls `upgrade` when it starts. All of them take the
same lock, read which migrations are applied only once they hold it, and run the
missing ones in the same transaction, so when eight start together on an old
database each migration runs once and every one of them comes up.
"""

import logging
from contextlib import contextmanager

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from .db import SCHEMA_LOCK, Meta, db, is_postgresql
from .fields import new_id, utcnow

log = logging.getLogger(__name__)


class Migration(peewee.Model):
    version = peewee.IntegerField(primary_key=True)
    name = peewee.CharField()
    applied = peewee.DateTimeField()

    class Meta:
        database = db
        table_name = "_migrations"


# -- helpers for migrations ----------------------------------------------------------

def has_table(table):
    return table in db.get_tables()


def add_columns(table, columns):
    """Add the columns {name: peewee field} that `table` lacks (nothing if it does
    not exist: its declaration will create it with every column)."""
    if not has_table(table):
        return
    existing = {column.name for column in db.get_columns(table)}
    missing = {name: column for name, column in columns.items() if name not in existing}
    if missing:
        migrator = SchemaMigrator.from_database(db.obj)
        migrate(*[migrator.add_column(table, name, column) for name, column in missing.items()])


# -- the migrations, in order -----------------------------------------------------------

# Columns that the tables had when numbered migrations began. Databases made before
# then got new columns added on start, so an old one may lack some of these.
BASELINE = {
    "users": ["name", "email", "active", "apis", "models", "prompts", "require_prompt",
              "rpm", "tpm", "rpd", "concurrency", "notes"],
    "keys": ["user", "label", "key", "key_prefix", "active", "track", "expires", "last_used",
             "apis", "models", "prompts", "rpm", "tpm", "rpd", "concurrency"],
    "apis": ["name", "base_url", "api_key", "protocol", "timeout", "headers", "active"],
    "models": ["api", "model", "name", "active", "description"],
    "prompts": ["name", "instructions", "replace_system", "tools", "description", "active"],
    "requests": ["user", "key", "api", "model", "prompt", "model_ref", "endpoint", "stream",
                 "status", "error", "input_tokens", "output_tokens", "total_tokens", "latency_ms",
                 "ttfb_ms", "request_body", "response_body", "system_prompt", "user_message", "reply"],
}


def baseline(models):
    """Bring a database made before numbered migrations to the schema they start from."""
    declared = {model._meta.table_name: model for model in models}
    for table, names in BASELINE.items():
        if table in declared:
            fields = declared[table]._meta.columns
            add_columns(table, {name: fields[name] for name in names})


def hashed_gateway_keys(models):
    """Gateway keys were stored as a plain SHA-256 with 10 characters in clear. Mark
    them as such (they are rehashed with the server's secret on first use) and
    keep the clear prefix only for keys PromptProxy generated."""
    add_columns("keys", {"key_legacy": peewee.BooleanField(default=False)})
    if has_table("keys"):
        db.execute_sql(f"UPDATE keys SET key_legacy = {db.param} WHERE key IS NOT NULL", (True,))
        db.execute_sql("UPDATE keys SET key_prefix = NULL WHERE substr(key_prefix, 1, 3) != 'pp-'")


def playground_key_per_admin(models):
    """Each admin keeps their playground key, encrypted, so it is reused across logins."""
    add_columns("_superusers", {"playground_key": peewee.TextField(null=True)})


def live_log_order(models):
    """PostgreSQL: each request row records the transaction that inserted it, which
    the admin's live log follows (see admin/live.py; SQLite's rowid does that job).
    The column is added without rewriting the table: rows already there keep NULL,
    which the live log, showing only new calls, never reads. A fresh database gets
    the table from its declaration here first, so that it has the column too."""
    if not is_postgresql():
        return
    (requests,) = [model for model in models if model._meta.table_name == "requests"]
    db.create_tables([requests], safe=True)
    db.execute_sql("ALTER TABLE requests ADD COLUMN IF NOT EXISTS txid xid8")
    db.execute_sql("ALTER TABLE requests ALTER COLUMN txid SET DEFAULT pg_current_xact_id()")
    db.execute_sql("CREATE INDEX IF NOT EXISTS requests_txid_id ON requests (txid, id)")


def model_groups(models):
    """Models may share a public name (a group), have a weight and fallbacks; apis
    have retries, a cooldown and a concurrency cap; request rows keep each attempt
    and the end user. Existing rows get the defaults the forms would give them."""
    declared = {model._meta.table_name: model._meta.columns for model in models}
    new = {"models": ["weight", "fallbacks"], "apis": ["retries", "cooldown", "concurrency"],
           "requests": ["end_user", "attempts"]}
    for table, names in new.items():
        add_columns(table, {name: declared[table][name] for name in names})
    if has_table("models"):
        db.execute_sql("DROP INDEX IF EXISTS models_name")  # was unique; recreated plain from the declaration
        db.execute_sql("UPDATE models SET weight = 1 WHERE weight IS NULL")
    if has_table("apis"):
        db.execute_sql("UPDATE apis SET retries = 0 WHERE retries IS NULL")
        db.execute_sql("UPDATE apis SET cooldown = 30 WHERE cooldown IS NULL")


def request_stats_by_end_user(models):
    """The usage rollup gains the end user as a dimension, which is part of its
    primary key: the table is dropped here and created anew from its declaration
    (after the migrations), and `stats.backfill`, which every process runs at
    start-up right after `upgrade`, fills it again from the requests table, under
    this same lock. No process records a call before its own backfill, so none
    counts in the new table before it is rebuilt."""
    db.execute_sql('DROP TABLE IF EXISTS "_request_stats"')


def prompt_versions(models):
    """Prompts gain versions (with labels and weights) and variables; request rows
    note the version they served. Every prompt gets version 1: its content as it is,
    which calls go on being served, as the latest version."""
    declared = {model._meta.table_name: model for model in models}
    add_columns("prompts", {"variables": declared["prompts"]._meta.columns["variables"]})
    add_columns("requests", {"prompt_version": declared["requests"]._meta.columns["prompt_version"]})
    if not has_table("prompts"):
        return
    prompts, versions = declared["prompts"], declared["prompt_versions"]
    db.create_tables([versions], safe=True)
    now = utcnow()
    existing = prompts.select(prompts.id, prompts.instructions, prompts.tools, prompts.replace_system)
    rows = [{"id": new_id(), "created": now, "updated": now, "prompt": prompt.id, "version": 1,
             "instructions": prompt.instructions, "tools": prompt.tools or None,
             "replace_system": bool(prompt.replace_system), "labels": [], "promoted": {},
             "note": "The prompt as it was when versions began."} for prompt in existing]
    for start in range(0, len(rows), 100):
        versions.insert_many(rows[start:start + 100]).execute()


def prices_and_budgets(models):
    """Models have prices, users and keys a budget and its period, request rows
    their cost. Existing users and keys get the period the forms would give them;
    rows written before prices existed keep an empty cost."""
    declared = {model._meta.table_name: model._meta.columns for model in models}
    new = {"models": ["input_price", "cached_input_price", "output_price"],
           "users": ["budget", "budget_period"], "keys": ["budget", "budget_period"], "requests": ["cost"]}
    for table, names in new.items():
        add_columns(table, {name: declared[table][name] for name in names})
    for table in ("users", "keys"):
        if has_table(table):
            db.execute_sql(f"UPDATE {table} SET budget_period = 'month' WHERE budget_period IS NULL")


def request_stats_cost(models):
    """The usage rollup sums the rows' costs too, and counts in 64 bits (on PostgreSQL
    its columns were 32-bit, and an upstream reporting 2**31 tokens made its row's
    batch fail): rebuilt as `request_stats_by_end_user` rebuilds it (dropped here,
    created from its declaration, filled from the requests table by `stats.backfill`
    at start-up), so the calls made before have their cost in it."""
    request_stats_by_end_user(models)


MIGRATIONS = [baseline, hashed_gateway_keys, playground_key_per_admin, live_log_order, model_groups,
              request_stats_by_end_user, prompt_versions, prices_and_budgets, request_stats_cost]


# -- running them ---------------------------------------------------------------------------

@contextmanager
def schema_lock():
    """Hold the database's schema lock for the block: one starting worker at a time.

    SQLite: an immediate transaction on data.db, which other writers wait for.
    PostgreSQL: a transaction holding an advisory lock, which every instance takes
    the same way. DDL is transactional in both, so a failed migration leaves
    nothing half done.
    """
    if is_postgresql():
        with db.atomic():
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            yield
    else:
        with db.atomic("IMMEDIATE"):
            yield


def upgrade(models):
    """Run the migrations this database has not had, then create the tables of
    declared models that do not exist yet (and any index still missing)."""
    with db.connection_context(), schema_lock():
        db.create_tables([Migration], safe=True)
        applied = {row.version for row in Migration.select(Migration.version)}
        for version, migration in enumerate(MIGRATIONS, start=1):
            if version in applied:
                continue
            log.info("applying migration %d: %s", version, migration.__name__)
            migration(models)
            Migration.create(version=version, name=migration.__name__, applied=utcnow())
        if is_postgresql():  # SQLite's table option; PostgreSQL tables have no rowid
            for model in models:
                model._meta.without_rowid = False
        db.create_tables([Meta, *models], safe=True)
