"""`python app.py backup` copies the data of a running PromptProxy, `python app.py
restore` puts a copy back while it is stopped: the copy holds every row committed
before it began, is private, and is checked before it replaces anything."""

import concurrent.futures
import contextlib
import os
import re
import shlex
import shutil
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests

from promptproxy.cli import main
from promptproxy.data import crypto

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, UPSTREAM_SECRET, make_admin
from .servers import ROOT, app_py, dockerfile_cmd, free_port, running, server_env
from .upstream import FakeUpstream

HELD = 200  # calls held open by their upstream while the backup runs
FAST = 4  # clients making short calls one after another meanwhile, so rows keep being committed
SECRETS = (".secret_key", ".encryption_key")
README = ROOT / "README.md"


def committed(data_dir):
    """{id: user message} of the request rows committed in data_dir's database, read
    as any other reader of the live file reads them."""
    with contextlib.closing(sqlite3.connect(Path(data_dir) / "data.db", timeout=10)) as conn:
        return dict(conn.execute("SELECT id, user_message FROM requests"))


def integrity(path):
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchall()


def admins(path):
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [email for (email,) in conn.execute("SELECT email FROM _superusers")]


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def install(data_dir):
    """A stopped install: data.db with an admin, and its generated secrets beside it."""
    assert main(["--dir", str(data_dir), "superuser", "create", ADMIN_EMAIL, ADMIN_PASSWORD]) == 0
    return data_dir


@pytest.fixture
def held_upstream():
    with FakeUpstream() as server:
        yield server


# -- the backup of a server under load -------------------------------------------------

@pytest.mark.sqlite
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_backup_taken_while_200_calls_are_in_flight_restores_every_row_committed_before_it(
        gateway, served, held_upstream, data_dir, tmp_path):
    make_admin()
    held_api = gateway.create("apis", name="Held", base_url=held_upstream.base_url, timeout=120)
    gateway.create("models", api=held_api.id, model="held-model", name="held")
    release = threading.Event()
    for _ in range(HELD):  # the first chunk at once, the rest once the backup is done
        held_upstream.script(chunks=["first ", "last"], gate=release)

    # The Docker image's command: gunicorn, two gevent workers.
    server = served([arg if not arg.startswith("0.0.0.0:") else "127.0.0.1:{port}" for arg in dockerfile_cmd()])
    gateway.url = server.url
    client = gateway.client(timeout=120)
    in_flight = threading.Semaphore(0)
    stop_fast = threading.Event()

    def held(i):
        stream = client.chat.completions.create(
            model="held", messages=[{"role": "user", "content": f"held call {i}"}], stream=True)
        chunks = iter(stream)
        assert next(chunks).choices[0].delta.content == "first "
        in_flight.release()
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "last"

    def fast(n):
        made = 0
        while not stop_fast.is_set():
            text = f"fast call {n}.{made}"
            reply = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": text}])
            assert reply.choices[0].message.content == "echo: " + text
            made += 1
        return made

    backup_file = tmp_path / "backups" / "under-load.db"
    with concurrent.futures.ThreadPoolExecutor(HELD + FAST) as pool:
        try:
            fast_calls = [pool.submit(fast, n) for n in range(FAST)]
            held_calls = [pool.submit(held, i) for i in range(HELD)]
            for _ in range(HELD):
                if not in_flight.acquire(timeout=60):
                    failed = [f.exception() for f in held_calls + fast_calls if f.done()]
                    pytest.fail(f"the held calls did not all start: {failed[:3]}")
            wait_until(lambda: len(committed(data_dir)) >= 20, 30, "rows committed by the fast calls")

            before = committed(data_dir)  # every row committed before the backup begins
            taken = app_py("backup", str(backup_file), data_dir=data_dir)
            during = committed(data_dir)
            assert taken.returncode == 0, taken.stderr
            assert not any(f.done() for f in held_calls)  # all 200 were in flight from start to end
            assert len(during) > len(before)  # and rows were being committed meanwhile
        finally:
            release.set()
            stop_fast.set()
        for future in held_calls + fast_calls:
            future.result()
    log = server.stop()
    assert "Traceback" not in log, log[-3000:]
    final = committed(data_dir)
    held_rows = {i for i, message in final.items() if message.startswith("held call ")}
    assert len(held_rows) == HELD

    # Restored into a fresh data dir, with the secrets kept apart from the backup.
    fresh = tmp_path / "restored"
    fresh.mkdir()
    for name in SECRETS:
        shutil.copy2(data_dir / name, fresh / name)
    restored = app_py("restore", str(backup_file), data_dir=fresh)
    assert restored.returncode == 0, restored.stderr
    assert restored.stderr == ""
    assert integrity(fresh / "data.db") == [("ok",)]
    rows = committed(fresh)
    assert set(before) <= set(rows)  # every row committed before the backup
    assert set(rows) <= set(final)  # and only rows the server wrote
    assert not held_rows & set(rows)  # the calls in flight ended after it: not in it

    # The restored install serves: the admin logs in, the gateway key calls the api with its stored key.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "app.py", "serve", "--http", f"127.0.0.1:{port}"]
    with running(command, server_env(fresh), tmp_path / "restored.log") as again:
        again.wait_healthy(base)
        login = requests.post(base + "/api/collections/_superusers/auth-with-password",
                              json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, timeout=10)
        assert login.status_code == 200, login.text
        gateway.url = base
        gateway.upstream.reset()
        answer = gateway.client().chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "after the restore"}])
        assert answer.choices[0].message.content == "echo: after the restore"
        (sent,) = gateway.upstream.requests
        assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"
        log = again.stop()
    assert "Traceback" not in log, log[-3000:]


# -- backup ------------------------------------------------------------------------

@pytest.mark.sqlite
def test_a_backup_is_one_private_file_that_replaces_nothing_without_force(install, tmp_path, capsys):
    umask = os.umask(0)  # the file is private whatever the umask
    try:
        assert main(["--dir", str(install), "backup"]) == 0
        (default,) = (install / "backups").iterdir()
        assert re.fullmatch(r"promptproxy-\d{8}T\d{6}Z\.db", default.name)
        assert stat.S_IMODE(default.stat().st_mode) == 0o600
        assert stat.S_IMODE((install / "backups").stat().st_mode) == 0o700
        out = capsys.readouterr().out
        assert f"to {default}" in out
        assert ".secret_key" in out and ".encryption_key" in out  # says what else to keep

        target = tmp_path / "nightly.db"
        target.write_text("an older file")
        assert main(["--dir", str(install), "backup", str(target)]) == 1
        assert "--force" in capsys.readouterr().err
        assert target.read_text() == "an older file"

        assert main(["--dir", str(install), "backup", str(target), "--force"]) == 0
        assert stat.S_IMODE(target.stat().st_mode) == 0o600

        into = tmp_path / "elsewhere"  # a directory: the file is named there as by default
        into.mkdir()
        assert main(["--dir", str(install), "backup", str(into)]) == 0
        (named,) = into.iterdir()
        assert re.fullmatch(r"promptproxy-\d{8}T\d{6}Z\.db", named.name)
        assert admins(named) == [ADMIN_EMAIL]
    finally:
        os.umask(umask)
    assert admins(target) == [ADMIN_EMAIL]
    assert integrity(target) == [("ok",)]
    with contextlib.closing(sqlite3.connect(target)) as conn:  # one file: nothing needed beside it
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("nightly")) == ["nightly.db"]
    assert not list((install / "backups").glob(".*"))  # no partial copy left behind


@pytest.mark.sqlite
def test_a_backup_of_no_database_or_onto_the_database_itself_is_refused(install, tmp_path, capsys):
    assert main(["--dir", str(tmp_path / "empty"), "backup"]) == 1
    assert "No database at" in capsys.readouterr().err
    assert main(["--dir", str(install), "backup", str(install / "data.db"), "--force"]) == 1
    assert "is the database itself" in capsys.readouterr().err
    assert admins(install / "data.db") == [ADMIN_EMAIL]


# -- restore -----------------------------------------------------------------------

@pytest.mark.sqlite
@pytest.mark.slow
def test_restore_refuses_while_a_server_runs_on_the_data_dir(served, data_dir, tmp_path):
    server = served()  # python app.py serve
    backup_file = tmp_path / "taken.db"
    taken = app_py("backup", str(backup_file), data_dir=data_dir)
    assert taken.returncode == 0, taken.stderr
    database = (data_dir / "data.db").stat()

    refused = app_py("restore", str(backup_file), data_dir=data_dir)
    assert refused.returncode == 1
    assert f"PromptProxy is running on {data_dir}" in refused.stderr
    assert "stop it, then restore" in refused.stderr
    assert (data_dir / "data.db").stat().st_ino == database.st_ino
    assert not list(data_dir.glob("data.db.before-restore-*"))

    server.stop()
    restored = app_py("restore", str(backup_file), data_dir=data_dir)
    assert restored.returncode == 0, restored.stderr
    (kept,) = data_dir.glob("data.db.before-restore-*")
    assert kept.stat().st_ino == database.st_ino  # the replaced database, kept as it was


def not_sqlite(path):
    path.write_text("SQLite format 3? no, a note.\n" * 100)


def empty(path):
    path.touch()


def another_database(path):
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.commit()


def damaged_backup(path, install=None):
    assert main(["--dir", str(install), "backup", str(path)]) == 0
    with contextlib.closing(sqlite3.connect(path)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as file:  # a page in the middle overwritten
        file.seek(page_size * 5)
        file.write(b"\xff" * page_size)


@pytest.mark.parametrize("make, message", [
    (not_sqlite, "is not a readable SQLite database"),
    (empty, "is not a PromptProxy database"),
    (another_database, "is not a PromptProxy database (missing tables: apis, keys, models, prompts, requests, "
                       "users)"),
    (damaged_backup, "is damaged"),
], ids=["text", "empty", "another-database", "damaged"])
@pytest.mark.sqlite
def test_restore_refuses_a_file_that_is_not_a_sound_promptproxy_database(install, tmp_path, capsys, make, message):
    candidate = tmp_path / "candidate.db"
    if make is damaged_backup:
        make(candidate, install)
    else:
        make(candidate)
    original = candidate.read_bytes()
    before = sorted(p.name for p in install.iterdir())
    capsys.readouterr()

    assert main(["--dir", str(install), "restore", str(candidate)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(str(candidate)) and message in err
    assert sorted(p.name for p in install.iterdir()) == before  # nothing replaced, nothing left behind
    assert admins(install / "data.db") == [ADMIN_EMAIL]
    assert candidate.read_bytes() == original  # and the file itself untouched


@pytest.mark.sqlite
def test_restore_keeps_the_replaced_database_with_its_uncheckpointed_commits(install, tmp_path, capsys):
    backup_file = tmp_path / "taken.db"
    assert main(["--dir", str(install), "backup", str(backup_file)]) == 0

    # A server killed right after a commit: the commit is in data.db-wal, not yet in data.db.
    crashed = tmp_path / "crashed"
    shutil.copytree(install, crashed)
    with contextlib.closing(sqlite3.connect(install / "data.db")) as conn:
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("UPDATE _superusers SET email = 'after-the-backup@example.com'")
        conn.commit()
        for suffix in ("", "-wal", "-shm"):
            shutil.copy2(install / f"data.db{suffix}", crashed / f"data.db{suffix}")
    assert (crashed / "data.db-wal").stat().st_size > 0
    capsys.readouterr()

    assert main(["--dir", str(crashed), "restore", str(backup_file)]) == 0
    out = capsys.readouterr().out
    (kept,) = crashed.glob("data.db.before-restore-*[0-9]Z")
    assert f"kept as {kept}" in out
    assert not (crashed / "data.db-wal").exists() and not (crashed / "data.db-shm").exists()
    assert admins(crashed / "data.db") == [ADMIN_EMAIL]  # the backup's
    assert admins(kept) == ["after-the-backup@example.com"]  # the replaced one, its last commit included
    assert stat.S_IMODE((crashed / "data.db").stat().st_mode) == 0o600


@pytest.mark.sqlite
def test_restore_into_a_data_dir_without_the_secrets_says_to_put_them_back(install, tmp_path, capsys):
    backup_file = tmp_path / "taken.db"
    assert main(["--dir", str(install), "backup", str(backup_file)]) == 0
    capsys.readouterr()
    fresh = tmp_path / "fresh"
    assert main(["--dir", str(fresh), "restore", str(backup_file)]) == 0
    err = capsys.readouterr().err
    assert f"No {fresh / '.secret_key'} and no PROMPTPROXY_SECRET_KEY" in err
    assert f"No {fresh / '.encryption_key'} and no PROMPTPROXY_ENCRYPTION_KEY" in err
    assert admins(fresh / "data.db") == [ADMIN_EMAIL]


@pytest.mark.parametrize("command", [["backup"], ["restore", "taken.db"]], ids=["backup", "restore"])
def test_with_postgresql_backup_and_restore_say_to_use_pg_dump(data_dir, monkeypatch, capsys, command):
    monkeypatch.setenv("PROMPTPROXY_DATABASE_URL", "postgresql://promptproxy:pw-not-shown@127.0.0.1:5432/pp")
    monkeypatch.setenv("PROMPTPROXY_SECRET_KEY", "s" * 64)
    monkeypatch.setenv("PROMPTPROXY_ENCRYPTION_KEY", crypto.new_key())
    assert main(["--dir", str(data_dir), *command]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "pg_dump" in err and "pg_restore" in err
    assert "pw-not-shown" not in err
    assert not data_dir.exists()  # nothing made


# -- the README ----------------------------------------------------------------------

def readme_section(title):
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


@pytest.mark.sqlite
def test_the_readme_backup_commands_work(tmp_path):
    """The Backups section's `python app.py` lines, run as written from a directory
    with the default data dir, pb_data/."""
    section = readme_section("Backups")
    commands = [line for block in re.findall(r"```sh\n(.*?)```", section, re.S)
                for line in block.splitlines() if line.startswith("python app.py ")]
    assert [shlex.split(c, comments=True)[2] for c in commands] == ["backup", "backup", "restore"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPROXY_")}

    def run(argv):
        result = subprocess.run([sys.executable, str(ROOT / "app.py"), *argv], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (argv, result.stderr)
        return result

    run(["superuser", "create", ADMIN_EMAIL, ADMIN_PASSWORD])
    for command in commands:
        run(shlex.split(command, comments=True)[2:])
    data_dir = tmp_path / "pb_data"
    assert len(list((data_dir / "backups").glob("promptproxy-*.db"))) == 1
    assert len(list(data_dir.glob("data.db.before-restore-*"))) == 1
    assert admins(data_dir / "data.db") == [ADMIN_EMAIL]
    assert "pg_dump" in section and "PROMPTPROXY_DATABASE_URL" in section
    for name in SECRETS:
        assert name in section


@pytest.mark.postgresql
@pytest.mark.slow
def test_the_readme_pg_dump_and_pg_restore_commands_copy_a_promptproxy_database(postgres_cluster, tmp_path):
    """The Backups section's PostgreSQL lines, run as written: a dump of one
    PromptProxy database restored into an empty one."""
    lines = [line.split("   #")[0] for line in readme_section("Backups").splitlines()
             if line.startswith(("pg_dump ", "pg_restore "))]
    assert [line.split()[0] for line in lines] == ["pg_dump", "pg_restore"]
    source, copy = postgres_cluster.new_database(), postgres_cluster.new_database()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPROXY_")}
        env.update(PROMPTPROXY_DATABASE_URL=source, PROMPTPROXY_SECRET_KEY="s" * 64,
                   PROMPTPROXY_ENCRYPTION_KEY=crypto.new_key())
        created = subprocess.run([sys.executable, str(ROOT / "app.py"), "--dir", str(tmp_path / "pb_data"),
                                  "superuser", "create", ADMIN_EMAIL, ADMIN_PASSWORD],
                                 env=env, capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        dumped = subprocess.run(lines[0], shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=60)
        assert dumped.returncode == 0, dumped.stderr
        restored = subprocess.run(lines[1], shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                                  env={**env, "PROMPTPROXY_DATABASE_URL": copy})
        assert restored.returncode == 0, restored.stderr
        with psycopg.connect(copy) as conn:
            assert conn.execute("SELECT email FROM _superusers").fetchall() == [(ADMIN_EMAIL,)]
    finally:
        postgres_cluster.drop_database(source)
        postgres_cluster.drop_database(copy)
