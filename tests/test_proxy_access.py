"""Per-user access rules, narrowed per key: each refuses exactly what it should."""

import openai
import pytest

from promptproxy.collections import BY_NAME
from promptproxy.data import records
from promptproxy.data.db import db

from .conftest import csrf_token

HI = [{"role": "user", "content": "hi"}]


def call(gateway, model, key=None):
    return gateway.client(key).chat.completions.create(model=model, messages=HI)


def listed(gateway, key=None):
    return {m.id for m in gateway.client(key).models.list()}


@pytest.fixture
def other(gateway):
    gateway.other_api = gateway.create("apis", name="Other", base_url=gateway.upstream.base_url)
    gateway.other_model = gateway.create("models", api=gateway.other_api.id, model="o-1", name="o1")
    gateway.poet = gateway.create("prompts", name="poet", instructions="Rhyme.")
    return gateway


def test_without_rules_everything_is_allowed(other):
    for model in ("gpt", "o1", "gpt:poet", "o1:pirate", "llama3:8b:poet"):
        call(other, model)
    assert {"gpt", "o1", "llama3:8b", "gpt:poet", "o1:pirate"} <= listed(other)


def test_allowed_models(other):
    other.update("users", other.user, models=[other.model.id])
    call(other, "gpt")
    call(other, "gpt:poet")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        call(other, "o1")
    assert "The model 'o1' is not allowed for this user." in refused.value.message
    assert listed(other) == {"gpt", "gpt:pirate", "gpt:poet"}
    rows = other.rows(3)
    assert [r.status for r in rows] == [200, 200, 403]


def test_allowed_apis(other):
    other.update("users", other.user, apis=[other.other_api.id])
    call(other, "o1:pirate")
    with pytest.raises(openai.PermissionDeniedError):
        call(other, "gpt")
    with pytest.raises(openai.PermissionDeniedError):
        other.client().models.retrieve("llama3:8b")
    assert listed(other) == {"o1", "o1:pirate", "o1:poet"}


def test_allowed_prompts(other):
    other.update("users", other.user, prompts=[other.prompt.id])
    call(other, "gpt:pirate")
    call(other, "gpt")  # a bare model needs no prompt unless one is required
    with pytest.raises(openai.PermissionDeniedError) as refused:
        call(other, "gpt:poet")
    assert "The prompt 'poet' is not allowed for this user." in refused.value.message
    assert "gpt:poet" not in listed(other) and "gpt:pirate" in listed(other)


def test_required_prompt(other):
    other.update("users", other.user, require_prompt=True)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        call(other, "gpt")
    assert "must call through a stored prompt" in refused.value.message
    call(other, "gpt:poet")
    assert not {"gpt", "o1", "llama3:8b"} & listed(other)
    assert "o1:poet" in listed(other)


def test_a_key_narrows_but_never_widens(other):
    other.update("users", other.user, models=[other.model.id, other.other_model.id])
    narrow = other.create("keys", user=other.user.id, models=[other.other_model.id])
    call(other, "o1", key=narrow)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        call(other, "gpt", key=narrow)
    assert "not allowed for this key" in refused.value.message
    call(other, "gpt")  # the user's other key is not narrowed

    wide = other.create("keys", user=other.user.id, models=[other.llama.id])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        call(other, "llama3:8b", key=wide)
    assert "not allowed for this user" in refused.value.message
    assert listed(other, narrow) == {"o1", "o1:pirate", "o1:poet"}


def test_deleting_a_record_named_in_an_allow_list_is_refused(other):
    other.update("users", other.user, models=[other.other_model.id])
    with db.connection_context(), pytest.raises(records.RecordInUse) as refused:
        records.delete(BY_NAME["models"], other.other_model)
    assert "users (Tom)" in str(refused.value)


def test_allow_lists_are_validated(api):
    response = api.post("/api/collections/users/records", json={"name": "A", "models": ["nosuchmodel0000"]})
    assert response.json["data"]["models"]["code"] == "validation_missing_rel_records"
    response = api.post("/api/collections/users/records", json={"name": "A", "models": "x"})
    assert response.status_code == 400


def test_allow_lists_in_the_admin_form(admin):
    with db.connection_context():
        upstream, _ = records.save(BY_NAME["apis"], {"name": "Local", "base_url": "http://127.0.0.1:1/v1"})
        first, _ = records.save(BY_NAME["models"], {"api": upstream.id, "model": "a", "name": "alpha"})
        second, _ = records.save(BY_NAME["models"], {"api": upstream.id, "model": "b", "name": "beta"})
    url = "/_/users/new/"
    page = admin.post(url, data={"csrf_token": csrf_token(admin, url), "name": "Ann", "active": "y",
                                 "models": [first.id, second.id], "require_prompt": "y"}, follow_redirects=True)
    assert page.status_code == 200
    with db.connection_context():
        ann = BY_NAME["users"].model.get(BY_NAME["users"].model.name == "Ann")
    assert ann.models == [first.id, second.id] and ann.require_prompt is True
    details = admin.get(f"/_/users/details/?id={ann.id}").get_data(as_text=True)
    assert "alpha, beta" in details
    edit = admin.get(f"/_/users/edit/?id={ann.id}").get_data(as_text=True)
    assert f'<option selected value="{first.id}">alpha</option>' in edit
