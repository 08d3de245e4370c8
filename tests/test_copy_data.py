"""`python app.py copy-data --to URL`: a SQLite install moved into another,
empty database keeps its admins, gateway keys, api keys, records with their ids,
request rows and dashboard figures.

The source is always a SQLite install as a user has it, whatever database the
run uses: `data_dir` below removes the run's PostgreSQL settings before the app is
built. The destination is a fresh database of the test cluster (PostgreSQL runs)
or a data.db in another directory (SQLite runs)."""

import datetime as dt
import re
import subprocess
import sys

import openai
import pytest
import requests as http

from promptproxy import declared_models, stop
from promptproxy.accounting import stats
from promptproxy.collections import BY_NAME
from promptproxy.config import SECRET_FILES
from promptproxy.data import copy
from promptproxy.data.db import db, make_database, open_database

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, UPSTREAM_SECRET, make_admin
from .postgres import SELECTED as ON_POSTGRESQL
from .servers import ROOT, free_port, running, server_env


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A SQLite install's data directory: without the run's PostgreSQL settings."""
    for name in ("PROMPTPROXY_DATABASE_URL", *SECRET_FILES):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "pb_data"


@pytest.fixture
def destination(request, tmp_path):
    """An empty database to copy into, as the URL `--to` takes; dropped after."""
    if not ON_POSTGRESQL:
        yield f"sqlite:///{tmp_path / 'copy' / 'data.db'}"
        return
    cluster = request.getfixturevalue("postgres_cluster")
    url = cluster.new_database()
    yield url
    cluster.drop_database(url)


def copy_data(data_dir, url):
    """`python app.py copy-data --to URL` as a user runs it, on `data_dir`."""
    return subprocess.run([sys.executable, "app.py", "copy-data", "--to", url], cwd=ROOT,
                          env=server_env(data_dir), capture_output=True, text=True, timeout=120)


def secrets_of(data_dir):
    """The secrets a server on the copy is given: the data directory's files."""
    return {name: (data_dir / filename).read_text().strip() for name, filename in SECRET_FILES.items()}


def table_contents(database):
    """{table: every row, as its fields read it}, in primary-key order."""
    contents = {}
    for model in copy.tables(declared_models()):
        query = model.select().order_by(*model._meta.get_primary_keys()).tuples()
        contents[model._meta.table_name] = list(query.execute(database))
    return contents


def call_through(gateway):
    """Calls of every kind through the proxy: each leaves one request row."""
    client = gateway.client()
    assert client.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "hello there"}]).choices[0].message.content
    stream = client.chat.completions.create(model="gpt:pirate", stream=True,
                                            messages=[{"role": "user", "content": "a b c"}])
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    client.completions.create(model="llama3:8b", prompt="complete this")
    gateway.upstream.script(status=429)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "again"}])
    return 4


def test_every_table_is_copied_value_for_value_across_pages(gateway, destination):
    """Pages of two rows, so every table with more (the request rows, the rollup
    with its five-column key) is read and written in several pages."""
    make_admin()
    ann = gateway.create("users", name="Ann \u00e9\u6f22 \U0001f600", rpm=2 ** 62, notes="line\nbreak")
    with db.connection_context():  # a NUL an older PromptProxy stored (records refuse one now)
        db.execute_sql(f"UPDATE users SET notes = {db.param} WHERE id = {db.param}", ("line\nbreak\x00nul", ann.id))
    with db.connection_context():
        key = BY_NAME["keys"].model.get()
    gateway.update("keys", key, tpm=2 ** 63 - 1, expires="2031-02-03 04:05:06.789012")
    rows = gateway.rows(call_through(gateway))
    assert any(row.request_body for row in rows)  # the key is tracked: JSON bodies are copied too
    source = db.obj
    before = table_contents(source)
    assert all(before[name] for name in ("_superusers", "_request_stats", "users", "keys", "apis",
                                         "models", "prompts", "requests", "_meta"))
    bodies = "SELECT id, request_body, response_body FROM requests ORDER BY id"
    stored_bodies = source.execute_sql(bodies).fetchall()

    reported = []
    total = copy.copy_data(source, destination, declared_models(), page=2,
                           on_table=lambda *line: reported.append(line))

    assert total == sum(len(table) for table in before.values())
    nul_replaced = 1 if ON_POSTGRESQL else 0  # PostgreSQL's text cannot hold NUL: U+FFFD instead
    assert reported == [(name, len(table), nul_replaced if name == "users" else 0)
                        for name, table in before.items()]
    copied = make_database({"DATABASE_URL": destination} if ON_POSTGRESQL else
                           {"DATA_DIR": destination.removeprefix(copy.SQLITE).removesuffix("/data.db")})
    try:
        after = table_contents(copied)
        assert copied.execute_sql(bodies).fetchall() == stored_bodies  # JSON text, character for character
    finally:
        copied.close()
    if ON_POSTGRESQL:
        before = {table: [tuple(value.replace("\x00", "\ufffd") if isinstance(value, str) else value
                                for value in row) for row in rows] for table, rows in before.items()}
    assert after == before
    key = dict(zip([field.name for field in BY_NAME["keys"].model._meta.sorted_fields], after["keys"][0]))
    assert key["tpm"] == 2 ** 63 - 1 and key["expires"] == dt.datetime(2031, 2, 3, 4, 5, 6, 789012)
    assert key["active"] is True and key["track"] is True


@pytest.mark.postgresql
@pytest.mark.slow
def test_an_install_moved_to_postgresql_keeps_logins_keys_rows_and_figures(gateway, destination, data_dir,
                                                                           tmp_path):
    make_admin()
    calls = call_through(gateway)
    source_ids = sorted(row.id for row in gateway.rows(calls))
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    figures = stats.summary("30d", now=now)
    assert figures["totals"]["requests"] == calls and figures["totals"]["errors"] == 1
    stop(gateway.app)  # the old server stopped, as before any move

    done = copy_data(data_dir, destination)

    assert done.returncode == 0, done.stderr
    assert re.search(r"^  requests +4 rows$", done.stdout, re.MULTILINE), done.stdout
    for name, filename in SECRET_FILES.items():  # where the secrets are, never what they are
        assert f"{name} set to the contents of {(data_dir / filename).resolve()}" in done.stdout
        assert secrets_of(data_dir)[name] not in done.stdout + done.stderr
    open_database({"DATABASE_URL": destination})  # this process's data layer, on the copy
    requests_model = BY_NAME["requests"].model
    with db.connection_context():
        assert sorted(row.id for row in requests_model.select(requests_model.id)) == source_ids
        assert stats.summary("30d", now=now) == figures
    db.close_all()

    elsewhere = tmp_path / "new_instance"  # nothing of the old data directory but its two secrets
    port = free_port()
    env = server_env(elsewhere, PROMPTPROXY_DATABASE_URL=destination, PROMPTPROXY_CATALOG_TTL="0",
                     **secrets_of(data_dir))
    with running([sys.executable, "app.py", "serve", "--http", f"127.0.0.1:{port}"], env,
                 tmp_path / "server.log") as server:
        base = f"http://127.0.0.1:{port}"
        server.wait_healthy(base)
        login = http.post(base + "/api/collections/_superusers/auth-with-password",
                          json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, timeout=10)
        assert login.status_code == 200, login.text
        models = http.get(base + "/v1/models", headers={"Authorization": f"Bearer {gateway.key}"}, timeout=10)
        assert models.status_code == 200, models.text
        assert {"gpt", "llama3:8b"} <= {model["id"] for model in models.json()["data"]}
        gateway.upstream.reset()
        client = openai.OpenAI(base_url=base + "/v1", api_key=gateway.key, max_retries=0, timeout=20)
        answer = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "after the move"}])
        assert answer.choices[0].message.content == "echo: after the move"
        assert gateway.upstream.requests[0].headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"
        server.stop()  # writes the call's row before it exits
    with db.connection_context():
        assert requests_model.select().count() == calls + 1


@pytest.mark.postgresql
def test_copy_refuses_a_destination_that_holds_data(app, data_dir, destination):
    make_admin()
    copy.copy_data(db.obj, destination, declared_models())

    again = copy_data(data_dir, destination)

    assert again.returncode == 1
    (line,) = again.stderr.splitlines()
    assert "already holds data (rows in _superusers" in line and "only fills an empty database" in line


def test_an_unreachable_destination_is_one_line_without_the_password(app, data_dir):
    make_admin()
    password = "Tr0ub4dor&3-not-shown"
    url = f"postgresql://promptproxy:{password}@127.0.0.1:{free_port()}/promptproxy"

    done = copy_data(data_dir, url)

    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("copy-data: cannot reach postgresql://promptproxy:***@127.0.0.1:"), line
    assert "Connection refused" in line
    assert password not in done.stdout + done.stderr


def test_copy_needs_an_install_to_copy(data_dir):
    done = copy_data(data_dir, "postgresql://promptproxy@127.0.0.1:1/promptproxy")

    assert done.returncode == 1
    assert done.stderr.strip() == (f"copy-data: nothing to copy, there is no {data_dir.resolve() / 'data.db'} "
                                   "(name the data directory with --dir).")
    assert not data_dir.exists()


def test_the_masked_url_hides_every_spelling_of_the_password():
    url = "postgresql://pp:p%40ss@db:5432/promptproxy?sslmode=require&password=other"
    assert copy.masked(url) == "postgresql://pp:***@db:5432/promptproxy?sslmode=require&password=***"
    assert copy.reason(RuntimeError(f"bad {url}: p@ss other\nsecond line"), url) == \
        "bad postgresql://pp:***@db:5432/promptproxy?sslmode=require&password=***: *** ***"
    assert copy.masked("sqlite:////srv/pb_data/data.db") == "sqlite:////srv/pb_data/data.db"
    assert copy.masked("postgresql://pp@db/promptproxy") == "postgresql://pp@db/promptproxy"
