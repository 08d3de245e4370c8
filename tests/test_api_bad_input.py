"""Bad input to the REST API and the admin forms is a 400 in the caller's format
(or a form message), never a 500."""

import json

import pytest

from promptproxy.collections import BY_NAME
from promptproxy.data.db import db

from .conftest import ADMIN_EMAIL, csrf_token
from .test_admin_collections import errors_on, submit

RECORDS = "/api/collections/{}/records"


def raw_json(api, method, url, text):
    return getattr(api, method)(url, data=text, headers={"Content-Type": "application/json"})


def assert_pocketbase_400(response):
    assert response.status_code == 400, response.get_data(as_text=True)
    assert set(response.json) == {"status", "message", "data"} and response.json["status"] == 400
    return response.json


def test_deeply_nested_bodies_are_400(api):
    deep = '{"name": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert_pocketbase_400(raw_json(api, "post", RECORDS.format("users"), deep))
    user = api.create("users", name="Tom")
    assert_pocketbase_400(raw_json(api, "patch", RECORDS.format("users") + "/" + user["id"], deep))
    # Nested enough to parse but not to store again: a field error, not a crash.
    headers = {"X": json.loads("[" * 500 + "]" * 500)}
    body = assert_pocketbase_400(api.post(RECORDS.format("apis"), json={
        "name": "a", "base_url": "http://localhost:1/v1", "headers": headers}))
    assert body["data"]["headers"]["code"] == "validation_invalid_json"


@pytest.mark.parametrize("value", [10 ** 30, -(10 ** 30), 2 ** 63, "99999999999999999999999"])
def test_numbers_too_large_for_the_database_are_field_errors(api, value):
    body = assert_pocketbase_400(api.post(RECORDS.format("users"), json={"name": "Tom", "rpm": value}))
    assert body["data"]["rpm"]["code"] == "validation_max_number_constraint" or \
        body["data"]["rpm"]["code"] == "validation_min_number_constraint"
    assert api.post(RECORDS.format("users"), json={"name": "Tom", "rpm": 2 ** 63 - 1}).status_code == 200


def test_deeply_nested_json_in_the_admin_form(admin):
    for depth in (100_000, 100):
        page = submit(admin, "prompts", {"name": "p", "instructions": "x", "active": "y",
                                         "tools": "[" * depth + "]" * depth})
        assert page.status_code == 200
        assert "<li>Must not nest deeper than 64 levels.</li>" in page.get_data(as_text=True)
    with db.connection_context():
        assert BY_NAME["prompts"].model.select().count() == 0


def test_numbers_too_large_in_the_admin_form(admin):
    page = submit(admin, "users", {"name": "Tom", "rpm": str(10 ** 30), "active": "y"})
    assert page.status_code == 200
    assert "<li>Must be at most 9223372036854775807.</li>" in page.get_data(as_text=True)
    with db.connection_context():
        assert BY_NAME["users"].model.select().count() == 0


@pytest.mark.parametrize("bad", ["rpm > 99999999999999999999999", "rpm < -99999999999999999999999",
                                 'rpm = "99999999999999999999999"'])
def test_filter_numbers_out_of_range_are_400(api, bad):
    body = assert_pocketbase_400(api.get(RECORDS.format("users"), query_string={"filter": bad}))
    assert body["message"].startswith("Invalid filter") and "99999999999999999999999" in body["message"]


@pytest.mark.parametrize("glue", ["&&", "||"])
def test_long_filters_work(api, glue):
    ann = api.create("users", name="Ann", rpm=5)
    api.create("users", name="Bob", rpm=7)
    terms = [f"rpm != {n}" for n in range(100, 240)] if glue == "&&" else \
        [f"rpm = {n}" for n in range(100, 240)] + ["rpm = 5"]
    text = f" {glue} ".join(terms)
    assert len(terms) >= 140 and len(text) < 2000
    response = api.get(RECORDS.format("users"), query_string={"filter": text, "sort": "name"})
    assert response.status_code == 200, response.json
    names = [item["name"] for item in response.json["items"]]
    assert names == (["Ann", "Bob"] if glue == "&&" else ["Ann"])
    nested = "(" * 32 + "rpm = 5" + ")" * 32 + " && " + " && ".join(["(name ~ 'A' || rpm = 1)"] * 60)
    response = api.get(RECORDS.format("users"), query_string={"filter": nested})
    assert response.status_code == 200, response.json
    assert [item["id"] for item in response.json["items"]] == [ann["id"]]


@pytest.mark.sqlite  # SQLite's own refusal; PostgreSQL's is the test below
def test_a_filter_the_database_refuses_is_400(api, monkeypatch):
    import peewee

    from promptproxy.rest import routes as rest

    def refuse(*args, **kwargs):
        raise peewee.OperationalError("parser stack overflow")

    monkeypatch.setattr(rest.peewee.ModelSelect, "count", refuse)
    body = assert_pocketbase_400(api.get(RECORDS.format("users"), query_string={"filter": "rpm = 1"}))
    assert "parser stack overflow" in body["message"]


@pytest.mark.postgresql
def test_a_filter_postgresql_cannot_type_is_400(api):
    body = assert_pocketbase_400(api.get(RECORDS.format("users"), query_string={"filter": "name = rpm"}))
    assert "operator does not exist" in body["message"]


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1/v1", "https://[nope]/v1"])
def test_malformed_base_urls_are_field_errors(api, url):
    body = assert_pocketbase_400(api.post(RECORDS.format("apis"), json={"name": "a", "base_url": url}))
    assert body["data"]["base_url"]["code"] == "validation_invalid_url"


@pytest.mark.parametrize("url", ["http://[::1", "http://[::1/v1"])
def test_malformed_base_urls_get_a_form_message(admin, url):
    page = submit(admin, "apis", {"name": "a", "base_url": url, "protocol": "openai", "timeout": "60"})
    assert page.status_code == 200 and errors_on(page.get_data(as_text=True))


@pytest.mark.parametrize("collection, field, extra", [
    ("users", "name", {}), ("users", "notes", {"name": "Tom"}), ("users", "email", {"name": "Tom"}),
    ("prompts", "name", {"instructions": "Be brief."}), ("prompts", "instructions", {}),
    ("apis", "api_key", {"name": "a", "base_url": "http://localhost:1/v1"}),
    ("apis", "headers", {"name": "a", "base_url": "http://localhost:1/v1"}),
    ("users", "models", {"name": "Tom"}),
    ("keys", "key", {}),
])
def test_lone_surrogates_are_field_errors(api, collection, field, extra):
    value = '{"X": "\\ud800"}' if field == "headers" else '["\\ud800"]' if field == "models" else '"a\\ud800b"'
    text = json.dumps(extra)[:-1] + (", " if extra else "") + f'"{field}": {value}' + "}"
    body = assert_pocketbase_400(raw_json(api, "post", RECORDS.format(collection), text))
    assert body["data"][field]["code"] == "validation_invalid_text"
    user = api.create("users", name="Tom")
    body = assert_pocketbase_400(raw_json(api, "patch", RECORDS.format("users") + "/" + user["id"],
                                          '{"name": "\\udfff"}'))
    assert body["data"]["name"]["code"] == "validation_invalid_text"


@pytest.mark.parametrize("field", ["name", "notes", "models"])
def test_nul_characters_are_field_errors(api, field):
    """PostgreSQL's text cannot hold NUL; the rule is the same on SQLite."""
    value = ["a\x00b"] if field == "models" else "a\x00b"
    body = assert_pocketbase_400(api.post(RECORDS.format("users"), json={"name": "Tom", field: value}))
    assert body["data"][field] == {"code": "validation_invalid_text", "message": "Must not contain NUL characters."}


def test_lone_surrogate_in_the_login_identity_is_a_failed_login(api, client):
    response = client.post("/api/collections/_superusers/auth-with-password",
                           data='{"identity": "admin\\ud800@example.com", "password": "x"}',
                           content_type="application/json")
    assert response.status_code == 400 and response.json["message"] == "Failed to authenticate."
    token = csrf_token(client, "/_/login")
    page = client.post("/_/login", data=f"csrf_token={token}&email=adm%ED%A0%80in%40example.com&password=x",
                       content_type="application/x-www-form-urlencoded")
    assert page.status_code == 401 and b"Wrong email or password" in page.data
    assert ADMIN_EMAIL
