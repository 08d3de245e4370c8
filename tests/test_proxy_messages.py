"""Anthropic clients on /v1/messages in front of both kinds of upstream: Claude Code's
own first request as recorded, token counting, errors in Anthropic's shape, and an
Anthropic api's base URL written as Anthropic documents it or with /v1."""

import json
from pathlib import Path

import anthropic
import pytest
import requests

from .anthropic_upstream import AnthropicUpstream

CLAUDE_CODE = json.loads((Path(__file__).parent / "fixtures" / "claude-code-2.1.197-first-request.json").read_text())
CLAUDE_KEY = "sk-ant-upstream-" + "k3y" * 8
HI = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def claude(request, gateway):
    """The gateway with an Anthropic api too, its base URL as Anthropic documents it,
    or (parametrised indirectly) with a suffix people also write."""
    with AnthropicUpstream() as server:
        gateway.claude_upstream = server
        suffix = getattr(request, "param", "")
        gateway.claude_api = gateway.create("apis", name="Anthropic", base_url=server.base_url + suffix,
                                            api_key=CLAUDE_KEY, protocol="anthropic", timeout=5)
        gateway.create("models", api=gateway.claude_api.id, model="claude-sonnet-4-6", name="sonnet")
        gateway.create("models", api=gateway.api.id, model="gpt-4o-mini", name="gpt-fake")
        yield gateway


BASE_URL_FORMS = pytest.mark.parametrize("claude", ["", "/", "/v1", "/v1/"], indirect=True,
                                         ids=["documented", "slash", "with-v1", "with-v1-slash"])


def sdk(gateway, key=None):
    return anthropic.Anthropic(base_url=gateway.url, api_key=key or gateway.key, max_retries=0, timeout=20)


def claude_code_call(gateway, model="gpt-fake", stream=True):
    """Claude Code's first request, as it sent it: its headers, ?beta=true, its body."""
    headers = {name: value for name, value in CLAUDE_CODE["headers"].items()
               if name not in ("Connection", "Accept-Encoding")}
    body = {**CLAUDE_CODE["body"], "model": model, "stream": stream}
    return requests.post(gateway.url + "/v1/messages?beta=true", data=json.dumps(body), timeout=20,
                         headers={**headers, "x-api-key": gateway.key}, stream=stream)


def events(response):
    """(name, data) of each server-sent event of an Anthropic stream."""
    out = []
    for block in response.text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "data" in fields:
            out.append((fields.get("event"), json.loads(fields["data"])))
    return out


# -- Claude Code -----------------------------------------------------------------------

def assert_upstream_got_the_system_turn_in_place(sent):
    original = CLAUDE_CODE["body"]
    assert sent.path == "/v1/chat/completions"
    messages = sent.json["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "system"]
    assert messages[0]["content"] == "\n\n".join(block["text"] for block in original["system"])
    assert messages[1]["content"] == [{"type": "text", "text": block["text"]}
                                      for block in original["messages"][0]["content"]]
    assert messages[2] == {"role": "system", "content": original["messages"][1]["content"]}
    assert [t["function"]["name"] for t in sent.json["tools"]] == [t["name"] for t in original["tools"]]
    assert sent.json["model"] == "gpt-4o-mini" and sent.json["max_tokens"] == original["max_tokens"]


def test_claude_code_streams_through_an_openai_upstream(claude):
    response = claude_code_call(claude, stream=True)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    received = events(response)
    names = [name for name, _ in received]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    text = "".join(data["delta"]["text"] for name, data in received if name == "content_block_delta")
    # The fake upstream echoes the last message it got: the system turn, at the end.
    assert text == "echo: " + CLAUDE_CODE["body"]["messages"][1]["content"]
    assert received[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert_upstream_got_the_system_turn_in_place(claude.upstream.requests[-1])
    [row] = claude.rows(1)
    assert (row.endpoint, row.status, row.stream, row.model_ref) == ("messages", 200, True, "gpt-fake")


def test_claude_code_gets_a_whole_answer_from_an_openai_upstream(claude):
    response = claude_code_call(claude, stream=False)
    assert response.status_code == 200, response.text
    message = response.json()
    assert (message["type"], message["role"], message["stop_reason"]) == ("message", "assistant", "end_turn")
    assert message["content"] == [{"type": "text", "text": "echo: " + CLAUDE_CODE["body"]["messages"][1]["content"]}]
    assert_upstream_got_the_system_turn_in_place(claude.upstream.requests[-1])
    [row] = claude.rows(1)
    assert (row.status, row.stream, row.input_tokens) == (200, False, message["usage"]["input_tokens"])


def test_claude_code_system_turn_is_left_to_an_anthropic_upstream(claude):
    """Passed through, the request is the upstream's to judge: the system turn stays
    where it was, and the upstream's own refusal (without the beta, Anthropic's API
    refuses it) comes back word for word, which is what Claude Code reacts to."""
    response = claude_code_call(claude, model="sonnet", stream=False)
    sent = claude.claude_upstream.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.json["messages"] == CLAUDE_CODE["body"]["messages"]
    assert sent.headers["anthropic-beta"] == CLAUDE_CODE["headers"]["anthropic-beta"]
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"] == {"type": "invalid_request_error",
                                        "message": "messages.1.role: Input should be 'user' or 'assistant' "
                                                   "(got 'system')"}
    [row] = claude.rows(1)
    assert row.status == 400


# -- count_tokens ----------------------------------------------------------------------------

def test_count_tokens_is_asked_of_an_anthropic_api(claude):
    count = sdk(claude).messages.count_tokens(model="sonnet:pirate", system="Be brief.", messages=HI)
    sent = claude.claude_upstream.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/v1/messages/count_tokens")
    assert sent.headers["x-api-key"] == CLAUDE_KEY and claude.key not in str(dict(sent.headers))
    # The stored prompt is applied as it is for /v1/messages.
    assert sent.json == {"model": "claude-sonnet-4-6", "system": "Talk like a pirate.\n\nBe brief.",
                         "messages": HI}
    assert count.input_tokens == len(["Talk", "like", "a", "pirate.", "Be", "brief.", "hello", "there"])
    [row] = claude.rows(1)
    assert (row.endpoint, row.status, row.model_ref) == ("messages/count_tokens", 200, "sonnet:pirate")
    assert row.input_tokens is None  # counting costs nothing: no usage to account


def test_count_tokens_is_estimated_for_an_openai_api(claude):
    count = sdk(claude).messages.count_tokens(model="gpt:pirate", messages=HI)
    # ceil(characters / 4) of the stored prompt and the message: 19 + 11 characters
    assert count.input_tokens == 8 and len("Talk like a pirate.") + len("hello there") == 30
    tools = [{"name": "weather", "description": "Weather for a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    with_tools = sdk(claude).messages.count_tokens(model="gpt", messages=HI, tools=tools)
    assert with_tools.input_tokens == -(-(11 + len(json.dumps(tools))) // 4)
    assert claude.upstream.requests == []  # nothing was sent upstream
    rows = claude.rows(2)
    assert [(r.endpoint, r.status, r.model_ref) for r in rows] == [
        ("messages/count_tokens", 200, "gpt:pirate"), ("messages/count_tokens", 200, "gpt")]


def test_count_tokens_follows_the_access_rules(claude):
    limited_key = claude.create("keys", user=claude.user.id, label="only sonnet",
                                    models=[claude.model.id])
    client = sdk(claude, limited_key)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        client.messages.count_tokens(model="sonnet", messages=HI)
    assert refused.value.body["type"] == "error"
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.count_tokens(model="nope", messages=HI)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.AuthenticationError):
        sdk(claude, "wrong-key-000000000").messages.count_tokens(model="gpt", messages=HI)
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.count_tokens(model="gpt", messages=[{"role": "tool", "content": "x"}])
    assert "role" in bad.value.message
    assert claude.claude_upstream.requests == [] and claude.upstream.requests == []
    rows = claude.rows(3)  # the unknown key has no user to account it to
    assert [(r.endpoint, r.status) for r in rows] == [("messages/count_tokens", 403),
                                                      ("messages/count_tokens", 404),
                                                      ("messages/count_tokens", 400)]


# -- errors in Anthropic's shape ---------------------------------------------------------------

def assert_anthropic_error(response, status, kind):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_every_refusal_under_messages_is_in_anthropic_shape(claude):
    url, key = claude.url + "/v1/messages", {"x-api-key": claude.key}
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        assert_anthropic_error(requests.request(method, url, headers=key, timeout=10), 405, "invalid_request_error")
    assert_anthropic_error(requests.get(url + "/count_tokens", headers=key, timeout=10), 405,
                           "invalid_request_error")
    for path in ("/nope", "/count_tokens/nope", "/batches"):
        assert_anthropic_error(requests.post(url + path, headers=key, json={}, timeout=10), 404, "not_found_error")
    unknown = requests.post(url, headers=key, timeout=10, json={"model": "nope", "max_tokens": 5, "messages": HI})
    assert_anthropic_error(unknown, 404, "not_found_error")
    # OpenAI's routes keep OpenAI's shape.
    other = requests.get(claude.url + "/v1/chat/completions", timeout=10)
    assert other.status_code == 405 and "type" not in other.json() and other.json()["error"]["message"]


# -- base URLs ----------------------------------------------------------------------------------

@BASE_URL_FORMS
def test_an_anthropic_base_url_works_with_or_without_v1(claude):
    client = sdk(claude)
    message = client.messages.create(model="sonnet", max_tokens=20, messages=HI)
    assert message.content[0].text == "echo: hello there"
    with client.messages.stream(model="sonnet", max_tokens=20, messages=HI) as stream:
        assert "".join(stream.text_stream) == "echo: hello there"
    reply = claude.client().chat.completions.create(model="sonnet", messages=HI)
    assert reply.choices[0].message.content == "echo: hello there"
    assert [r.path for r in claude.claude_upstream.requests] == ["/v1/messages"] * 3


@BASE_URL_FORMS
def test_connection_test_lists_an_anthropic_apis_models_with_or_without_v1(claude, admin):
    page = admin.get(f"/_/connection/{claude.claude_api.id}").get_data(as_text=True)
    assert 'id="connection-ok"' in page, page[:2000]
    assert "claude-haiku-4-5" in page and "Claude Haiku 4.5" in page
    assert claude.claude_upstream.base_url + "/v1/models" in page
    sent = claude.claude_upstream.requests[-1]
    assert (sent.method, sent.path) == ("GET", "/v1/models")
    assert sent.headers["x-api-key"] == CLAUDE_KEY
