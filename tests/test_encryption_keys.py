"""Stored upstream API keys and the encryption key: an api key that cannot be
decrypted is an error the admin sees and the call reports, never an empty key sent
upstream; the encryption key can be rotated."""

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from promptproxy import create_app
from promptproxy.auth import superusers
from promptproxy.data import crypto
from promptproxy.data.db import db
from promptproxy.services import services

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, ApiClient, csrf_token, make_admin
from .servers import server_env

ROOT = Path(__file__).resolve().parents[1]
FIRST_KEY, SECOND_KEY, OTHER_KEY = (Fernet.generate_key().decode() for _ in range(3))
UPSTREAM_KEY = "sk-upstream-rotated-0123456789abcdef"


@pytest.fixture
def start(data_dir, monkeypatch):
    """create_app on `data_dir` with PROMPTPROXY_ENCRYPTION_KEY set to `key`; the previous
    app's recorder is stopped, as a restart would."""
    apps = []

    def start(key):
        if apps:
            services(apps[-1]).recorder.stop()
            db.close()
        monkeypatch.setenv("PROMPTPROXY_ENCRYPTION_KEY", key)
        app = create_app({"DATA_DIR": str(data_dir), "CATALOG_TTL": 0})
        app.config["TESTING"] = True
        apps.append(app)
        return app
    yield start
    if apps:
        services(apps[-1]).recorder.stop()
    db.close()


def rest(app):
    client = app.test_client()
    make_admin()
    token = client.post("/api/collections/_superusers/auth-with-password",
                        json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).json["token"]
    return ApiClient(client, token)


def provision(app, upstream, name="Local"):
    """A user, a key, an api with an upstream key and a model, through the REST API."""
    api = rest(app)
    user = api.create("users", name="Tom")
    key = api.create("keys", user=user["id"])["key"]
    upstream_api = api.create("apis", name=name, base_url=upstream.base_url, api_key=UPSTREAM_KEY)
    api.create("models", api=upstream_api["id"], model="gpt-4o-mini", name="gpt")
    return key, upstream_api


def chat(app, key):
    return app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                  json={"model": "gpt", "messages": [{"role": "user", "content": "Hi"}]})


def rows(app, expected):
    from promptproxy.collections import BY_NAME

    recorder = services(app).recorder
    assert recorder.wait_for(expected, timeout=10)
    with db.connection_context():
        return list(BY_NAME["requests"].model.select())


def test_an_api_key_that_cannot_be_decrypted_is_shown_and_refused(start, upstream):
    key, upstream_api = provision(start(FIRST_KEY), upstream)
    app = start(OTHER_KEY)  # the encryption key was lost or changed

    refused = chat(app, key)
    assert refused.status_code == 500
    message = refused.json["error"]["message"]
    assert "'Local'" in message and "cannot be decrypted" in message
    assert upstream.base_url not in message and UPSTREAM_KEY not in message
    anthropic = app.test_client().post(
        "/v1/messages", headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        json={"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]})
    assert anthropic.status_code == 500 and anthropic.json["type"] == "error"
    assert "'Local'" in anthropic.json["error"]["message"]
    assert upstream.requests == []  # nothing was sent without its key
    assert [(row.status, row.api) for row in rows(app, 2)] == [(500, upstream_api["id"])] * 2
    assert all("'Local'" in row.error for row in rows(app, 2))

    admin = app.test_client()
    form = csrf_token(admin, "/_/login")
    admin.post("/_/login", data={"csrf_token": form, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    for page in ("/_/apis/", f"/_/apis/details/?id={upstream_api['id']}"):
        assert "cannot be decrypted" in admin.get(page).get_data(as_text=True)

    # Typed again, the key works.
    rest(app).patch(f"/api/collections/apis/records/{upstream_api['id']}", json={"api_key": UPSTREAM_KEY})
    assert chat(app, key).status_code == 200
    assert upstream.requests[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "cannot be decrypted" not in admin.get("/_/apis/").get_data(as_text=True)


def rotate(data_dir, key):
    return subprocess.run([sys.executable, "app.py", "encryption", "rotate", "--dir", str(data_dir)],
                          cwd=ROOT, env=server_env(data_dir, PROMPTPROXY_ENCRYPTION_KEY=key),
                          capture_output=True, text=True, timeout=60)


def test_rotating_the_encryption_key(start, upstream, data_dir):
    key, _ = provision(start(FIRST_KEY), upstream)
    with db.connection_context():  # an admin's kept playground key, encrypted with the first key too
        superusers.keep_playground_key(superusers.Superuser.get(), crypto.encrypt("pp-kept-playground-key"))
    rest(start(OTHER_KEY)).create("apis", name="Lost", base_url=upstream.base_url, api_key="sk-lost-0123456789")

    # The new key first, the old one after it: keys made with the old one still decrypt.
    app = start(f"{SECOND_KEY},{FIRST_KEY}")
    assert chat(app, key).status_code == 200
    assert upstream.requests[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"

    done = rotate(data_dir, f"{SECOND_KEY},{FIRST_KEY}")
    assert done.returncode == 1  # one api key is encrypted with a key that is not listed
    assert "Re-encrypted 1 API key(s)" in done.stdout
    assert "'Lost'" in done.stderr and "type it again" in done.stderr
    assert "sk-lost" not in done.stdout + done.stderr

    app = start(SECOND_KEY)  # the old key dropped: the rotated api key still works
    assert chat(app, key).status_code == 200
    with db.connection_context():
        assert crypto.decrypt_stored(superusers.Superuser.get().playground_key) == "pp-kept-playground-key"
    assert upstream.requests[-1].headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    rest(app).delete(f"/api/collections/apis/records/{_api_id(app, 'Lost')}")
    assert rotate(data_dir, SECOND_KEY).returncode == 0


def _api_id(app, name):
    from promptproxy.collections import BY_NAME

    with db.connection_context():
        model = BY_NAME["apis"].model
        return model.get(model.name == name).id
