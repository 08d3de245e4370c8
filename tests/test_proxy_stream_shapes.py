"""Upstream streams in the shapes real servers send, through the proxy to the official
openai SDK: line ends cut across reads, and LiteLLM's usage chunks."""

import json
import threading
from pathlib import Path

import pytest
import requests

from promptproxy.providers.sse import Parser

from .anthropic_upstream import AnthropicUpstream

LITELLM = Path(__file__).parent / "fixtures" / "litellm-1.106.2"
SSE = {"Content-Type": "text/event-stream"}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def claude(gateway):
    with AnthropicUpstream() as server:
        gateway.claude_upstream = server
        api = gateway.create("apis", name="Anthropic", base_url=server.base_url + "/v1", api_key="sk-ant-k3y",
                             protocol="anthropic")
        gateway.create("models", api=api.id, model="claude-sonnet-4-6", name="sonnet")
        yield gateway


@pytest.mark.parametrize("line_end", ["\r\n", "\r"])
def test_claude_to_openai_client_when_each_read_ends_inside_a_line_end(claude, line_end):
    """Each upstream write ends between the CR and LF of its event's last line end
    (with CRLF), and the next one waits until the client has received what the
    previous event became: each event had to be recognised from its own read."""
    # message_start, content_block_start, ping, delta, delta, content_block_stop, message_delta,
    # message_stop (+ the lone LF, with CRLF): the client gets a chunk for the 1st, 4th, 5th and 7th.
    gates = [threading.Event() for _ in range(8)]
    for i in (1, 2, 5, 7):
        gates[i].set()
    waiting = [gates[i] for i in (0, 3, 4, 6)]
    claude.claude_upstream.script(chunks=["Hello", " world"], line_end=line_end, gate=gates)
    stream = claude.client(timeout=10).chat.completions.create(model="sonnet", messages=HI, stream=True)
    text = ""
    for chunk in stream:
        text += chunk.choices[0].delta.content or "" if chunk.choices else ""
        if waiting:
            waiting.pop(0).set()
    assert text == "Hello world"
    [row] = claude.rows(1)
    assert row.status == 200 and row.reply == "Hello world" and row.output_tokens == 2


def replay(gateway, name, track):
    """The upstream answers with the recorded stream `name`; the caller's key tracks or not."""
    gateway.upstream.script(body=(LITELLM / name).read_bytes(), headers=SSE)
    return gateway.key if track else gateway.create("keys", user=gateway.user.id, label="plain")


def chat_text(chunks):
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def completion_text(chunks):
    return "".join(c.choices[0].text or "" for c in chunks if c.choices)


CASES = [  # (endpoint, recorded stream, client asks for usage)
    ("chat", "chat_stream_include_usage.sse", False),
    ("chat", "chat_stream_include_usage.sse", True),
    ("completions", "completions_stream_include_usage.sse", False),
    ("completions", "completions_stream_include_usage.sse", True),
    ("completions", "completions_stream_no_usage.sse", False),
]


@pytest.mark.parametrize("track", [True, False], ids=["tracked", "untracked"])
@pytest.mark.parametrize("endpoint,name,asked", CASES)
def test_litellm_usage_reaches_the_client_only_when_it_asked(gateway, endpoint, name, asked, track):
    key = replay(gateway, name, track)
    options = {"stream_options": {"include_usage": True}} if asked else {}
    client = gateway.client(key)
    if endpoint == "chat":
        chunks = list(client.chat.completions.create(model="gpt", messages=HI, stream=True, **options))
        text = chat_text(chunks)
    else:
        chunks = list(client.completions.create(model="gpt", prompt="hi", stream=True, **options))
        text = completion_text(chunks)
    assert text == "Hello from the mock"
    assert gateway.upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    with_usage = [c for c in chunks if c.usage is not None]
    [row] = gateway.rows(1)
    if "no_usage" in name:  # LiteLLM's zero usage on every chunk, and nothing better
        assert with_usage == [] and row.total_tokens == 0
        return
    if asked:
        assert with_usage == [chunks[-1]] and chunks[-1].usage.total_tokens == 12
    else:
        assert with_usage == [] and all(c.choices for c in chunks)
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (8, 4, 12)
    assert row.status == 200


def test_chunks_without_usage_pass_through_byte_for_byte(gateway):
    """A client that did not ask gets LiteLLM's stream as it was sent, less the
    final chunk that only carried the usage."""
    key = replay(gateway, "chat_stream_include_usage.sse", track=False)
    response = requests.post(gateway.url + "/v1/chat/completions", stream=True, timeout=10,
                             headers={"Authorization": f"Bearer {key}"},
                             json={"model": "gpt", "messages": HI, "stream": True})
    received = response.content
    recorded = (LITELLM / "chat_stream_include_usage.sse").read_bytes()
    blocks = recorded.split(b"\n\n")
    usage_block = next(b for b in blocks if b'"usage"' in b)
    assert received == recorded.replace(usage_block + b"\n\n", b"")
    [row] = gateway.rows(1)
    assert row.total_tokens == 12


def test_usage_is_stripped_from_completion_chunks_that_carry_text(gateway):
    """LiteLLM's completions put a usage on every chunk: each is passed on without it."""
    key = replay(gateway, "completions_stream_no_usage.sse", track=False)
    response = requests.post(gateway.url + "/v1/completions", stream=True, timeout=10,
                             headers={"Authorization": f"Bearer {key}"},
                             json={"model": "gpt", "prompt": "hi", "stream": True})
    parser = Parser()
    received = parser.feed(response.content) + parser.end()
    parser = Parser()
    recorded = parser.feed((LITELLM / "completions_stream_no_usage.sse").read_bytes())
    expected = [event.data if event.data == b"[DONE]" else
                {k: v for k, v in json.loads(event.data).items() if k != "usage"} for event in recorded]
    assert [e.data if e.data == b"[DONE]" else json.loads(e.data) for e in received] == expected
