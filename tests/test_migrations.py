"""Schema changes: numbered migrations, run once per database, under a lock.

The "old" database is tests/fixtures/data-before-migrations.sql, a dump of a
data.db made by PromptProxy before numbered migrations existed (its header says
which keys and records it holds), lacking a column that a migration adds."""

import contextlib
import logging
import re
import sqlite3
import sys
from pathlib import Path

import pytest

from promptproxy import create_app
from promptproxy.data.db import db
from promptproxy.data.migrations import MIGRATIONS
from promptproxy.services import services

from .servers import free_port, running, server_env

OLD_DUMP = Path(__file__).parent / "fixtures" / "data-before-migrations.sql"
OLD_SECRET = "old-secret-key-for-the-migration-fixture-0123456789"
OLD_ENCRYPTION_KEY = re.search(r"PROMPTPROXY_ENCRYPTION_KEY=(\S+)", OLD_DUMP.read_text())[1]
OLD_ENV = {"PROMPTPROXY_SECRET_KEY": OLD_SECRET, "PROMPTPROXY_ENCRYPTION_KEY": OLD_ENCRYPTION_KEY}
APPLIED = re.compile(r"applying migration (\d+): (\w+)")


def old_database(data_dir):
    """A data directory holding a database made before numbered migrations."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(data_dir / "data.db")) as conn:
        conn.executescript(OLD_DUMP.read_text())
    return data_dir


def schema(path):
    """{table: {column: type}} and the index names of a database file."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = {table: {row[1]: row[2] for row in conn.execute(f'PRAGMA table_info("{table}")')}
                   for table in tables}
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                                  "AND name NOT LIKE 'sqlite_autoindex%'")}
    return columns, indexes


def migration_rows(path):
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT version, name FROM _migrations ORDER BY version").fetchall()


def start(data_dir, monkeypatch):
    for name, value in OLD_ENV.items():
        monkeypatch.setenv(name, value)
    app = create_app({"DATA_DIR": str(data_dir)})
    services(app).recorder.stop()
    db.close()
    return app


@pytest.mark.sqlite  # databases made by older, SQLite-only versions
def test_an_old_and_a_fresh_database_reach_the_same_schema(tmp_path, monkeypatch, caplog):
    old = old_database(tmp_path / "old")
    assert "notes" not in schema(old / "data.db")[0]["users"]
    with caplog.at_level(logging.INFO, logger="promptproxy.data.migrations"):
        start(old, monkeypatch)
        start(tmp_path / "fresh", monkeypatch)
        start(old, monkeypatch)  # a restart finds nothing to do

    assert schema(old / "data.db") == schema(tmp_path / "fresh" / "data.db")
    expected = [(number, m.__name__) for number, m in enumerate(MIGRATIONS, start=1)]
    assert migration_rows(old / "data.db") == migration_rows(tmp_path / "fresh" / "data.db") == expected
    announced = [(int(m[1]), m[2]) for m in APPLIED.finditer(caplog.text)]
    assert announced == expected * 2  # once for the old database, once for the fresh one
    with contextlib.closing(sqlite3.connect(old / "data.db")) as conn:  # rows kept
        assert conn.execute("SELECT name, notes FROM users").fetchall() == [("Tom", None)]
        assert conn.execute("SELECT label FROM keys ORDER BY label").fetchall() == [("generated",), ("pasted",)]


@pytest.mark.sqlite
def test_the_superuser_command_upgrades_the_same_way(tmp_path):
    import subprocess

    old = old_database(tmp_path / "old")
    done = subprocess.run([sys.executable, "app.py", "superuser", "upsert", "a@example.com", "long password 1"],
                          cwd=Path(__file__).parents[1], env=server_env(old, **OLD_ENV),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [version for version, _ in migration_rows(old / "data.db")] == list(range(1, len(MIGRATIONS) + 1))
    assert "notes" in schema(old / "data.db")[0]["users"]


@pytest.mark.slow
@pytest.mark.sqlite
def test_eight_servers_starting_at_once_on_an_old_database_all_serve(tmp_path):
    data_dir = old_database(tmp_path / "pb_data")
    env = server_env(data_dir, **OLD_ENV)
    with contextlib.ExitStack() as stack:
        servers = []
        for number in range(8):  # all started before any is waited for
            port = free_port()
            server = stack.enter_context(running(
                [sys.executable, "app.py", "serve", "--http", f"127.0.0.1:{port}"], env,
                tmp_path / f"server-{number}.log"))
            server.url = f"http://127.0.0.1:{port}"
            servers.append(server)
        for server in servers:
            server.wait_healthy(server.url)  # each answers 200 on /api/health
        logs = "".join(server.log() for server in servers)

    assert "Traceback" not in logs and "duplicate column" not in logs
    expected = [(number, m.__name__) for number, m in enumerate(MIGRATIONS, start=1)]
    assert migration_rows(data_dir / "data.db") == expected
    announced = sorted((int(m[1]), m[2]) for m in APPLIED.finditer(logs))
    assert announced == expected  # each migration ran in exactly one of the eight
    assert "notes" in schema(data_dir / "data.db")[0]["users"]
