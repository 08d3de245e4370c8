"""Streaming through the proxy, on the threaded test server and on the real gevent
server (`python app.py serve`): no buffering, usage counted, cancellations recorded."""

import threading

import pytest

from promptproxy.collections import BY_NAME
from promptproxy.data.db import db

MESSAGES = [{"role": "user", "content": "tell me a story"}]


@pytest.fixture(params=["threaded", "gevent"])
def gw(request, gateway, served):
    """The gateway served either in-process or by the real gevent server."""
    if request.param == "gevent":
        server = served()
        gateway.url = server.url
        gateway.rows = lambda expected: rows_after_stop(server, expected)
    return gateway


def rows_after_stop(server, expected):
    """Stop the server (SIGTERM flushes its pending rows), then read them."""
    output = server.stop()
    with db.connection_context():
        model = BY_NAME["requests"].model
        rows = list(model.select().order_by(model.created, model.id))
    assert len(rows) == expected, output[-2000:]
    return rows


def test_stream_with_prompt_hides_the_usage_chunk_it_asked_for(gw):
    chunks = list(gw.client().chat.completions.create(model="gpt:pirate", messages=MESSAGES, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: tell me a story"
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    sent = gw.upstream.requests[-1].json
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["messages"][0] == {"role": "system", "content": "Talk like a pirate."}
    [row] = gw.rows(1)
    assert row.stream and row.status == 200
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (8, 5, 13)
    assert row.reply == "echo: tell me a story"
    assert row.ttfb_ms is not None and row.latency_ms >= row.ttfb_ms


def test_stream_passes_usage_when_the_client_asked(gw):
    chunks = list(gw.client().chat.completions.create(
        model="gpt", messages=MESSAGES, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 9
    [row] = gw.rows(1)
    assert row.total_tokens == 9


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_first_chunk_arrives_while_the_upstream_holds_the_second(gw, framing):
    second = threading.Event()
    gw.upstream.script(chunks=["Once ", "upon ", "a time"], gate=second, framing=framing)
    stream = gw.client().chat.completions.create(model="gpt", messages=MESSAGES, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.content == "Once "
    assert not second.is_set()  # the upstream is still holding chunk 2
    second.set()
    rest = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert rest == "upon a time"
    [row] = gw.rows(1)
    assert row.status == 200 and row.reply == "Once upon a time"


def test_completions_stream(gw):
    stream = gw.client().completions.create(model="gpt:pirate", prompt="Say hi", stream=True)
    text = "".join(c.choices[0].text for c in stream if c.choices)
    assert text == "echo: Talk like a pirate.\n\nSay hi"
    [row] = gw.rows(1)
    assert row.endpoint == "completions" and row.total_tokens == 6 + 7


def test_client_disconnect_closes_the_upstream_and_is_recorded(gw):
    go = threading.Event()
    words = [f"w{i} " for i in range(200)]
    gw.upstream.script(chunks=words, gate=go, delay=0.02)
    stream = gw.client().chat.completions.create(model="gpt", messages=MESSAGES, stream=True)
    assert next(iter(stream)).choices[0].delta.content == "w0 "
    stream.close()  # the client goes away mid-stream
    go.set()
    # The proxy notices on its next writes and drops the upstream request.
    assert gw.upstream.wait_for_disconnect(timeout=10)
    [row] = gw.rows(1)
    assert row.status == 499 and "disconnected" in row.error
    assert row.reply.startswith("w0 ") and len(row.reply.split()) < 200
