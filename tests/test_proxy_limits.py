"""Per-user rate limits: each refuses exactly when it should, with OpenAI's headers,
and holds across gunicorn workers."""

import concurrent.futures
import threading

import openai
import pytest

from promptproxy.accounting.limits import reset_text
from promptproxy.services import services

from .servers import dockerfile_cmd

HI = [{"role": "user", "content": "hi"}]  # the fake upstream counts 1 + 2 = 3 tokens for this


def raw_call(gateway, key=None, **kwargs):
    """A chat call returning the raw response, so the headers can be read."""
    return gateway.client(key).chat.completions.with_raw_response.create(model="gpt", messages=HI, **kwargs)


@pytest.fixture
def clock(app):
    """Put the limiter on a clock the test moves; 10 s into a minute."""
    now = [1_700_000_000 - 1_700_000_000 % 86400 + 3600 + 10.0]
    services(app).limiter.clock = lambda: now[0]
    return now


def test_requests_per_minute(gateway, clock):
    gateway.update("users", gateway.user, rpm=3)
    remaining = []
    for _ in range(3):
        response = raw_call(gateway)
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        assert response.headers["x-ratelimit-reset-requests"] == "50s"
        remaining.append(response.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    with pytest.raises(openai.RateLimitError) as limited:
        raw_call(gateway)
    assert limited.value.response.headers["Retry-After"] == "50"
    assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert "3 requests per minute" in limited.value.message
    assert len(gateway.upstream.requests) == 3  # the refused call never went upstream
    clock[0] += 50  # the next minute
    assert raw_call(gateway).headers["x-ratelimit-remaining-requests"] == "2"
    assert [row.status for row in gateway.rows(5)] == [200, 200, 200, 429, 200]


def test_requests_per_day(gateway, clock):
    gateway.update("users", gateway.user, rpd=2)
    raw_call(gateway)
    clock[0] += 120  # other minutes, same day
    assert raw_call(gateway).headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as limited:
        raw_call(gateway)
    assert int(limited.value.response.headers["Retry-After"]) > 3600
    clock[0] += 86400
    raw_call(gateway)


def test_tokens_per_minute(gateway, clock):
    gateway.update("users", gateway.user, tpm=5)
    first = raw_call(gateway)
    assert first.headers["x-ratelimit-remaining-tokens"] == "5"
    second = raw_call(gateway)  # 3 used so far, under 5
    assert second.headers["x-ratelimit-remaining-tokens"] == "2"
    with pytest.raises(openai.RateLimitError) as limited:  # 6 used
        raw_call(gateway)
    assert "tokens per minute" in limited.value.message
    assert limited.value.body["type"] == "tokens"


def test_streamed_tokens_count_too(gateway, clock):
    gateway.update("users", gateway.user, tpm=5)
    for _ in range(2):
        list(gateway.client().chat.completions.create(model="gpt", messages=HI, stream=True))
    with pytest.raises(openai.RateLimitError):
        raw_call(gateway)


def test_concurrent_requests(gateway, clock):
    gateway.update("users", gateway.user, concurrency=1)
    hold = threading.Event()
    gateway.upstream.script(chunks=["a", "b"], gate=hold)
    stream = gateway.client().chat.completions.create(model="gpt", messages=HI, stream=True)
    next(iter(stream))  # the first call is running
    with pytest.raises(openai.RateLimitError) as limited:
        raw_call(gateway)
    assert "1 concurrent requests" in limited.value.message
    hold.set()
    list(stream)
    gateway.rows(2)  # the stream has ended and released its slot
    raw_call(gateway)


def test_a_key_override_counts_on_its_own(gateway, clock):
    gateway.update("users", gateway.user, rpm=1)
    own = gateway.create("keys", user=gateway.user.id, rpm=2)
    raw_call(gateway)
    with pytest.raises(openai.RateLimitError):
        raw_call(gateway)
    assert raw_call(gateway, own).headers["x-ratelimit-limit-requests"] == "2"
    raw_call(gateway, own)
    with pytest.raises(openai.RateLimitError):
        raw_call(gateway, own)


def test_instance_default_and_no_limit_no_headers(gateway, app, clock):
    assert "x-ratelimit-limit-requests" not in raw_call(gateway).headers
    services(app).limiter.defaults = {"rpm": 1}
    raw_call(gateway)
    with pytest.raises(openai.RateLimitError):
        raw_call(gateway)
    gateway.update("users", gateway.user, rpm=5)  # a user's own limit beats the default
    assert raw_call(gateway).headers["x-ratelimit-limit-requests"] == "5"


def test_refusals_of_other_kinds_do_not_count(gateway, clock):
    gateway.update("users", gateway.user, rpm=1)
    with pytest.raises(openai.NotFoundError):
        gateway.client().chat.completions.create(model="nope", messages=HI)
    raw_call(gateway)


def test_reset_text():
    assert [reset_text(s) for s in (0.2, 59, 60, 361, 48000)] == ["1s", "59s", "1m0s", "6m1s", "13h20m0s"]


@pytest.mark.slow
def test_limits_hold_across_two_gunicorn_workers(gateway, served):
    gateway.update("users", gateway.user, rpd=20)  # a day window: the run never straddles a reset
    command = [arg if not arg.startswith("0.0.0.0:") else "127.0.0.1:{port}" for arg in dockerfile_cmd()]
    server = served(command)
    gateway.url = server.url
    client = gateway.client()

    def one(_):
        try:
            response = client.chat.completions.with_raw_response.create(model="gpt", messages=HI)
            return int(response.headers["x-ratelimit-remaining-requests"])
        except openai.RateLimitError:
            return None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(50)))
    admitted = sorted(r for r in results if r is not None)
    assert admitted == list(range(20))  # exactly 20, each told a different remaining count
    assert results.count(None) == 30
