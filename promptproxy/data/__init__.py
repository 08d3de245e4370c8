"""The database and everything written to it: the schema and its migrations, the
writer thread every write runs on, the field types and collections that declare
records, the one way to save a record, the catalog the proxy reads, and the
encryption of what is stored."""

import sys


def load_peewee(postgresql):
    """Import peewee, leaving the PostgreSQL driver out unless it will be used.

    peewee imports psycopg whenever it is installed (the image has it, for
    PROMPTPROXY_DATABASE_URL), and psycopg with its bundled libpq adds about 11 MiB
    to every worker, a fifth of its memory, which an SQLite install never uses. So
    on SQLite peewee's import is told psycopg is not there (and so is playhouse's
    PostgreSQL module, which the admin's form library imports). Call it before
    anything imports peewee; once peewee is imported, later calls change nothing."""
    if postgresql or "peewee" in sys.modules or "psycopg" in sys.modules:
        return
    sys.modules["psycopg"] = None  # makes `import psycopg` raise ImportError
    try:
        import peewee  # noqa: F401
        import playhouse.postgres_ext  # noqa: F401
    finally:
        del sys.modules["psycopg"]
