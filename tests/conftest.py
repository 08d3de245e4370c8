"""Shared fixtures: a fresh app on a temporary data directory, an admin logged
in through the real forms, and a REST API token.

The suite runs on SQLite by default; with PROMPTPROXY_TEST_DATABASE=postgresql,
every test that has a temporary directory (so every test that builds an app or
starts a server) gets a fresh PostgreSQL database of its own, through the same
settings a user gives (see tests/postgres.py). Tests about SQLite's files are
marked `sqlite` and skipped there."""

import re

import pytest

from promptproxy import create_app, stop
from promptproxy.auth import superusers
from promptproxy.data.db import db
from promptproxy.services import services

from .postgres import SELECTED as ON_POSTGRESQL


def pytest_collection_modifyitems(config, items):
    """`sqlite` tests run only on SQLite, `postgresql` ones only on PostgreSQL."""
    other = "sqlite" if ON_POSTGRESQL else "postgresql"
    skip = pytest.mark.skip(reason=f"only on {other}; this run is on {'postgresql' if ON_POSTGRESQL else 'sqlite'}")
    for item in items:
        if other in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def postgres_cluster():
    """A PostgreSQL server of its own for the test run (see tests/postgres.py)."""
    from .postgres import Cluster

    cluster = Cluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def shared_secrets():
    """The secrets every instance on one PostgreSQL database is given."""
    import secrets

    from promptproxy.data import crypto

    return {"PROMPTPROXY_SECRET_KEY": secrets.token_urlsafe(48), "PROMPTPROXY_ENCRYPTION_KEY": crypto.new_key()}


@pytest.fixture(scope="session")
def test_databases(postgres_cluster):
    """The database the tests use in turn, emptied after each (see Cluster.emptied)."""
    current = [postgres_cluster.new_database()]
    yield current
    postgres_cluster.drop_database(current[0])


@pytest.fixture(autouse=True)
def database_url(request, monkeypatch):
    """On PostgreSQL: an empty database for this test, in the environment as a
    user sets it (with the shared secrets). None on SQLite."""
    if not ON_POSTGRESQL or "tmp_path" not in request.fixturenames:
        yield None
        return
    cluster = request.getfixturevalue("postgres_cluster")
    current = request.getfixturevalue("test_databases")
    monkeypatch.setenv("PROMPTPROXY_DATABASE_URL", current[0])
    for name, value in request.getfixturevalue("shared_secrets").items():
        monkeypatch.setenv(name, value)
    yield current[0]
    if db.obj is not None:  # the test built an app
        if not db.is_closed():
            db.close()
        close_all = getattr(db.obj, "close_all", None)
        if close_all:
            close_all()
    current[0] = cluster.emptied(current[0])

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct horse battery"


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "pb_data"


@pytest.fixture
def app(data_dir):
    # Catalog TTL 0: every admin edit reaches the proxy on its next call, so
    # tests need no waiting (the TTL itself is tested with a fake clock).
    app = create_app({"DATA_DIR": str(data_dir), "CATALOG_TTL": 0})
    app.config["TESTING"] = True
    yield app
    stop(app)
    if not db.is_closed():
        db.close()


@pytest.fixture
def client(app):
    return app.test_client()


def csrf_token(client, url):
    """The CSRF token from the form on `url`, as a browser would submit it."""
    html = client.get(url).get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or \
        re.search(r'value="([^"]+)"[^>]*name="csrf_token"', html)
    assert match, f"no CSRF token on {url}"
    return match.group(1)


def make_admin(email=ADMIN_EMAIL, password=ADMIN_PASSWORD):
    with db.connection_context():
        return superusers.upsert(email, password)[0]


@pytest.fixture
def admin(app, client):
    """A logged-in admin session on `client`."""
    make_admin()
    token = csrf_token(client, "/_/login")
    response = client.post("/_/login", data={"csrf_token": token, "email": ADMIN_EMAIL,
                                             "password": ADMIN_PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


@pytest.fixture
def api(app, client):
    """A client that sends a superuser token with every REST API call."""
    make_admin()
    response = client.post("/api/collections/_superusers/auth-with-password",
                           json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert response.status_code == 200, response.json
    return ApiClient(client, response.json["token"])


class ApiClient:
    def __init__(self, client, token):
        self.client, self.token = client, token

    def __getattr__(self, method):
        def call(url, **kwargs):
            headers = {"Authorization": self.token, **kwargs.pop("headers", {})}
            return getattr(self.client, method)(url, headers=headers, **kwargs)
        return call

    def create(self, collection, **data):
        response = self.post(f"/api/collections/{collection}/records", json=data)
        assert response.status_code == 200, response.json
        return response.json


@pytest.fixture
def upstream():
    """A real OpenAI-speaking HTTP server on 127.0.0.1, stopped after the test."""
    from .upstream import FakeUpstream

    with FakeUpstream() as server:
        yield server


@pytest.fixture
def live_server(app):
    """PromptProxy itself on a real socket (a threaded WSGI server in this process,
    so tests can flush and inspect its request rows directly)."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


UPSTREAM_SECRET = "sk-upstream-" + "s3cr3t" * 6


class Gateway:
    """A provisioned PromptProxy: records created through the same code the admin
    uses, a user's key, and the official SDK pointed at the proxy."""

    def __init__(self, app, url, upstream):
        self.app, self.url, self.upstream = app, url, upstream

    def create(self, collection, **data):
        from promptproxy.collections import BY_NAME
        from promptproxy.data import records

        with db.connection_context():
            row, revealed = records.save(BY_NAME[collection], data)
        return revealed.get("key") if collection == "keys" else row

    def update(self, collection, row, **data):
        from promptproxy.collections import BY_NAME
        from promptproxy.data import records

        with db.connection_context():
            return records.save(BY_NAME[collection], data, row=row)[0]

    def client(self, key=None, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=key or self.key, max_retries=0,
                             timeout=kwargs.pop("timeout", 20), **kwargs)

    def rows(self, expected):
        """The request rows, once `expected` of them have been written."""
        from promptproxy.collections import BY_NAME

        recorder = services(self.app).recorder
        assert recorder.wait_for(expected, timeout=10), f"only {recorder.written} rows written"
        with db.connection_context():
            model = BY_NAME["requests"].model
            return list(model.select().order_by(model.created, model.id))


@pytest.fixture
def gateway(app, live_server, upstream):
    gw = Gateway(app, live_server, upstream)
    gw.user = gw.create("users", name="Tom", email="tom@example.com")
    gw.key = gw.create("keys", user=gw.user.id, label="sdk", track=True)
    gw.api = gw.create("apis", name="Local", base_url=upstream.base_url, api_key=UPSTREAM_SECRET,
                       timeout=5)
    gw.model = gw.create("models", api=gw.api.id, model="gpt-4o-mini", name="gpt")
    gw.llama = gw.create("models", api=gw.api.id, model="llama3:8b", name="llama3:8b")
    gw.prompt = gw.create("prompts", name="pirate", instructions="Talk like a pirate.")
    return gw


@pytest.fixture
def served(data_dir, tmp_path):
    """Start `python app.py serve` (gevent) on a free port over `data_dir`; the
    returned server has .url, .stop() (SIGTERM, returns its log) and .log()."""
    import contextlib
    import sys

    from .servers import free_port, running, server_env

    with contextlib.ExitStack() as stack:
        def start(argv=None, **env):
            port = free_port()
            argv = argv or [sys.executable, "app.py", "serve", "--http", f"127.0.0.1:{port}"]
            argv = [a.replace("{port}", str(port)) for a in argv]
            server = stack.enter_context(running(
                argv, server_env(data_dir, **{"PROMPTPROXY_CATALOG_TTL": "0", **env}),
                tmp_path / f"server-{port}.log"))
            server.url = f"http://127.0.0.1:{port}"
            server.wait_healthy(server.url)
            return server
        yield start
