"""Every refusal and failure reaches the SDK as the right exception, in OpenAI's
error shape, and never carries a secret."""

import datetime as dt
import logging

import openai
import pytest
import requests

from .conftest import UPSTREAM_SECRET

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def chat(gateway, model="gpt", key=None, **kwargs):
    return gateway.client(key).chat.completions.create(model=model, **CHAT, **kwargs)


def assert_openai_shape(response, status):
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_missing_and_unknown_keys(gateway):
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        response = requests.post(gateway.url + "/v1/chat/completions", json={"model": "gpt", **CHAT},
                                 headers=headers, timeout=10)
        assert_openai_shape(response, 401)
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(gateway, key="pp-not-a-real-key-at-all-0000000000")
    assert refused.value.status_code == 401
    assert gateway.rows(0) == []  # no user to account unknown keys to


def test_inactive_and_expired_keys(gateway):
    other = gateway.create("keys", user=gateway.user.id, active=False)
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, key=other)
    past = dt.datetime.utcnow() - dt.timedelta(minutes=1)
    expired = gateway.create("keys", user=gateway.user.id, expires=past.isoformat())
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(gateway, key=expired)
    assert "expired" in refused.value.message
    future = dt.datetime.utcnow() + dt.timedelta(days=1)
    valid = gateway.create("keys", user=gateway.user.id, expires=future.isoformat())
    assert chat(gateway, key=valid).choices[0].message.content == "echo: hi"


def test_inactive_user_is_forbidden_and_accounted(gateway):
    gateway.update("users", gateway.user, active=False)
    with pytest.raises(openai.PermissionDeniedError):
        chat(gateway)
    with pytest.raises(openai.PermissionDeniedError):
        gateway.client().models.list()
    [row] = gateway.rows(1)
    assert (row.status, row.user) == (403, gateway.user.id)


@pytest.mark.parametrize("model, error, fragment", [
    ("nope", openai.NotFoundError, "model 'nope'"),
    ("gpt:nope", openai.NotFoundError, "prompt 'nope'"),
    ("nope:pirate", openai.NotFoundError, "model 'nope'"),
    ("gpt:", openai.BadRequestError, "Malformed"),
    (":pirate", openai.BadRequestError, "Malformed"),
    ("", openai.BadRequestError, "'model'"),
])
def test_bad_model_references(gateway, model, error, fragment):
    with pytest.raises(error) as refused:
        chat(gateway, model=model)
    assert fragment in refused.value.message
    assert gateway.upstream.requests == []


def test_inactive_model_prompt_or_api_is_not_found(gateway):
    gateway.update("prompts", gateway.prompt, active=False)
    with pytest.raises(openai.NotFoundError):
        chat(gateway, model="gpt:pirate")
    gateway.update("apis", gateway.api, active=False)
    with pytest.raises(openai.NotFoundError):
        chat(gateway, model="gpt")


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
    (b'{"model": "gpt", "messages": "hi"}', "'messages' must be an array"),
    (b'{"model": 5, "messages": []}', "'model' must be"),
])
def test_bad_bodies_are_400(gateway, body, message):
    response = requests.post(gateway.url + "/v1/chat/completions", data=body, timeout=10,
                             headers={"Authorization": f"Bearer {gateway.key}",
                                      "Content-Type": "application/json"})
    error = assert_openai_shape(response, 400)
    assert message in error["message"]


def test_oversized_body_is_413(gateway):
    gateway.app.config["MAX_CONTENT_LENGTH"] = 1000
    with pytest.raises(openai.APIStatusError) as refused:
        gateway.client().chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x" * 2000}])
    assert refused.value.status_code == 413
    assert "larger than the limit" in refused.value.message


def test_unknown_route_under_v1_is_openai_json(gateway):
    response = requests.get(gateway.url + "/v1/nothing", timeout=10)
    assert_openai_shape(response, 404)
    response = requests.get(gateway.url + "/v1/chat/completions", timeout=10)
    assert_openai_shape(response, 405)


def test_upstream_errors_keep_their_status_body_and_retry_after(gateway):
    body = {"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                      "code": "rate_limit_exceeded"}}
    gateway.upstream.script(status=429, body=body, headers={"Retry-After": "7"})
    with pytest.raises(openai.RateLimitError) as limited:
        chat(gateway)
    assert limited.value.response.headers["Retry-After"] == "7"
    assert limited.value.body == body["error"]
    gateway.upstream.script(status=500, body={"error": {"message": "boom", "type": "server_error"}})
    with pytest.raises(openai.InternalServerError):
        chat(gateway)
    gateway.upstream.script(status=400, body={"error": {"message": "context too long"}})
    with pytest.raises(openai.BadRequestError) as bad:
        chat(gateway, stream=True)
    assert bad.value.message.endswith("context too long") or "context too long" in str(bad.value)
    rows = gateway.rows(3)
    assert [(r.status, r.error) for r in rows] == [(429, "Rate limit reached"), (500, "boom"),
                                                  (400, "context too long")]


def test_unreachable_upstream_is_502(gateway, caplog):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway.update("apis", gateway.api, base_url=f"http://127.0.0.1:{port}/v1")
    with caplog.at_level(logging.DEBUG), pytest.raises(openai.APIStatusError) as failed:
        chat(gateway)
    assert failed.value.status_code == 502
    assert "'Local' could not be reached" in failed.value.message
    assert UPSTREAM_SECRET not in caplog.text and UPSTREAM_SECRET not in failed.value.response.text


def test_silent_upstream_is_504(gateway):
    gateway.update("apis", gateway.api, timeout=1)
    gateway.upstream.script(hang=True)
    with pytest.raises(openai.APIStatusError) as failed:
        chat(gateway)
    assert failed.value.status_code == 504
    [row] = gateway.rows(1)
    assert row.status == 504


def test_stream_broken_mid_way_ends_with_an_error_event(gateway):
    gateway.upstream.script(chunks=["a ", "b ", "c ", "d"], drop_after=2)
    stream = chat(gateway, stream=True)
    received = []
    with pytest.raises(openai.APIError) as broken:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["a ", "b "]
    assert "broke off" in broken.value.message or "ended before" in broken.value.message
    [row] = gateway.rows(1)
    assert row.status == 502 and row.stream


def test_close_delimited_stream_cut_short_is_an_error_too(gateway):
    gateway.upstream.script(chunks=["a ", "b ", "c"], drop_after=1, framing="close")
    with pytest.raises(openai.APIError):
        for _ in chat(gateway, stream=True):
            pass
    [row] = gateway.rows(1)
    assert row.status == 502


def test_upstream_silent_mid_stream_is_a_timeout_event(gateway):
    import threading

    gateway.update("apis", gateway.api, timeout=1)
    never = threading.Event()
    gateway.upstream.script(chunks=["a ", "b"], gate=never)
    with pytest.raises(openai.APIError) as stalled:
        for _ in chat(gateway, stream=True):
            pass
    assert "silent" in stalled.value.message
    [row] = gateway.rows(1)
    assert row.status == 504
