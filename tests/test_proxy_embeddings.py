"""POST /v1/embeddings through the official `openai` SDK against a real local
upstream: the vectors arrive in either encoding, the request row counts the input
tokens, and the gateway's refusals (Anthropic models, stored prompts, access
rules, rate limits) and the upstream's errors reach the client in OpenAI's shape."""

import array
import base64

import openai
import pytest

from promptproxy.services import services

from .anthropic_upstream import AnthropicUpstream
from .conftest import UPSTREAM_SECRET
from .upstream import fake_embedding


def floats(encoded):
    """The numbers a base64 embedding holds (little-endian float32, as OpenAI sends them)."""
    return array.array("f", base64.b64decode(encoded)).tolist()


def embed(gateway, key=None, **kwargs):
    return gateway.client(key).embeddings.create(**{"model": "gpt", **kwargs})


@pytest.fixture
def clock(app):
    """Put the limiter on a clock the test moves; 10 s into a minute."""
    now = [1_700_000_000 - 1_700_000_000 % 86400 + 3600 + 10.0]
    services(app).limiter.clock = lambda: now[0]
    return now


def test_vectors_usage_and_one_row(gateway):
    answer = embed(gateway, input=["hello there", "one"])
    # The SDK asks for base64 unless told otherwise, and decodes it into floats.
    assert [item.embedding for item in answer.data] == [fake_embedding("hello there"), fake_embedding("one")]
    assert [item.index for item in answer.data] == [0, 1]
    assert (answer.usage.prompt_tokens, answer.usage.total_tokens) == (3, 3)
    sent = gateway.upstream.requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.json == {"model": "gpt-4o-mini", "input": ["hello there", "one"], "encoding_format": "base64"}
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"

    (row,) = gateway.rows(1)
    assert (row.endpoint, row.status, row.stream, row.error) == ("embeddings", 200, False, None)
    assert (row.model, row.api, row.prompt, row.model_ref) == (gateway.model.id, gateway.api.id, None, "gpt")
    assert (row.input_tokens, row.output_tokens, row.total_tokens) == (3, 0, 3)
    assert row.ttfb_ms is not None and row.reply is None
    # A tracked key keeps the request as sent, and the answer without its vectors.
    assert row.request_body == {"model": "gpt", "input": ["hello there", "one"], "encoding_format": "base64"}
    assert row.response_body == {
        "object": "list", "model": "gpt-4o-mini", "usage": {"prompt_tokens": 3, "total_tokens": 3},
        "data": {"embeddings": 2, "dimensions": 8, "encoding_format": "base64"}}


def test_float_and_base64_encodings_dimensions_and_user_are_passed_through(gateway):
    as_floats = embed(gateway, input="a text", encoding_format="float", dimensions=4, user="alice")
    assert as_floats.data[0].embedding == fake_embedding("a text", 4)
    assert gateway.upstream.requests[-1].json == {"model": "gpt-4o-mini", "input": "a text",
                                                  "encoding_format": "float", "dimensions": 4, "user": "alice"}
    as_base64 = embed(gateway, input="a text", encoding_format="base64")
    assert isinstance(as_base64.data[0].embedding, str)  # asked for explicitly: the SDK leaves it as sent
    assert floats(as_base64.data[0].embedding) == fake_embedding("a text")

    float_row, base64_row = gateway.rows(2)
    assert float_row.response_body["data"] == {"embeddings": 1, "dimensions": 4, "encoding_format": "float"}
    assert base64_row.response_body["data"] == {"embeddings": 1, "dimensions": 8, "encoding_format": "base64"}
    assert [row.input_tokens for row in (float_row, base64_row)] == [2, 2]


def test_token_id_inputs(gateway):
    one = embed(gateway, input=[5, 6, 7], encoding_format="float")
    assert [item.embedding for item in one.data] == [fake_embedding([5, 6, 7])]
    several = embed(gateway, input=[[1, 2], [3]], encoding_format="float")
    assert [item.embedding for item in several.data] == [fake_embedding([1, 2]), fake_embedding([3])]
    assert [row.input_tokens for row in gateway.rows(2)] == [3, 3]


def test_an_untracked_key_keeps_no_bodies(gateway):
    quiet = gateway.create("keys", user=gateway.user.id, label="quiet", track=False)
    embed(gateway, quiet, input="hi")
    (row,) = gateway.rows(1)
    assert (row.request_body, row.response_body, row.input_tokens) == (None, None, 1)


def test_a_model_behind_an_anthropic_api_is_a_400(gateway):
    with AnthropicUpstream() as claude:
        api = gateway.create("apis", name="Anthropic", base_url=claude.base_url + "/v1", api_key="sk-ant-x",
                             protocol="anthropic")
        sonnet = gateway.create("models", api=api.id, model="claude-sonnet-4-6", name="sonnet")
        with pytest.raises(openai.BadRequestError) as refused:
            embed(gateway, model="sonnet", input="hi")
        assert claude.requests == []
    error = refused.value.body
    assert error["param"] == "model" and error["type"] == "invalid_request_error"
    assert "OpenAI-compatible" in error["message"]
    (row,) = gateway.rows(1)
    assert (row.endpoint, row.status, row.model, row.api) == ("embeddings", 400, sonnet.id, api.id)


def test_a_stored_prompt_is_a_400(gateway):
    for ref in ("gpt:pirate", f"{gateway.model.id}:{gateway.prompt.id}"):
        with pytest.raises(openai.BadRequestError) as refused:
            embed(gateway, model=ref, input="hi")
        assert refused.value.body["param"] == "model"
        assert "prompts do not apply" in refused.value.message
    assert gateway.upstream.requests == []
    assert [(row.status, row.prompt) for row in gateway.rows(2)] == [(400, gateway.prompt.id)] * 2


def test_a_stream_is_refused(gateway):
    with pytest.raises(openai.BadRequestError) as refused:
        embed(gateway, input="hi", extra_body={"stream": True})
    assert refused.value.body["param"] == "stream"
    embed(gateway, input="hi", extra_body={"stream": False})  # false is no stream: left out upstream
    assert "stream" not in gateway.upstream.requests[-1].json
    assert [row.status for row in gateway.rows(2)] == [400, 200]


def test_access_rules_apply(gateway):
    gateway.update("users", gateway.user, models=[gateway.llama.id])
    with pytest.raises(openai.PermissionDeniedError) as refused:
        embed(gateway, input="hi")
    assert refused.value.body["code"] == "model_not_allowed" and refused.value.body["param"] == "model"
    embed(gateway, model="llama3:8b", input="hi")
    assert [request.json["model"] for request in gateway.upstream.requests] == ["llama3:8b"]
    assert [row.status for row in gateway.rows(2)] == [403, 200]


def test_rate_limits_apply_and_count_the_input_tokens(gateway, clock):
    gateway.update("users", gateway.user, rpm=2)
    embed(gateway, input="hi")
    embed(gateway, input="hi")
    with pytest.raises(openai.RateLimitError) as limited:
        embed(gateway, input="hi")
    assert limited.value.response.headers["Retry-After"] == "50"
    assert len(gateway.upstream.requests) == 2  # the refused call never went upstream

    clock[0] += 60
    gateway.update("users", gateway.user, rpm=None, tpm=5)
    embed(gateway, input="one two three four five")  # the 5 tokens it reports fill the minute
    with pytest.raises(openai.RateLimitError) as over_tokens:
        embed(gateway, input="six")
    assert over_tokens.value.body["type"] == "tokens"
    assert [row.status for row in gateway.rows(5)] == [200, 200, 429, 200, 429]


def test_upstream_errors_pass_back_with_their_status(gateway):
    gateway.upstream.script(status=429, headers={"Retry-After": "7"})
    with pytest.raises(openai.RateLimitError) as limited:
        embed(gateway, input="hi")
    assert limited.value.response.headers["Retry-After"] == "7"
    assert limited.value.body["message"] == "Scripted error 429"
    gateway.upstream.script(status=400, body={"error": {"message": "This model does not embed.",
                                                         "type": "invalid_request_error", "param": "model",
                                                         "code": None}})
    with pytest.raises(openai.BadRequestError) as refused:
        embed(gateway, input="hi")
    assert refused.value.body["message"] == "This model does not embed."
    gateway.upstream.script(body="<html>bad gateway</html>")
    with pytest.raises(openai.InternalServerError) as broken:
        embed(gateway, input="hi")
    assert broken.value.status_code == 502
    rows = gateway.rows(3)
    assert [(row.status, row.error) for row in rows[:2]] == [(429, "Scripted error 429"),
                                                             (400, "This model does not embed.")]
    assert rows[2].status == 502 and "not JSON" in rows[2].error
    assert all(row.input_tokens is None for row in rows)


VECTORS = [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}]

# 200 answers whose usage no client library expects: missing, not an object,
# numbers as text or out of range, a bool; and (input, output, total) as stored.
ODD_USAGE = [
    ({}, (None, 0, None)),
    ({"usage": None}, (None, 0, None)),
    ({"usage": "n/a"}, (None, 0, None)),
    ({"usage": [3]}, (None, 0, None)),
    ({"usage": {"prompt_tokens": "12", "total_tokens": "12"}}, (12, 0, 12)),
    ({"usage": {"prompt_tokens": 5}}, (5, 0, 5)),
    ({"usage": {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 4}}, (4, 0, 4)),
    ({"usage": {"prompt_tokens": 1.5, "total_tokens": True}}, (2, 0, None)),
    ({"usage": {"prompt_tokens": 10 ** 30}}, (None, 0, None)),
]


@pytest.mark.parametrize("usage, stored", ODD_USAGE, ids=range(len(ODD_USAGE)))
def test_odd_upstream_usage_ends_the_call_once(gateway, usage, stored):
    """With one concurrent call allowed, a call that leaked its slot would make the
    next one a 429; a call that lost its row would leave one row short."""
    gateway.update("users", gateway.user, concurrency=1)
    gateway.upstream.script(body={"object": "list", "model": "gpt-4o-mini", "data": VECTORS, **usage})
    answer = embed(gateway, input="hi", encoding_format="float")
    assert answer.data[0].embedding == [0.5, -0.25]  # the upstream's answer, as it is
    embed(gateway, input="hi")
    odd, normal = gateway.rows(2)
    assert (odd.status, normal.status) == (200, 200)
    assert (odd.input_tokens, odd.output_tokens, odd.total_tokens) == stored
    assert odd.response_body.get("usage") == usage.get("usage")  # the body is kept as received
