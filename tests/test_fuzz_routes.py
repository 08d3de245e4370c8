"""Malformed input on every /v1 and /api route: a 4xx in the caller's own format,
never a 500, a row for every authenticated call, and a server that still serves."""

import json
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_admin

SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
TEXT = st.one_of(st.text(max_size=30), SURROGATES, st.just("x" * 20_000), st.just("=cmd|' /C calc'!A0"))
NUMBERS = st.one_of(st.integers(), st.just(10 ** 30), st.just(-(10 ** 30)), st.floats(allow_nan=False),
                    st.just(99999999999999999999999))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=8)


class Body:
    """A request body that shows only its start in hypothesis's reports."""

    def __init__(self, data):
        self.data = data

    def __repr__(self):
        return f"Body({self.data[:120]!r}, {len(self.data)} bytes)"


def nested(depth):
    return ("[" * depth + "]" * depth).encode()


# Bodies for the proxy: raw bytes, any JSON, and request-shaped objects with odd fields.
V1_BODIES = st.one_of(
    st.binary(max_size=64),
    st.just(nested(100_000)),
    st.just(b'{"model": "gpt", "messages": [' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"]}"),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({}, optional={
        "model": st.one_of(st.sampled_from(["gpt", "gpt:pirate", "llama3:8b", "gpt:", ":pirate", "a:b:c"]), JSON),
        "messages": st.one_of(st.just([{"role": "user", "content": "hi"}]), JSON,
                              st.lists(st.fixed_dictionaries({"role": st.one_of(st.sampled_from(
                                  ["user", "system", "assistant", "tool", "developer"]), JSON),
                                  "content": JSON}), max_size=3)),
        "prompt": JSON, "system": JSON, "stream": JSON, "max_tokens": JSON, "tools": JSON,
        "stream_options": JSON, "n": JSON, "temperature": JSON,
        "input": JSON, "encoding_format": JSON, "dimensions": JSON,
    }).map(lambda value: json.dumps(value).encode()),
).map(Body)
RECORD_FIELDS = ("name", "email", "user", "label", "rpm", "tpm", "concurrency", "base_url", "api_key", "headers",
                 "api", "model", "instructions", "tools", "apis", "models", "prompts", "active", "expires", "timeout",
                 "protocol")
API_BODIES = st.one_of(
    st.binary(max_size=64),
    st.just(nested(100_000)),
    JSON.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({}, optional=dict.fromkeys(RECORD_FIELDS, JSON)).map(lambda v: json.dumps(v).encode()),
).map(Body)
FILTERS = st.one_of(TEXT.map(str), st.just("rpm > 99999999999999999999999"),
                    st.just(" && ".join(["name = 'a'"] * 140)), st.just("(" * 300 + "name='a'" + ")" * 300),
                    st.just("name ~ '\\ud800'"))
COLLECTIONS = st.sampled_from(["users", "keys", "apis", "models", "prompts", "requests", "nope"])
CONTENT_TYPES = st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1",
                                 "multipart/form-data; boundary=x", ""])
AUTH = st.sampled_from(["valid", "valid-x-api-key", "none", "garbage", "bearer-spaces"])


def openai_shaped(body):
    error = body.get("error")
    return isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error)


def anthropic_shaped(body):
    return body.get("type") == "error" and {"type", "message"} <= set(body.get("error") or {})


def pocketbase_shaped(body):
    return {"status", "message", "data"} <= set(body)


class Fuzzer:
    def __init__(self, gateway):
        self.gateway = gateway
        self.rows_expected = 0
        make_admin()
        self.token = requests.post(gateway.url + "/api/collections/_superusers/auth-with-password", timeout=10,
                                   json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).json()["token"]

    def v1(self, method, path, body, content_type, auth):
        headers = {"Content-Type": content_type} if content_type else {}
        key = self.gateway.key
        headers.update({"valid": {"Authorization": f"Bearer {key}"}, "valid-x-api-key": {"x-api-key": key},
                        "none": {}, "garbage": {"Authorization": "Bearer \x7f\x01garbage"},
                        "bearer-spaces": {"Authorization": f"Bearer   {key}   "}}[auth])
        data = body.data if isinstance(body, Body) else body
        response = requests.request(method, self.gateway.url + path, data=data, headers=headers, timeout=20)
        assert response.status_code < 500, (path, body, response.status_code, response.text[:500])
        if response.status_code >= 400:
            shaped = anthropic_shaped if path.startswith("/v1/messages") else openai_shaped
            assert shaped(response.json()), (path, response.text[:500])
        if method == "POST" and auth != "none" and auth != "garbage" and response.status_code != 405:
            self.rows_expected += 1
        return response

    def api(self, method, path, body=None, params=None):
        query = "&".join(f"{name}={quote(value.encode('utf-8', 'surrogatepass'), safe='')}"
                         for name, value in (params or {}).items())  # lone surrogates too
        data = body.data if isinstance(body, Body) else body
        response = requests.request(method, self.gateway.url + path + ("?" + query if query else ""), data=data,
                                    timeout=20, headers={"Authorization": self.token,
                                                         "Content-Type": "application/json"})
        assert response.status_code < 500, (path, params, body, response.text[:500])
        if response.status_code >= 400:
            assert pocketbase_shaped(response.json()), (path, response.text[:500])
        return response


@pytest.fixture
def fuzzer(gateway):
    return Fuzzer(gateway)


SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.slow
@SETTINGS
@given(route=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/messages",
                              "/v1/messages/count_tokens", "/v1/chat/completion",
                              "/v1/embeddings"]),
       body=V1_BODIES, content_type=CONTENT_TYPES, auth=AUTH)
def test_proxy_routes(fuzzer, route, body, content_type, auth):
    fuzzer.v1("POST", route, body, content_type, auth)


@pytest.mark.slow
@SETTINGS
@given(method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH"]),
       route=st.sampled_from(["/v1/messages", "/v1/chat/completions", "/v1/models", "/v1/nothing"]),
       ref=TEXT, auth=AUTH)
def test_proxy_methods_and_model_lookups(fuzzer, method, route, ref, auth):
    fuzzer.v1(method, route, b"", "", auth)
    fuzzer.v1("GET", "/v1/models/" + quote(ref.encode("utf-8", "surrogatepass"), safe=""),
              b"", "", auth)


@pytest.mark.slow
@SETTINGS
@given(collection=COLLECTIONS, body=API_BODIES, filter_=FILTERS, sort=TEXT,
       page=st.one_of(TEXT, NUMBERS.map(str)), identity=TEXT, password=TEXT)
def test_rest_routes(fuzzer, collection, body, filter_, sort, page, identity, password):
    base = f"/api/collections/{collection}/records"
    fuzzer.api("POST", base, body)
    fuzzer.api("GET", base, params={"filter": filter_, "sort": sort, "page": page, "perPage": page})
    fuzzer.api("PATCH", base + "/" + (fuzzer.gateway.user.id if collection == "users" else "nope"), body)
    fuzzer.api("DELETE", base + "/nope")
    login = Body(json.dumps({"identity": identity, "password": password}).encode())
    fuzzer.api("POST", "/api/collections/_superusers/auth-with-password", login)


@pytest.mark.slow
def test_every_authenticated_call_has_its_row_and_the_server_still_serves(fuzzer):
    @SETTINGS
    @given(route=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/messages"]),
           body=V1_BODIES, auth=st.sampled_from(["valid", "valid-x-api-key"]))
    def fuzz(route, body, auth):
        fuzzer.v1("POST", route, body, "application/json", auth)

    fuzz()
    reply = fuzzer.gateway.client().chat.completions.create(model="gpt",
                                                            messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "echo: hi"
    fuzzer.rows_expected += 1
    rows = fuzzer.gateway.rows(fuzzer.rows_expected)
    assert len(rows) == fuzzer.rows_expected
    assert rows[-1].status == 200
