"""Shared fixtures: a fresh app on a temporary data directory, an admin logged
in through the real forms, and a REST API token."""

import re

import pytest

from promptproxy import create_app, superusers
from promptproxy.db import db

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
    app.extensions["promptproxy.recorder"].stop()
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
        from promptproxy import records
        from promptproxy.collections import BY_NAME

        with db.connection_context():
            row, revealed = records.save(BY_NAME[collection], data)
        return revealed.get("key") if collection == "keys" else row

    def update(self, collection, row, **data):
        from promptproxy import records
        from promptproxy.collections import BY_NAME

        with db.connection_context():
            return records.save(BY_NAME[collection], data, row=row)[0]

    def client(self, key=None, **kwargs):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=key or self.key, max_retries=0,
                             timeout=kwargs.pop("timeout", 20), **kwargs)

    def rows(self, expected):
        """The request rows, once `expected` of them have been written."""
        from promptproxy.collections import BY_NAME

        recorder = self.app.extensions["promptproxy.recorder"]
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


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """PromptProxy run as its users run it, in its own process. Waits for
    /api/health (polling a readiness probe, with a deadline), and always stops it."""

    def __init__(self, argv, port, env=None, cwd=None):
        import os
        import subprocess
        import sys

        self.url = f"http://127.0.0.1:{port}"
        self.log_path = None
        full_env = {**os.environ, **(env or {})}
        full_env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + full_env.get("PATH", "")
        self.process = subprocess.Popen(argv, env=full_env, cwd=cwd or ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.output = b""

    def wait_ready(self, timeout=20):
        import time

        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.process.stdout.read().decode()}")
            try:
                if requests.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)  # readiness polling, bounded by the deadline
        raise AssertionError("server did not become ready")

    def stop(self):
        """SIGTERM, as Docker and systemd stop it; returns everything it printed."""
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self.output += out or b""
        return self.output.decode(errors="replace")


ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture
def served(data_dir):
    """Start `python app.py serve` (gevent) on a free port over `data_dir`."""
    import sys

    started = []

    def start(extra_env=None):
        port = free_port()
        env = {"PROMPTPROXY_CATALOG_TTL": "0", **(extra_env or {})}
        server = ServerProcess([sys.executable, "app.py", "serve", "--http", f"127.0.0.1:{port}",
                                "--dir", str(data_dir)], port, env=env)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()
