"""The PocketBase-style REST API, derived from the same declarations as the admin."""

import pytest

from promptproxy.collections import ALL

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD

UPSTREAM_KEY = "sk-live-" + "Zz9Yy8Xx7" * 3


def test_health_needs_no_auth(client):
    response = client.get("/api/health")
    assert response.status_code == 200 and response.json["code"] == 200


def test_auth_with_password(app, api, client):
    assert api.token
    assert client.post("/api/collections/_superusers/auth-with-password",
                       json={"identity": ADMIN_EMAIL, "password": "wrong"}).status_code == 400
    ok = client.post("/api/collections/_superusers/auth-with-password",
                     json={"identity": ADMIN_EMAIL.upper(), "password": ADMIN_PASSWORD})
    assert ok.json["record"]["email"] == ADMIN_EMAIL
    assert "password_hash" not in ok.json["record"]


def test_failed_api_logins_are_slowed_down(app, api, client):
    for _ in range(5):
        client.post("/api/collections/_superusers/auth-with-password",
                    json={"identity": ADMIN_EMAIL, "password": "wrong"})
    blocked = client.post("/api/collections/_superusers/auth-with-password",
                          json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0


@pytest.mark.parametrize("collection", [c.name for c in ALL])
def test_every_route_requires_a_token(client, collection):
    base = f"/api/collections/{collection}/records"
    for method, url in [("get", base), ("post", base), ("get", base + "/abc"),
                        ("patch", base + "/abc"), ("delete", base + "/abc")]:
        response = getattr(client, method)(url, json={})
        assert response.status_code == 401, (method, url)
        assert set(response.json) == {"status", "message", "data"}
    bad = client.get(base, headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401


def test_bearer_prefix_is_accepted(api):
    response = api.get("/api/collections/users/records", headers={"Authorization": "Bearer " + api.token})
    assert response.status_code == 200


def test_crud_round_trip(api):
    user = api.create("users", name="Tom", email="tom@example.com")
    assert user["collectionName"] == "users" and len(user["id"]) == 15
    assert user["active"] is True and user["created"].endswith("Z")

    changed = api.patch(f"/api/collections/users/records/{user['id']}", json={"notes": "hi"})
    assert changed.json["notes"] == "hi" and changed.json["name"] == "Tom"
    assert api.get(f"/api/collections/users/records/{user['id']}").json["notes"] == "hi"

    assert api.delete(f"/api/collections/users/records/{user['id']}").status_code == 204
    missing = api.get(f"/api/collections/users/records/{user['id']}")
    assert missing.status_code == 404 and missing.json["status"] == 404


def test_creating_a_key_returns_it_once(api):
    user = api.create("users", name="Tom")
    key = api.create("keys", user=user["id"], label="cli")
    assert key["key"].startswith("pp-") and len(key["key"]) >= 35
    assert key["key_prefix"] == key["key"][:10]
    again = api.get(f"/api/collections/keys/records/{key['id']}").json
    assert "key" not in again and again["key_prefix"] == key["key_prefix"]
    listed = api.get("/api/collections/keys/records").json["items"][0]
    assert "key" not in listed
    # The key cannot be changed afterwards: a new one means a new record.
    api.patch(f"/api/collections/keys/records/{key['id']}", json={"key": "x" * 20, "label": "new"})
    assert api.get(f"/api/collections/keys/records/{key['id']}").json["label"] == "new"


def test_upstream_key_is_write_only(api):
    created = api.create("apis", name="OpenAI", base_url="https://api.openai.com/v1", api_key=UPSTREAM_KEY)
    assert "api_key" not in created and created["api_key_set"] is True
    for response in (api.get("/api/collections/apis/records"),
                     api.get(f"/api/collections/apis/records/{created['id']}"),
                     api.patch(f"/api/collections/apis/records/{created['id']}", json={"timeout": 9})):
        assert UPSTREAM_KEY not in response.get_data(as_text=True)


def test_validation_errors_have_pocketbase_shape(api):
    response = api.post("/api/collections/apis/records",
                        json={"base_url": "not a url", "timeout": "x", "protocol": "grpc", "headers": [1]})
    assert response.status_code == 400
    body = response.json
    assert body["status"] == 400 and body["message"] == "Failed to create record."
    assert body["data"]["name"]["code"] == "validation_required"
    assert body["data"]["base_url"]["code"] == "validation_invalid_url"
    assert body["data"]["timeout"]["code"] == "validation_invalid_number"
    assert body["data"]["protocol"]["code"] == "validation_invalid_value"
    assert body["data"]["headers"]["code"] == "validation_invalid_json"

    api.create("users", name="A", email="a@example.com")
    duplicate = api.post("/api/collections/users/records", json={"name": "B", "email": "a@example.com"})
    assert duplicate.json["data"]["email"]["code"] == "validation_not_unique"
    bad_relation = api.post("/api/collections/keys/records", json={"user": "nosuchuser12345"})
    assert bad_relation.json["data"]["user"]["code"] == "validation_missing_rel_records"


@pytest.mark.parametrize("body", ["not json", "[1, 2]", "null"])
def test_body_must_be_a_json_object(api, body):
    response = api.post("/api/collections/users/records", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.json["message"] == "The body must be a JSON object."


def test_refused_delete_names_the_dependents(api):
    upstream = api.create("apis", name="Ollama", base_url="http://localhost:11434/v1")
    api.create("models", api=upstream["id"], model="llama3:8b", name="llama")
    response = api.delete(f"/api/collections/apis/records/{upstream['id']}")
    assert response.status_code == 400
    assert "models (llama)" in response.json["message"]


def test_list_paging_sorting_and_filtering(api):
    for i in range(7):
        api.create("users", name=f"user{i}", active=i % 2 == 0, notes=f"n{i}")
    page = api.get("/api/collections/users/records?page=2&perPage=3&sort=name").json
    assert (page["page"], page["perPage"], page["totalItems"], page["totalPages"]) == (2, 3, 7, 3)
    assert [u["name"] for u in page["items"]] == ["user3", "user4", "user5"]
    desc = api.get("/api/collections/users/records?sort=-name&perPage=2").json
    assert [u["name"] for u in desc["items"]] == ["user6", "user5"]
    filtered = api.get("/api/collections/users/records",
                       query_string={"filter": '(active = true && name ~ "user") || notes = "n1"',
                                     "sort": "name"}).json
    assert [u["name"] for u in filtered["items"]] == ["user0", "user1", "user2", "user4", "user6"]


@pytest.mark.parametrize("bad", ['name = ', 'nosuch = 1', 'name == "x"', '(name = "x"',
                                 'name = "x"; DROP TABLE users', 'api_key = "x"'])
def test_invalid_filters_are_400(api, bad):
    response = api.get("/api/collections/apis/records", query_string={"filter": bad})
    assert response.status_code == 400
    assert response.json["message"].startswith("Invalid filter")


def test_filter_values_are_never_sql(api):
    api.create("users", name="Tom")
    response = api.get("/api/collections/users/records",
                       query_string={"filter": "name = \"x' OR 1=1 --\" || name = 'y\" OR \"1\"=\"1'"})
    assert response.status_code == 200 and response.json["totalItems"] == 0
    assert api.get("/api/collections/users/records").json["totalItems"] == 1


def test_unknown_collection_and_route(api):
    assert api.get("/api/collections/nope/records").status_code == 404
    unknown = api.get("/api/nothing-here")
    assert unknown.status_code == 404 and unknown.json["status"] == 404


def test_request_rows_are_read_only(api):
    response = api.post("/api/collections/requests/records", json={"status": 200})
    assert response.status_code == 403
    assert api.get("/api/collections/requests/records").json["totalItems"] == 0
