"""Claude through PromptProxy: the openai SDK in front of an Anthropic upstream, and
the anthropic SDK on /v1/messages in front of both kinds of upstream."""

import json

import anthropic
import openai
import pytest

from .anthropic_upstream import AnthropicUpstream

CLAUDE_KEY = "sk-ant-upstream-" + "k3y" * 8
HI = [{"role": "user", "content": "hello there"}]
TOOLS = [{"type": "function", "function": {"name": "weather", "description": "Weather for a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture
def claude(gateway):
    with AnthropicUpstream() as server:
        gateway.claude_upstream = server
        api = gateway.create("apis", name="Anthropic", base_url=server.base_url + "/v1", api_key=CLAUDE_KEY,
                             protocol="anthropic")
        gateway.create("models", api=api.id, model="claude-sonnet-4-6", name="sonnet")
        yield gateway


def anthropic_client(gateway):
    return anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)


def test_openai_sdk_to_claude(claude):
    reply = claude.client().chat.completions.create(model="sonnet:pirate", messages=HI)
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.choices[0].finish_reason == "stop"
    sent = claude.claude_upstream.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == CLAUDE_KEY and sent.headers["anthropic-version"]
    assert "Authorization" not in sent.headers
    assert sent.json["system"] == "Talk like a pirate."
    assert sent.json["model"] == "claude-sonnet-4-6" and sent.json["max_tokens"] > 0
    assert sent.json["messages"] == [{"role": "user", "content": "hello there"}]
    [row] = claude.rows(1)
    assert (row.input_tokens, row.output_tokens) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert row.input_tokens == 4 + 2 and row.output_tokens == 3 and row.reply == "echo: hello there"


def test_openai_sdk_streams_from_claude(claude):
    chunks = list(claude.client().chat.completions.create(model="sonnet", messages=HI, stream=True,
                                                          stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello there"
    assert chunks[-1].usage.total_tokens == 2 + 3
    [row] = claude.rows(1)
    assert (row.status, row.stream, row.input_tokens, row.output_tokens) == (200, True, 2, 3)


def test_openai_sdk_tool_calls_with_claude(claude):
    claude.claude_upstream.script(tool_use={"name": "weather", "input": {"city": "Paris"}})
    reply = claude.client().chat.completions.create(model="sonnet", messages=HI, tools=TOOLS)
    call = reply.choices[0].message.tool_calls[0]
    assert (call.function.name, json.loads(call.function.arguments)) == ("weather", {"city": "Paris"})
    assert reply.choices[0].finish_reason == "tool_calls"
    sent = claude.claude_upstream.requests[-1].json
    assert sent["tools"][0]["name"] == "weather" and sent["tools"][0]["input_schema"]["type"] == "object"

    claude.claude_upstream.script(tool_use={"name": "weather", "input": {"city": "Oslo"}})
    stream = claude.client().chat.completions.create(model="sonnet", messages=HI, tools=TOOLS, stream=True)
    arguments, names = "", set()
    for chunk in stream:
        for tool_call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            names.add(tool_call.function.name)
            arguments += tool_call.function.arguments or ""
    assert "weather" in names and json.loads(arguments) == {"city": "Oslo"}

    # The tool's result goes back as a tool_result block.
    claude.client().chat.completions.create(model="sonnet", tools=TOOLS, messages=[
        *HI, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}])
    last = claude.claude_upstream.requests[-1].json["messages"]
    assert last[1]["content"][0]["type"] == "tool_use"
    assert last[2]["content"][0] == {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny"}


def test_claude_errors_reach_the_openai_sdk(claude):
    claude.claude_upstream.script(status=529)
    with pytest.raises(openai.APIStatusError) as overloaded:
        claude.client().chat.completions.create(model="sonnet", messages=HI)
    assert overloaded.value.status_code == 503
    claude.claude_upstream.script(status=429, headers={"Retry-After": "3"})
    with pytest.raises(openai.RateLimitError) as limited:
        claude.client().chat.completions.create(model="sonnet", messages=HI)
    assert limited.value.response.headers["Retry-After"] == "3"
    claude.claude_upstream.script(stream_error="overloaded_error")
    with pytest.raises(openai.APIError):
        for _ in claude.client().chat.completions.create(model="sonnet", messages=HI, stream=True):
            pass
    with pytest.raises(openai.BadRequestError) as legacy:
        claude.client().completions.create(model="sonnet", prompt="hi")
    assert "Legacy completions" in legacy.value.message
    assert [row.status for row in claude.rows(4)] == [503, 429, 502, 400]


def test_anthropic_sdk_to_claude_passes_through(claude):
    client = anthropic_client(claude)
    message = client.messages.create(model="sonnet:pirate", max_tokens=100, system="Be brief.", messages=HI)
    assert message.content[0].text == "echo: hello there"
    sent = claude.claude_upstream.requests[-1]
    assert sent.json["system"] == "Talk like a pirate.\n\nBe brief."
    assert sent.headers["x-api-key"] == CLAUDE_KEY and sent.json["model"] == "claude-sonnet-4-6"
    with client.messages.stream(model="sonnet", max_tokens=100, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hello there" and final.usage.output_tokens == 3
    rows = claude.rows(2)
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [(message.usage.input_tokens, 3), (2, 3)]
    assert rows[0].endpoint == "messages"


def test_anthropic_sdk_to_an_openai_upstream(claude):
    client = anthropic_client(claude)
    message = client.messages.create(model="gpt:pirate", max_tokens=50, messages=HI)
    assert message.content[0].text == "echo: hello there" and message.stop_reason == "end_turn"
    sent = claude.upstream.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Talk like a pirate."}
    assert sent["model"] == "gpt-4o-mini"
    with client.messages.stream(model="gpt", max_tokens=50, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hello there" and final.usage.output_tokens == 3
    rows = claude.rows(2)
    assert [(r.input_tokens, r.output_tokens) for r in rows] == [(6, 3), (2, 3)]


def test_anthropic_sdk_tools_through_an_openai_upstream(claude):
    claude.upstream.script(body={
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [
                {"id": "call_9", "type": "function",
                 "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}})
    message = anthropic_client(claude).messages.create(
        model="gpt", max_tokens=50, messages=HI,
        tools=[{"name": "weather", "input_schema": {"type": "object"}}])
    assert message.stop_reason == "tool_use"
    assert (message.content[-1].name, message.content[-1].input) == ("weather", {"city": "Rome"})
    assert claude.upstream.requests[-1].json["tools"][0]["function"]["name"] == "weather"


def test_messages_errors_have_anthropic_shape(claude):
    client = anthropic_client(claude)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=10, messages=HI)
    assert "model 'nope'" in missing.value.message
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=claude.url, api_key="wrong-key-000000000", max_retries=0).messages.create(
            model="sonnet", max_tokens=10, messages=HI)
    claude.claude_upstream.script(status=529)
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        client.messages.create(model="sonnet", max_tokens=10, messages=HI)
    assert overloaded.value.status_code == 529
    claude.upstream.script(status=429, body={"error": {"message": "slow down"}})
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(model="gpt", max_tokens=10, messages=HI)
    assert limited.value.body["error"]["message"] == "slow down"


def test_messages_accept_the_gateway_key_as_x_api_key(claude):
    import requests

    response = requests.post(claude.url + "/v1/messages", timeout=10, json={
        "model": "sonnet", "max_tokens": 10, "messages": HI}, headers={"x-api-key": claude.key,
                                                                          "anthropic-version": "2023-06-01"})
    assert response.status_code == 200 and response.json()["content"][0]["text"] == "echo: hello there"
    # The client's own key never travels on; the api's key does.
    assert claude.claude_upstream.requests[-1].headers["x-api-key"] == CLAUDE_KEY
    refused = requests.post(claude.url + "/v1/messages", json={"model": "sonnet", "messages": HI}, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["type"] == "error" and refused.json()["error"]["type"] == "authentication_error"
