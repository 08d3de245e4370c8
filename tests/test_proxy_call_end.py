"""Every authenticated call ends exactly once: one request row with the status the
client saw, and its rate-limit slot released, whatever the upstream answers or the
client sends. And what an admin or script just created works on the next call."""

import json

import anthropic
import openai
import pytest
import requests

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_admin
from .servers import dockerfile_cmd

HI = [{"role": "user", "content": "hi"}]

# 200 answers whose shape no client library expects: strings where objects belong,
# numbers as text, missing parts.
ODD_ANSWERS = [
    {"choices": [{"message": "not an object"}]},
    {"choices": "not a list"},
    {"choices": [1, None]},
    {"choices": [{"message": {"content": ["a", "list"]}}], "usage": "n/a"},
    {"choices": [], "usage": {"prompt_tokens": "n/a", "completion_tokens": 1.5, "total_tokens": True}},
    {"object": "chat.completion"},
]


def raw_post(gateway, path, body, **headers):
    return requests.post(gateway.url + path, data=body if isinstance(body, bytes) else json.dumps(body),
                         timeout=10, headers={"Authorization": f"Bearer {gateway.key}",
                                              "Content-Type": "application/json", **headers})


@pytest.mark.parametrize("shape", ODD_ANSWERS, ids=range(len(ODD_ANSWERS)))
def test_odd_upstream_answers_end_the_call_once(gateway, shape):
    """With one concurrent call allowed, a call that leaked its slot would make the
    next one a 429; a call that lost its row would leave one row short."""
    gateway.update("users", gateway.user, concurrency=1)
    statuses = []
    for path, body in (("/v1/chat/completions", {"model": "gpt", "messages": HI}),
                       ("/v1/messages", {"model": "gpt", "max_tokens": 10, "messages": HI})):
        gateway.upstream.script(body=shape)
        response = raw_post(gateway, path, body)
        assert response.headers["Content-Type"].startswith("application/json")
        payload = response.json()  # never an HTML page
        if response.status_code >= 400:
            assert "error" in payload
        statuses.append(response.status_code)
    assert statuses[0] == 200  # an OpenAI client gets the upstream's answer as it is
    assert raw_post(gateway, "/v1/chat/completions", {"model": "gpt", "messages": HI}).status_code == 200
    rows = gateway.rows(3)
    assert [row.status for row in rows] == statuses + [200]


def test_odd_stream_chunks_end_the_call_once(gateway):
    gateway.update("users", gateway.user, concurrency=1)
    chunks = ['{"choices": "x"}', '{"choices": [{"delta": "text"}]}',
              '{"choices": [], "usage": {"total_tokens": "many"}}', "[DONE]"]
    gateway.upstream.script(body="".join(f"data: {c}\n\n" for c in chunks).encode(),
                            headers={"Content-Type": "text/event-stream"})
    response = raw_post(gateway, "/v1/chat/completions", {"model": "gpt", "messages": HI, "stream": True})
    assert response.status_code == 200 and "<html" not in response.text.lower()
    assert raw_post(gateway, "/v1/chat/completions", {"model": "gpt", "messages": HI}).status_code == 200
    first, second = gateway.rows(2)
    assert first.stream and first.input_tokens is None and second.status == 200


def test_an_unexpected_error_is_a_500_in_the_callers_format_with_its_row(gateway, monkeypatch):
    from promptproxy import proxy

    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(proxy, "rewrite_chat", broken)
    monkeypatch.setattr(proxy, "rewrite_messages", broken)
    gateway.update("users", gateway.user, concurrency=1)
    with pytest.raises(openai.InternalServerError) as failed:
        gateway.client().chat.completions.create(model="gpt", messages=HI)
    assert "a bug" not in failed.value.message
    response = raw_post(gateway, "/v1/messages", {"model": "gpt", "max_tokens": 5, "messages": HI})
    assert response.status_code == 500 and response.json()["type"] == "error"
    monkeypatch.undo()
    gateway.client().chat.completions.create(model="gpt", messages=HI)  # the slot was released
    assert [row.status for row in gateway.rows(3)] == [500, 500, 200]


@pytest.mark.parametrize("body, status, fragment", [
    (b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),
    (b'{"model": "gpt", "stream": "yes", "messages": []}', 400, "'stream' must be true or false"),
    (b'{"model": "gpt", "stream": 1, "messages": []}', 400, "'stream' must be true or false"),
    (b'{"model": "\\ud800", "messages": []}', 404, "does not exist"),
])
def test_bad_bodies_are_4xx_with_their_row(gateway, body, status, fragment):
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/messages"):
        response = raw_post(gateway, path, body)
        assert response.status_code == status
        message = response.json()["error"]["message"]
        assert fragment in message
    assert [row.status for row in gateway.rows(3)] == [status] * 3


def test_a_huge_model_reference_is_not_echoed_whole(gateway):
    response = raw_post(gateway, "/v1/chat/completions", {"model": "m" * 1_000_000, "messages": HI})
    assert response.status_code == 404
    assert len(response.json()["error"]["message"]) < 300


def test_a_large_chunked_body_is_413(gateway):
    gateway.app.config["MAX_CONTENT_LENGTH"] = 1_000_000

    def body():
        yield b'{"model": "gpt", "messages": [{"role": "user", "content": "'
        for _ in range(50):
            yield b"x" * 100_000
        yield b'"}]}'

    response = requests.post(gateway.url + "/v1/chat/completions", data=body(), timeout=20,
                             headers={"Authorization": f"Bearer {gateway.key}",
                                      "Content-Type": "application/json"})
    assert response.status_code == 413
    assert "larger than the limit" in response.json()["error"]["message"]


def admin_token(url):
    make_admin()
    return requests.post(url + "/api/collections/_superusers/auth-with-password", timeout=10,
                         json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).json()["token"]


@pytest.mark.slow
def test_what_a_script_creates_works_on_the_next_call_on_every_worker(gateway, served):
    """Two gunicorn workers with a catalog TTL far longer than the test: a key, a model
    and a prompt created through the REST API work at once, whichever worker answers."""
    command = [arg if not arg.startswith("0.0.0.0:") else "127.0.0.1:{port}" for arg in dockerfile_cmd()]
    server = served(command, PROMPTPROXY_CATALOG_TTL="3600")
    headers = {"Authorization": admin_token(server.url)}
    for _ in range(6):  # both workers have loaded their catalog
        requests.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {gateway.key}"}, timeout=10)

    def create(collection, **data):
        response = requests.post(f"{server.url}/api/collections/{collection}/records", json=data,
                                 headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    for n in range(4):
        key = create("keys", user=gateway.user.id, label=f"script {n}")["key"]
        create("models", api=gateway.api.id, model="gpt-4o-mini", name=f"fresh-{n}")
        create("prompts", name=f"fresh-prompt-{n}", instructions="Be brief.")
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=10)
        reply = client.chat.completions.create(model=f"fresh-{n}:fresh-prompt-{n}", messages=HI)
        assert reply.choices[0].message.content == "echo: hi"
        assert f"fresh-{n}" in [m.id for m in client.models.list()]
        claude = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0, timeout=10)
        assert claude.messages.create(model=f"fresh-{n}", max_tokens=5, messages=HI).content
