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
    app = create_app({"DATA_DIR": str(data_dir)})
    app.config["TESTING"] = True
    yield app
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
