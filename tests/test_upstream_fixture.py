"""Tests for the FakeUpstream helper itself, with plain `requests` and the
official openai SDK talking straight to it: end-to-end proxy tests rely on it
behaving exactly as documented, so it gets its own tests."""

import array
import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from tests.upstream import FakeUpstream, fake_embedding


@pytest.fixture
def upstream():
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=2) as executor:
        yield executor


def chat(upstream, content="hello there", **extra):
    return requests.post(f"{upstream.base_url}/chat/completions", timeout=5,
                         json={"model": "gpt-4o-mini",
                               "messages": [{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": content}], **extra},
                         **({"stream": True} if extra.get("stream") else {}))


def sse_events(body):
    """The `data:` payloads of a complete SSE body, in order."""
    assert body.endswith(b"\n\n"), body
    events = body.decode().split("\n\n")[:-1]
    assert all(event.startswith("data: ") for event in events), events
    return [event[len("data: "):] for event in events]


def chunk_json(events):
    return [json.loads(event) for event in events if event != "[DONE]"]


# -- default answers --------------------------------------------------------

def test_chat_completion_json(upstream):
    response = chat(upstream)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "gpt-4o-mini"
    assert data["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "echo: hello there",
                                            "refusal": None}}]
    # "be brief" + "hello there" = 4 words in, "echo: hello there" = 3 words out
    assert data["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert chat(upstream).json()["choices"] == data["choices"]  # deterministic


def test_chat_content_parts(upstream):
    response = requests.post(f"{upstream.base_url}/chat/completions", timeout=5, json={
        "model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "look at"}, {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "text", "text": "this"}]}]})
    data = response.json()
    assert data["choices"][0]["message"]["content"] == "echo: look at this"
    assert data["usage"]["prompt_tokens"] == 3


def test_text_completion_json(upstream):
    url = f"{upstream.base_url}/completions"
    data = requests.post(url, json={"model": "davinci", "prompt": "say this"}, timeout=5).json()
    assert data["object"] == "text_completion"
    assert data["model"] == "davinci"
    assert data["choices"] == [{"index": 0, "text": "echo: say this", "logprobs": None,
                                "finish_reason": "stop"}]
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}

    data = requests.post(url, json={"model": "davinci", "prompt": ["one", "two three"]},
                         timeout=5).json()
    assert [choice["text"] for choice in data["choices"]] == ["echo: one", "echo: two three"]
    assert [choice["index"] for choice in data["choices"]] == [0, 1]
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def test_embeddings(upstream):
    url = f"{upstream.base_url}/embeddings"
    data = requests.post(url, json={"model": "e", "input": ["one two", "three"]}, timeout=5).json()
    assert data["object"] == "list" and data["model"] == "e"
    vectors = [item["embedding"] for item in data["data"]]
    assert vectors == [fake_embedding("one two"), fake_embedding("three")]
    assert len(vectors[0]) == 8 and vectors[0] != vectors[1]
    assert [item["index"] for item in data["data"]] == [0, 1]
    assert data["usage"] == {"prompt_tokens": 3, "total_tokens": 3}

    data = requests.post(url, json={"input": [[1, 2, 3], [4]], "dimensions": 3, "encoding_format": "base64"},
                         timeout=5).json()
    decoded = [array.array("f", base64.b64decode(item["embedding"])).tolist() for item in data["data"]]
    assert decoded == [fake_embedding([1, 2, 3], 3), fake_embedding([4], 3)]
    assert data["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    for bad in ({"input": {"text": "x"}}, {"input": []}, {"input": "x", "dimensions": 10 ** 30}):
        assert requests.post(url, json=bad, timeout=5).status_code == 400


def test_models(upstream):
    data = requests.get(f"{upstream.base_url}/models", timeout=5).json()
    assert data["object"] == "list"
    assert len(data["data"]) >= 2
    for model in data["data"]:
        assert set(model) == {"id", "object", "created", "owned_by"}
        assert model["object"] == "model"
    first = data["data"][0]["id"]
    assert requests.get(f"{upstream.base_url}/models/{first}", timeout=5).json()["id"] == first
    assert requests.get(f"{upstream.base_url}/models/nope", timeout=5).status_code == 404


def test_unknown_path_and_bad_body(upstream):
    response = requests.post(f"{upstream.base_url}/nowhere", json={}, timeout=5)
    assert response.status_code == 404
    assert "error" in response.json()
    assert requests.get(f"{upstream.base_url}/chat/completions", timeout=5).status_code == 405
    response = requests.post(f"{upstream.base_url}/chat/completions", data=b"{nope",
                             timeout=5)
    assert response.status_code == 400
    assert upstream.requests[-1].json is None
    assert upstream.requests[-1].body == b"{nope"


def test_keep_alive(upstream):
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(f"{upstream.base_url}/models", timeout=5).status_code == 200
    ports = {request.client_address[1] for request in upstream.requests}
    assert len(upstream.requests) == 3 and len(ports) == 1


# -- streaming ----------------------------------------------------------------

def test_stream_chunked_framing(upstream):
    with chat(upstream, "one two three", stream=True) as response:
        headers = response.raw.headers
        assert response.status_code == 200
        assert headers["Content-Type"] == "text/event-stream"
        assert headers["Transfer-Encoding"] == "chunked"
        assert "Content-Length" not in headers
        assert headers.get("Connection", "").lower() != "close"
        events = sse_events(response.raw.read())
    assert events[-1] == "[DONE]"
    chunks = chunk_json(events)
    assert len(events) == 5  # a chunk per word of "echo: one two three", then [DONE]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "echo:"}
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "echo: one two three"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert all("usage" not in chunk for chunk in chunks)


def test_stream_close_framing(upstream):
    upstream.script(framing="close")
    with chat(upstream, "hi", stream=True) as response:
        headers = response.raw.headers
        assert headers["Connection"] == "close"
        assert "Transfer-Encoding" not in headers
        assert "Content-Length" not in headers
        events = sse_events(response.raw.read())
    assert events[-1] == "[DONE]"
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunk_json(events)) == "echo: hi"


def test_stream_include_usage(upstream):
    with chat(upstream, "a b c", stream=True, stream_options={"include_usage": True}) as response:
        events = sse_events(response.raw.read())
    assert events[-1] == "[DONE]"
    chunks = chunk_json(events)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert all(chunk["usage"] is None for chunk in chunks[:-1])

    with chat(upstream, "a b c", stream=True,
              stream_options={"include_usage": False}) as response:
        chunks = chunk_json(sse_events(response.raw.read()))
    assert all(chunk["choices"] and "usage" not in chunk for chunk in chunks)


def test_text_completion_stream(upstream):
    response = requests.post(f"{upstream.base_url}/completions", stream=True, timeout=5, json={
        "model": "m", "prompt": "x y", "stream": True, "stream_options": {"include_usage": True}})
    with response:
        events = sse_events(response.raw.read())
    chunks = chunk_json(events)
    assert events[-1] == "[DONE]"
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "echo: x y"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5


def test_scripted_reply_and_chunks(upstream):
    upstream.script(reply="scripted answer")
    upstream.script(chunks=["He", "llo", "!"])
    assert chat(upstream).json()["choices"][0]["message"]["content"] == "scripted answer"
    with chat(upstream, stream=True) as response:
        chunks = chunk_json(sse_events(response.raw.read()))
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["He", "llo", "!"]
    # the queue is empty again: back to the default echo
    assert chat(upstream, "x").json()["choices"][0]["message"]["content"] == "echo: x"


# -- scripted failures ----------------------------------------------------------

def test_scripted_error_with_headers(upstream):
    error = {"error": {"message": "slow down", "type": "rate_limit_error", "code": None}}
    upstream.script(status=429, headers={"Retry-After": "7"}, body=error)
    upstream.script(status=503)
    response = chat(upstream)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json() == error
    response = chat(upstream)
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "api_error"
    assert chat(upstream).status_code == 200


def test_scripted_raw_body(upstream):
    upstream.script(status=502, body="Bad Gateway")
    upstream.script(body=b"\x00\x01", headers={"Content-Type": "application/x-thing"})
    response = requests.get(f"{upstream.base_url}/anything", timeout=5)
    assert (response.status_code, response.text) == (502, "Bad Gateway")
    response = requests.get(f"{upstream.base_url}/anything", timeout=5)
    assert response.status_code == 200 and response.content == b"\x00\x01"
    assert response.headers["Content-Type"] == "application/x-thing"


def test_script_rejects_unknown_options(upstream):
    with pytest.raises(TypeError):
        upstream.script(stauts=500)
    with pytest.raises(ValueError):
        upstream.script(framing="gzip")


def test_drop_after_chunked_is_an_error(upstream):
    upstream.script(chunks=["a", "b", "c", "d"], drop_after=2)
    with chat(upstream, stream=True) as response:
        received = []
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for line in response.iter_lines():
                received.append(line)
    data_lines = [line for line in received if line]  # iter_lines also yields the blank lines
    assert [json.loads(line[len(b"data: "):])["choices"][0]["delta"]["content"]
            for line in data_lines] == ["a", "b"]


def test_drop_after_close_framing_truncates(upstream):
    upstream.script(chunks=["a", "b", "c", "d"], drop_after=2, framing="close")
    with chat(upstream, stream=True) as response:
        body = response.raw.read()
    events = sse_events(body)
    assert [c["choices"][0]["delta"]["content"] for c in chunk_json(events)] == ["a", "b"]
    assert "[DONE]" not in events


def test_drop_after_json_truncates_body(upstream):
    upstream.script(drop_after=10)  # headers, then 10 bytes of the promised body
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        chat(upstream)


# -- gates, hangs and disconnects ------------------------------------------------

def read_event(raw):
    """Read one whole SSE event from a urllib3 response, using read1 so we
    never wait for more bytes than the server has sent."""
    data = b""
    while not data.endswith(b"\n\n"):
        more = raw.read1(65536)
        assert more, f"stream ended after {data!r}"
        data += more
    return data


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_gate_holds_chunk_one(upstream, framing):
    gate = threading.Event()
    upstream.script(chunks=["first", "second"], gate=gate, framing=framing)
    with chat(upstream, stream=True) as response:
        event = read_event(response.raw)  # would block forever if chunk 0 were held
        assert json.loads(event[len(b"data: "):])["choices"][0]["delta"]["content"] == "first"
        gate.set()
        events = sse_events(response.raw.read())
    assert events[-1] == "[DONE]"
    assert chunk_json(events)[0]["choices"][0]["delta"]["content"] == "second"


def test_gate_list_releases_in_order(upstream):
    gates = [threading.Event(), threading.Event()]
    upstream.script(chunks=["a", "b", "c"], gate=gates)
    with chat(upstream, stream=True) as response:
        contents = []
        for gate in [None, *gates]:
            if gate is not None:
                gate.set()
            event = read_event(response.raw)
            contents.append(json.loads(event[len(b"data: "):])["choices"][0]["delta"]["content"])
        assert contents == ["a", "b", "c"]
        assert sse_events(response.raw.read()) == ["[DONE]"]


def test_client_disconnect_while_held(upstream):
    gate = threading.Event()
    upstream.script(chunks=["a", "b"], gate=gate)
    response = chat(upstream, stream=True)
    read_event(response.raw)
    assert upstream.client_disconnects == 0
    response.close()  # the client goes away while the upstream holds chunk 1
    assert upstream.wait_for_disconnect(timeout=5)
    assert upstream.client_disconnects == 1
    assert upstream.disconnected.is_set()


def test_no_disconnect_counted_for_complete_streams(upstream):
    with chat(upstream, stream=True) as response:
        response.raw.read()
    assert chat(upstream).status_code == 200
    assert not upstream.wait_for_disconnect(timeout=0.05)


def test_hang_released_by_gate(upstream, pool):
    gate = threading.Event()
    upstream.script(hang=True, gate=gate)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{upstream.base_url}/models", timeout=(5, 0.2))
    upstream.script(hang=True, gate=gate)
    future = pool.submit(requests.get, f"{upstream.base_url}/models", timeout=5)
    assert upstream.wait_for_request(2)
    gate.set()
    assert future.result().status_code == 200


def test_hang_until_stop(upstream, pool):
    upstream.script(hang=True)
    future = pool.submit(requests.get, f"{upstream.base_url}/models", timeout=5)
    assert upstream.wait_for_request()
    started = time.monotonic()
    upstream.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(requests.exceptions.ConnectionError):
        future.result()


def test_stop_releases_gates(upstream):
    gate = threading.Event()
    upstream.script(chunks=["a", "b"], gate=gate)
    response = chat(upstream, stream=True)
    read_event(response.raw)
    upstream.stop()
    assert gate.is_set()
    assert upstream.client_disconnects == 0  # stopping is not a client disconnect
    response.close()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{upstream.base_url}/models", timeout=5)


def test_delay_between_chunks(upstream):
    upstream.script(chunks=["a", "b", "c"], delay=0.05)
    started = time.monotonic()
    with chat(upstream, stream=True) as response:
        events = sse_events(response.raw.read())
    assert time.monotonic() - started >= 0.15  # 3 gaps: before b, c and [DONE]
    assert len(events) == 4


# -- recording ----------------------------------------------------------------------

def test_recorded_requests(upstream):
    requests.post(f"{upstream.base_url}/chat/completions?x=1", timeout=5,
                  headers={"Authorization": "Bearer sk-test", "X-Custom": "yes"},
                  json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    requests.get(f"{upstream.base_url}/models", timeout=5)
    assert upstream.wait_for_request(2, timeout=0)
    post, get = upstream.requests
    assert (post.method, post.path) == ("POST", "/v1/chat/completions?x=1")
    assert post.headers["authorization"] == "Bearer sk-test"
    assert post.headers["AUTHORIZATION"] == "Bearer sk-test"
    assert "x-custom" in post.headers and "Authorization" in dict(post.headers)
    assert post.json == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert json.loads(post.body) == post.json
    assert (get.method, get.path, get.body, get.json) == ("GET", "/v1/models", b"", None)


def test_chunked_request_body_is_recorded(upstream):
    body = iter([b'{"model": "m", ', b'"prompt": "chunked"}'])
    response = requests.post(f"{upstream.base_url}/completions", data=body, timeout=5)
    assert response.json()["choices"][0]["text"] == "echo: chunked"
    assert upstream.requests[0].headers["Transfer-Encoding"] == "chunked"
    assert upstream.requests[0].json == {"model": "m", "prompt": "chunked"}


def test_wait_for_request_times_out(upstream):
    assert not upstream.wait_for_request(1, timeout=0.05)


def test_reset(upstream):
    gate = threading.Event()
    upstream.script(status=500)
    upstream.script(gate=gate)
    requests.get(f"{upstream.base_url}/models", timeout=5)
    upstream.reset()
    assert upstream.requests == [] and gate.is_set()
    assert requests.get(f"{upstream.base_url}/models", timeout=5).status_code == 200


# -- the official SDK ------------------------------------------------------------------

def test_openai_sdk(upstream):
    client = openai.OpenAI(base_url=upstream.base_url, api_key="x", max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping pong"}])
    assert completion.choices[0].message.content == "echo: ping pong"
    assert completion.usage.total_tokens == 5
    assert upstream.requests[0].headers["Authorization"] == "Bearer x"

    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ping pong"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content for c in chunks if c.choices) == "echo: ping pong"
    assert chunks[-1].usage.completion_tokens == 3
    assert upstream.requests[1].json["stream"] is True
