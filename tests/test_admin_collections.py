"""The admin tables, driven through their real forms with CSRF tokens, for every collection."""

import re

import pytest

from promptproxy.collections import BY_NAME
from promptproxy.data import crypto
from promptproxy.data.db import db
from promptproxy.data.fields import GatewayKey

from .conftest import csrf_token

UPSTREAM_KEY = "sk-upstream-" + "A1b2C3d4" * 4


def submit(client, collection, data, record_id=None):
    """Post the create (or edit) form as a browser would, with its CSRF token."""
    url = f"/_/{collection}/" + (f"edit/?id={record_id}" if record_id else "new/")
    form = {"csrf_token": csrf_token(client, url), **data}
    return client.post(url, data=form, follow_redirects=True)


def only_row(collection):
    with db.connection_context():
        rows = list(BY_NAME[collection].model.select())
    assert len(rows) == 1
    return rows[0]


def errors_on(page):
    return re.findall(r'class="(?:help-block|invalid-feedback)[^"]*"[^>]*>\s*([^<]+?)\s*<', page)


@pytest.fixture
def setup_records(admin):
    """The original README's walkthrough: a user, a key, an api, a model and a prompt."""
    assert submit(admin, "users", {"name": "Tom", "email": "tom@example.com", "active": "y"}).status_code == 200
    user = only_row("users")
    submit(admin, "keys", {"user": user.id, "label": "laptop", "active": "y"})
    submit(admin, "apis", {"name": "OpenAI", "base_url": "https://api.openai.com/v1/",
                           "api_key": UPSTREAM_KEY, "protocol": "openai", "timeout": "30",
                           "headers": '{"X-Team": "a"}', "active": "y"})
    api = only_row("apis")
    submit(admin, "models", {"api": api.id, "model": "gpt-4o-mini", "name": "mini", "active": "y"})
    submit(admin, "prompts", {"name": "translator", "instructions": "Translate to French.",
                              "active": "y"})
    return admin


def test_walkthrough_creates_every_record(setup_records):
    user, key, api = only_row("users"), only_row("keys"), only_row("apis")
    model, prompt = only_row("models"), only_row("prompts")
    assert (user.name, user.email, user.active) == ("Tom", "tom@example.com", True)
    assert key.user == user.id and key.label == "laptop" and key.key_prefix.startswith("pp-")
    assert api.base_url == "https://api.openai.com/v1" and api.timeout == 30
    assert api.headers == {"X-Team": "a"}
    assert crypto.decrypt(api.api_key) == UPSTREAM_KEY
    assert (model.api, model.model, model.name) == (api.id, "gpt-4o-mini", "mini")
    assert prompt.instructions == "Translate to French."
    for row in (user, key, api, model, prompt):
        assert re.fullmatch(r"[a-z0-9]{15}", row.id)
        assert row.created and row.updated


def test_lists_show_readable_names_and_search(setup_records):
    models = setup_records.get("/_/models/").get_data(as_text=True)
    assert "OpenAI" in models and "gpt-4o-mini" in models  # the api shows by name
    keys = setup_records.get("/_/keys/").get_data(as_text=True)
    assert "Tom" in keys and "laptop" in keys
    found = setup_records.get("/_/users/?search=tom").get_data(as_text=True)
    assert "tom@example.com" in found
    missing = setup_records.get("/_/users/?search=nobody").get_data(as_text=True)
    assert "tom@example.com" not in missing


def test_relation_filter_and_dropdown(setup_records):
    user = only_row("users")
    form = setup_records.get("/_/keys/new/").get_data(as_text=True)
    assert f'<option value="{user.id}">Tom</option>' in form
    submit(setup_records, "users", {"name": "Ann", "active": "y"})
    with db.connection_context():
        ann = BY_NAME["users"].model.get(name="Ann")
    submit(setup_records, "keys", {"user": ann.id, "label": "anns-key", "active": "y"})
    only_tom = setup_records.get(f"/_/keys/?flt0_user_equals={user.id}").get_data(as_text=True)
    assert "laptop" in only_tom and "anns-key" not in only_tom
    only_ann = setup_records.get(f"/_/keys/?flt0_user_equals={ann.id}").get_data(as_text=True)
    assert "anns-key" in only_ann and "laptop" not in only_ann


def test_the_new_key_is_shown_once(admin):
    submit(admin, "users", {"name": "Tom", "active": "y"})
    user = only_row("users")
    page = submit(admin, "keys", {"user": user.id, "label": "cli", "active": "y"}).get_data(as_text=True)
    shown = re.search(r'id="revealed-key" value="(pp-[A-Za-z0-9_-]{40})"', page)
    assert shown, page
    full_key = shown.group(1)
    assert "will not be shown again" in page
    key = only_row("keys")
    assert key.key == GatewayKey.digest(full_key)
    assert full_key[:10] + "…" in admin.get("/_/keys/").get_data(as_text=True)  # recognisable by its prefix
    for url in ("/_/keys/", f"/_/keys/details/?id={key.id}", f"/_/keys/edit/?id={key.id}"):
        assert full_key not in admin.get(url).get_data(as_text=True), url


def test_an_admin_may_paste_their_own_key(admin):
    submit(admin, "users", {"name": "Tom", "active": "y"})
    user = only_row("users")
    own = "my-own-key-0123456789abcdef"
    page = submit(admin, "keys", {"user": user.id, "key": own, "active": "y"}).get_data(as_text=True)
    assert own in page  # revealed once
    assert only_row("keys").key == GatewayKey.digest(own)

    short = submit(admin, "keys", {"user": user.id, "key": "short", "active": "y"}).get_data(as_text=True)
    assert "at least 16 characters" in short
    duplicate = submit(admin, "keys", {"user": user.id, "key": own}).get_data(as_text=True)
    assert "A key with this key already exists." in duplicate


def test_upstream_key_is_masked_and_kept_when_left_blank(setup_records):
    api = only_row("apis")
    for url in ("/_/apis/", f"/_/apis/details/?id={api.id}", f"/_/apis/edit/?id={api.id}"):
        page = setup_records.get(url).get_data(as_text=True)
        assert UPSTREAM_KEY not in page, url
    assert "••••••••" + UPSTREAM_KEY[-4:] in setup_records.get("/_/apis/").get_data(as_text=True)

    submit(setup_records, "apis", {"name": "OpenAI 2", "base_url": api.base_url, "api_key": "",
                                   "protocol": "openai", "timeout": "30"}, record_id=api.id)
    edited = only_row("apis")
    assert edited.name == "OpenAI 2"
    assert crypto.decrypt(edited.api_key) == UPSTREAM_KEY

    submit(setup_records, "apis", {"name": "OpenAI 2", "base_url": api.base_url,
                                   "api_key": "sk-new-key-123456", "protocol": "openai",
                                   "timeout": "30"}, record_id=api.id)
    assert crypto.decrypt(only_row("apis").api_key) == "sk-new-key-123456"


@pytest.mark.parametrize("base_url, message", [
    ("localhost:11434", "Must be an http:// or https:// URL"),
    ("ftp://example.com/v1", "Must be an http:// or https:// URL"),
    ("http://", "Must be an http:// or https:// URL"),
    ("http://host:port/v1", "The port is not a number."),
])
def test_bad_urls_get_a_form_message(admin, base_url, message):
    page = submit(admin, "apis", {"name": "x", "base_url": base_url, "protocol": "openai",
                                  "timeout": "60"}).get_data(as_text=True)
    assert message in page
    with db.connection_context():
        assert BY_NAME["apis"].model.select().count() == 0


def test_missing_required_fields_and_bad_values(admin):
    page = submit(admin, "apis", {"name": "", "base_url": "", "protocol": "openai",
                                  "timeout": "soon", "headers": "{not json"}).get_data(as_text=True)
    assert page.count("Cannot be blank.") == 2
    assert "Must be a whole number." in page
    assert "Invalid JSON" in page
    page = submit(admin, "apis", {"name": "x", "base_url": "http://a/v1", "protocol": "openai",
                                  "timeout": "60", "headers": "[1, 2]"}).get_data(as_text=True)
    assert "Must be a JSON object" in page
    page = submit(admin, "prompts", {"name": "p"}).get_data(as_text=True)
    assert "Cannot be blank." in page
    page = submit(admin, "keys", {"label": "k"}).get_data(as_text=True)
    assert "Cannot be blank." in page


def test_duplicate_unique_values_are_refused(setup_records):
    page = submit(setup_records, "users", {"name": "Other", "email": "TOM@example.com"}).get_data(as_text=True)
    assert "A user with the email tom@example.com already exists." in page
    api = only_row("apis")
    page = submit(setup_records, "apis", {"name": "OpenAI", "base_url": "http://x/v1",
                                          "protocol": "openai", "timeout": "5"}).get_data(as_text=True)
    assert "An api with the name OpenAI already exists." in page
    # A second model under a name in use joins that name's group.
    submit(setup_records, "models", {"api": api.id, "model": "m", "name": "mini", "weight": "1"})
    models = BY_NAME["models"].model
    assert models.select().where(models.name == "mini").count() == 2
    # Editing a record keeps its own unique values.
    user = only_row("users")
    page = submit(setup_records, "users", {"name": "Tom B", "email": "tom@example.com",
                                           "active": "y"}, record_id=user.id)
    assert "already exists." not in page.get_data(as_text=True)
    assert only_row("users").name == "Tom B"


def delete(client, collection, record_id):
    token = csrf_token(client, f"/_/{collection}/")
    return client.post(f"/_/{collection}/delete/", data={"id": record_id, "csrf_token": token},
                       follow_redirects=True)


def test_deleting_a_used_api_is_refused_naming_its_models(setup_records):
    api = only_row("apis")
    page = delete(setup_records, "apis", api.id)
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    model = only_row("models")
    assert (f'Cannot delete api OpenAI: still used by models (<a href="/_/models/details/?id={model.id}">mini</a>).'
            in text)
    assert only_row("apis").id == api.id

    assert delete(setup_records, "models", model.id).status_code == 200
    delete(setup_records, "apis", api.id)
    with db.connection_context():
        assert BY_NAME["apis"].model.select().count() == 0


def test_delete_needs_csrf(setup_records):
    prompt = only_row("prompts")
    response = setup_records.post("/_/prompts/delete/", data={"id": prompt.id})
    assert response.status_code == 400
    assert only_row("prompts").id == prompt.id


def test_create_without_csrf_is_refused(admin):
    response = admin.post("/_/users/new/", data={"name": "Mallory"})
    assert response.status_code == 400
    with db.connection_context():
        assert BY_NAME["users"].model.select().count() == 0


def test_deleting_a_user_keeps_their_request_history(setup_records):
    user, key = only_row("users"), only_row("keys")
    with db.connection_context():
        BY_NAME["requests"].model.create(user=user.id, key=key.id, endpoint="/v1/chat/completions",
                                         status=200, total_tokens=12)
    assert (f'still used by keys (<a href="/_/keys/details/?id={key.id}">laptop</a>)'
            in delete(setup_records, "users", user.id).get_data(as_text=True))
    delete(setup_records, "keys", key.id)
    delete(setup_records, "users", user.id)
    row = only_row("requests")
    assert row.user == user.id and row.total_tokens == 12
    listing = setup_records.get("/_/requests/").get_data(as_text=True)
    assert f"{user.id} (deleted)" in listing


def test_requests_are_read_only_and_exportable(setup_records):
    assert setup_records.get("/_/requests/new/").status_code in (302, 403, 404)
    export = setup_records.get("/_/requests/export/csv/")
    assert export.status_code == 200


def test_edit_form_round_trips_every_field_type(setup_records):
    user, key = only_row("users"), only_row("keys")
    page = submit(setup_records, "keys", {"user": user.id, "label": "renamed", "track": "y",
                                          "expires": "2030-01-02T03:04"}, record_id=key.id)
    assert page.status_code == 200
    edited = only_row("keys")
    assert edited.label == "renamed" and edited.track is True and edited.active is False
    assert edited.expires.isoformat() == "2030-01-02T03:04:00"
    assert edited.key == key.key  # the key itself never changes
    form = setup_records.get(f"/_/keys/edit/?id={key.id}").get_data(as_text=True)
    assert 'value="2030-01-02T03:04"' in form
    prompt = only_row("prompts")
    submit(setup_records, "prompts", {"name": "translator", "instructions": "Line 1\r\nLine 2",
                                      "tools": '[{"type": "function", "function": {"name": "f"}}]',
                                      "active": "y"}, record_id=prompt.id)
    assert only_row("prompts").tools == [{"type": "function", "function": {"name": "f"}}]
    assert only_row("prompts").instructions == "Line 1\nLine 2"
    form = setup_records.get(f"/_/prompts/edit/?id={prompt.id}").get_data(as_text=True)
    assert "&#34;function&#34;" in form or "&quot;function&quot;" in form
