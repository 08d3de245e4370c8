"""A real PostgreSQL server for tests: its own cluster in a temporary directory,
listening on 127.0.0.1 and a free port, stopped when the test run ends.

`make test` runs the suite on SQLite; with PROMPTPROXY_TEST_DATABASE=postgresql
(`make test-postgresql`) every test that builds an app or starts a server gets a
fresh, empty PostgreSQL database of its own instead (see conftest.py).

The server tools refuse to run as root, so when the tests run as root the cluster
belongs to the `postgres` system user and the tools run as that user. Connections
are trusted: the cluster only listens on loopback and its socket directory.
"""

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

SELECTED = os.environ.get("PROMPTPROXY_TEST_DATABASE", "sqlite").lower() in ("postgresql", "postgres")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tool(name):
    found = shutil.which(name)
    if found:
        return found
    for bin_dir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):  # Debian's layout
        if (bin_dir / name).exists():
            return str(bin_dir / name)
    raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")


class Cluster:
    """One PostgreSQL server with a template database to copy test databases from."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="promptproxy-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_user = []
        self._names = itertools.count(1)
        self.usual_schema = None  # the tables and columns a test leaves behind (see `emptied`)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.user = "postgres" if self.as_user else pwd.getpwuid(os.geteuid()).pw_name

    def run(self, *command, check=True):
        return subprocess.run([*self.as_user, *command], check=check, capture_output=True, text=True)

    def start(self):
        self.run(_tool("initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8",
                 "--no-sync", "--locale=C")
        self._start()
        return self

    def _start(self):
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 "
                   "-c shared_buffers=64MB")
        self.run(_tool("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"),
                 "-w", "-t", "60", "start")

    def stop(self):
        with contextlib.suppress(Exception):
            self.run(_tool("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self, down=None):
        """Stop the server as an operator's restart does (every connection is cut),
        run `down()` while it is down, then start it again on the same port.

        Fast mode, not immediate: this cluster runs with synchronous_commit=off, so
        a crash would lose commits it had already acknowledged, which a server with
        the default settings never does."""
        self.run(_tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        try:
            if down:
                down()
        finally:
            self._start()  # with the same options: pg_ctl start alone would take the defaults' port

    def url(self, dbname="postgres"):
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def admin(self):
        return psycopg.connect(self.url(), autocommit=True)

    def new_database(self):
        """A fresh, empty database; returns its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, url):
        name = url.rsplit("/", 1)[1]
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def emptied(self, url):
        """`url`'s database with every row deleted and its schema kept (creating a
        database and its tables for each test would cost more than most tests), or a
        fresh database when the test left the schema different from the usual one.
        Returns the URL to use next."""
        name = url.rsplit("/", 1)[1]
        with self.admin() as conn:  # servers the test started are gone; their sessions may linger
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid != pg_backend_pid()", (name,))
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SET lock_timeout = '2s'")
                columns = tuple(conn.execute(
                    "SELECT table_name, column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = 'public' ORDER BY 1, 2").fetchall())
                tables = sorted({table for table, _, _ in columns} - {"_migrations"})
                if columns and self.usual_schema is None:
                    self.usual_schema = columns
                if columns == self.usual_schema:
                    conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables))
                    return url
        except psycopg.errors.OperationalError:  # an app the test left running holds a lock: start afresh
            pass
        self.drop_database(url)
        return self.new_database()
