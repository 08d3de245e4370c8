"""Gateway keys are stored as a keyed hash (HMAC under a key derived from the server's
secret): a leaked database gives nothing to test guesses against, and a key of
one's own keeps no character in clear. Keys stored the old way still work."""

import contextlib
import hashlib
import json
import sqlite3
import urllib.error
import urllib.request

import pytest

from promptproxy.collections import BY_NAME
from promptproxy.data import crypto
from promptproxy.data.db import db

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, ApiClient, csrf_token
from .test_migrations import OLD_ENCRYPTION_KEY, OLD_ENV, OLD_SECRET, old_database

OLD_GENERATED = "pp-0zXNIsIQEkFZGJR6qBpqYENWxEk8ndJyI3RjNBSX"  # see the fixture's header
OLD_PASTED = "my-own-gateway-key-0123"
OWN_KEY = "zq9-own-gateway-key-XYZW12"


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def models_status(base, key):
    request = urllib.request.Request(base + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def stored_keys(data_dir):
    with contextlib.closing(sqlite3.connect(data_dir / "data.db")) as conn:
        return {label: (key, prefix, legacy) for label, key, prefix, legacy in
                conn.execute("SELECT label, key, key_prefix, key_legacy FROM keys")}


@pytest.mark.sqlite  # a data.db made by an older PromptProxy
def test_keys_from_before_keyed_digests_still_work_and_are_rehashed_on_first_use(data_dir, served):
    old_database(data_dir)
    server = served(**OLD_ENV)
    before = stored_keys(data_dir)
    assert before["generated"] == (sha256(OLD_GENERATED), "pp-0zXNIsI", 1)
    assert before["pasted"] == (sha256(OLD_PASTED), None, 1)  # the migration blanked "my-own-gat"

    for key in (OLD_GENERATED, OLD_PASTED):
        status, listing = models_status(server.url, key)
        assert status == 200 and [m["id"] for m in listing["data"]] == ["gpt"]

    crypto.init(OLD_ENCRYPTION_KEY, OLD_SECRET)
    after = stored_keys(data_dir)
    assert after["generated"] == (crypto.digest(OLD_GENERATED), "pp-0zXNIsI", 0)
    assert after["pasted"] == (crypto.digest(OLD_PASTED), None, 0)
    for key in (OLD_GENERATED, OLD_PASTED):  # found by their new digest from now on
        assert models_status(server.url, key)[0] == 200
    assert models_status(server.url, OLD_GENERATED[:-1] + "x")[0] == 401


def test_the_stored_value_is_not_the_keys_sha256(api, client, data_dir):
    user = api.create("users", name="Tom")
    generated = api.create("keys", user=user["id"], label="made")["key"]
    api.create("keys", user=user["id"], label="mine", key=OWN_KEY)
    keys = BY_NAME["keys"].model
    with db.connection_context():
        stored = {row.key for row in keys.select(keys.key)}
    assert len(stored) == 2 and not stored & {sha256(generated), sha256(OWN_KEY)}
    for key in (generated, OWN_KEY):
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    # A database with the same rows under another server secret accepts neither key.
    crypto.init(OLD_ENCRYPTION_KEY, "another server's secret " * 3)
    assert not stored & {crypto.digest(generated), crypto.digest(OWN_KEY)}


def test_a_key_of_ones_own_keeps_no_character_in_clear(admin):
    client = admin  # logged in to the admin pages, and holding a REST token
    token = client.post("/api/collections/_superusers/auth-with-password",
                        json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).json["token"]
    api = ApiClient(client, token)
    user = api.create("users", name="Tom")
    own = api.create("keys", user=user["id"], label="mine", key=OWN_KEY)
    assert own["key"] == OWN_KEY and own["key_prefix"] == ""
    assert api.get(f"/api/collections/keys/records/{own['id']}").json["key_prefix"] == ""
    generated = api.create("keys", user=user["id"], label="made")
    assert generated["key_prefix"] == generated["key"][:10]  # "pp-" and 7 random characters

    listing = client.get("/_/keys/").get_data(as_text=True)
    details = client.get(f"/_/keys/details/?id={own['id']}").get_data(as_text=True)
    for page in (listing, details):
        assert "••••" in page
        for part in (OWN_KEY[:3], OWN_KEY[-3:], OWN_KEY[3:10]):
            assert part not in page
    assert generated["key"][:10] + "…" in listing


def test_form_created_key_of_ones_own_shows_no_prefix(admin, app):
    from promptproxy.collections import BY_NAME
    from promptproxy.data import records
    from promptproxy.data.db import db

    with db.connection_context():
        user, _ = records.save(BY_NAME["users"], {"name": "Ann"})
    url = "/_/keys/new/"
    response = admin.post(url, data={"csrf_token": csrf_token(admin, url), "user": user.id,
                                     "label": "form", "key": OWN_KEY, "active": "y"})
    assert response.status_code == 302
    with db.connection_context():
        row = BY_NAME["keys"].model.get(BY_NAME["keys"].model.label == "form")
    assert row.key_prefix is None and row.key == crypto.digest(OWN_KEY)
