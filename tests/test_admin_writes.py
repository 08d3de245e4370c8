"""Every admin write goes through records.py: the list's bulk "Delete" obeys the same
rules as the delete button, request rows are read-only everywhere, and a failed
form keeps the secret that was typed into it."""

import re

import openai
import pytest

from promptproxy.collections import BY_NAME
from promptproxy.data import crypto
from promptproxy.data.db import db

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, csrf_token
from .test_admin_collections import UPSTREAM_KEY, only_row, submit


def bulk_delete(client, collection, *ids):
    """The list's "With selected → Delete", as the browser posts it."""
    token = csrf_token(client, f"/_/{collection}/")
    return client.post(f"/_/{collection}/action/", data={
        "csrf_token": token, "action": "delete", "rowid": list(ids)}, follow_redirects=True)


def count(collection):
    with db.connection_context():
        return BY_NAME[collection].model.select().count()


def test_bulk_deleted_key_is_refused_on_the_next_call(gateway, admin):
    client = gateway.client()
    reply = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    with db.connection_context():
        key = BY_NAME["keys"].model.get()
    page = bulk_delete(admin, "keys", key.id).get_data(as_text=True)
    assert f"Deleted key {BY_NAME['keys'].title(key)}" in page
    assert count("keys") == 0
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])


def test_bulk_delete_refuses_what_others_use(gateway, admin):
    gateway.create("users", name="Ann", models=[gateway.model.id])  # an allow-list names the model
    with db.connection_context():
        model_users = BY_NAME["models"].model.select().count()
    page = bulk_delete(admin, "apis", gateway.api.id).get_data(as_text=True)
    assert "Cannot delete api Local: still used by models" in page
    page = bulk_delete(admin, "users", gateway.user.id).get_data(as_text=True)
    assert "Cannot delete user Tom: still used by keys" in page
    page = bulk_delete(admin, "models", gateway.model.id, gateway.llama.id).get_data(as_text=True)
    assert "Cannot delete model gpt: still used by users (<a href=" in page
    assert "Deleted model llama3:8b" in page  # the model no one names went
    assert "successfully deleted" not in page
    assert (count("apis"), count("users"), count("models")) == (1, 2, model_users - 1)


def test_request_rows_cannot_be_deleted_anywhere(gateway, admin, client):
    gateway.client().chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    row = gateway.rows(1)[0]
    token = client.post("/api/collections/_superusers/auth-with-password",
                        json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).json["token"]
    response = client.delete(f"/api/collections/requests/records/{row.id}", headers={"Authorization": token})
    assert response.status_code == 403
    assert response.json == {"status": 403, "message": "Records of requests are written by PromptProxy only.",
                             "data": {}}
    listing = admin.get("/_/requests/").get_data(as_text=True)
    assert "/_/requests/delete/" not in listing and 'data-action="delete"' not in listing
    admin.post("/_/requests/delete/", data={"csrf_token": csrf_token(admin, "/_/requests/"), "id": row.id})
    bulk_delete(admin, "requests", row.id)
    assert count("requests") == 1


def kept_field(page):
    match = re.search(r'name="api_key_kept"[^>]*value="([^"]*)"', page) or \
        re.search(r'value="([^"]*)"[^>]*name="api_key_kept"', page)
    return match.group(1) if match else ""


def test_failed_apis_form_keeps_the_typed_key_without_showing_it(admin):
    url = "/_/apis/new/"
    token = csrf_token(admin, url)
    form = {"csrf_token": token, "name": "OpenAI", "protocol": "openai", "timeout": "30", "active": "y"}
    page = admin.post(url, data={**form, "base_url": "ftp://nowhere", "api_key": UPSTREAM_KEY}).get_data(as_text=True)
    assert "Must be an http:// or https:// URL" in page
    assert UPSTREAM_KEY not in page and UPSTREAM_KEY[-12:] not in page
    assert "The key you typed is kept (not shown)" in page
    assert count("apis") == 0

    done = admin.post(url, data={**form, "base_url": "https://api.openai.com/v1", "api_key": "",
                                 "api_key_kept": kept_field(page)}, follow_redirects=True)
    assert done.status_code == 200
    assert crypto.decrypt(only_row("apis").api_key) == UPSTREAM_KEY


def test_a_kept_key_is_only_taken_from_its_own_field(admin):
    stolen = crypto.encrypt("sk-from-somewhere-else-entirely")  # e.g. another api's stored value
    submit(admin, "apis", {"name": "X", "base_url": "https://x.example/v1", "protocol": "openai",
                           "timeout": "30", "api_key_kept": stolen})
    assert only_row("apis").api_key is None


def test_a_typed_key_replaces_the_kept_one_on_edit(admin):
    submit(admin, "apis", {"name": "X", "base_url": "https://x.example/v1", "protocol": "openai",
                           "timeout": "30", "api_key": "sk-first-" + "1" * 20})
    api = only_row("apis")
    url = f"/_/apis/edit/?id={api.id}"
    form = {"csrf_token": csrf_token(admin, url), "name": "X", "protocol": "openai", "timeout": "30"}
    page = admin.post(url, data={**form, "base_url": "bad", "api_key": "sk-second-" + "2" * 20}).get_data(as_text=True)
    assert "sk-second" not in page
    admin.post(url, data={**form, "base_url": "https://x.example/v1", "api_key_kept": kept_field(page)})
    assert crypto.decrypt(only_row("apis").api_key) == "sk-second-" + "2" * 20
