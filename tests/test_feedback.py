"""Every answer to a call names its request row (`x-promptproxy-request-id`), and
the caller may score the call with `POST /v1/feedback`, with the same key only,
even before the row's batch was written. The comparison of a prompt's versions
counts what the rows and the feedback say. Through the official openai SDK."""

import statistics

import openai
import pytest
import requests

from promptproxy.accounting.comparison import compare_versions
from promptproxy.collections import BY_NAME
from promptproxy.data import records
from promptproxy.data.db import db
from promptproxy.services import services

from .servers import dockerfile_cmd

HI = [{"role": "user", "content": "hi"}]
REQUEST_ID = "x-promptproxy-request-id"


def give(client, request_id, score, comment=None):
    """POST /v1/feedback with the SDK's own authentication and errors."""
    body = {"request_id": request_id, "score": score}
    if comment is not None:
        body["comment"] = comment
    return client.post("/feedback", body=body, cast_to=object)


def feedback_rows():
    model = BY_NAME["feedback"].model
    with db.connection_context():
        return list(model.select().order_by(model.created))


def test_every_answer_names_its_request_row(gateway):
    client = gateway.client()
    whole = client.chat.completions.with_raw_response.create(model="gpt:pirate", messages=HI)
    with client.chat.completions.with_streaming_response.create(model="gpt", messages=HI, stream=True) as stream:
        streamed_id = stream.headers[REQUEST_ID]
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream.parse() if chunk.choices)
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model="gpt:pirate@9", messages=HI)
    gateway.upstream.script(status=503)
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="gpt", messages=HI)
    counted = requests.post(gateway.url + "/v1/messages/count_tokens", timeout=10, headers={"x-api-key": gateway.key},
                            json={"model": "gpt:pirate", "messages": HI})
    ids = [whole.headers[REQUEST_ID], streamed_id, refused.value.response.headers[REQUEST_ID],
           failed.value.response.headers[REQUEST_ID], counted.headers[REQUEST_ID]]
    rows = gateway.rows(5)
    assert [row.id for row in rows] == ids and len(set(ids)) == 5
    assert [(row.status, row.prompt_version) for row in rows] == [(200, 1), (200, None), (404, None), (503, None),
                                                                 (200, 1)]


def test_feedback_is_stored_on_the_callers_row_and_replaced_when_sent_again(gateway):
    client = gateway.client()
    call = client.chat.completions.with_raw_response.create(model="gpt:pirate", messages=HI)
    request_id = call.headers[REQUEST_ID]
    given = give(client, request_id, 0.75, "Good pirate talk.")
    assert {k: given[k] for k in ("object", "request_id", "score", "comment")} == {
        "object": "feedback", "request_id": request_id, "score": 0.75, "comment": "Good pirate talk."}
    give(client, request_id, 1)
    (stored,) = feedback_rows()
    keys = BY_NAME["keys"].model
    with db.connection_context():
        key_id = keys.get(keys.label == "sdk").id
    assert (stored.request, stored.key, stored.score, stored.comment) == (request_id, key_id, 1.0, None)


def test_feedback_is_refused_for_another_keys_call_and_unknown_ids(gateway):
    tom = gateway.client()
    call = tom.chat.completions.with_raw_response.create(model="gpt:pirate", messages=HI)
    request_id = call.headers[REQUEST_ID]
    jerry = gateway.create("users", name="Jerry")
    for other_key in (gateway.create("keys", user=jerry.id), gateway.create("keys", user=gateway.user.id)):
        with pytest.raises(openai.NotFoundError) as refused:
            give(gateway.client(other_key), request_id, 1)
        assert refused.value.body["message"] == f"No call of this key has the request id '{request_id}'."
    with pytest.raises(openai.NotFoundError):
        give(tom, "nosuchrequest00", 1)  # waited for, briefly, as another worker's row might be
    with pytest.raises(openai.NotFoundError):
        give(tom, "not an id", 1)
    with pytest.raises(openai.AuthenticationError):
        give(gateway.client("pp-not-a-key"), request_id, 1)
    assert feedback_rows() == []


@pytest.mark.parametrize("body, message", [
    ({"score": 1}, "'request_id' must be the x-promptproxy-request-id of a call."),
    ({"request_id": "x", "score": 1.5}, "'score' must be a number from 0 to 1."),
    ({"request_id": "x", "score": "high"}, "'score' must be a number from 0 to 1."),
    ({"request_id": "x", "score": True}, "'score' must be a number from 0 to 1."),
    ({"request_id": "x"}, "'score' must be a number from 0 to 1."),
    ({"request_id": "x", "score": 1, "comment": ["no"]}, "'comment' must be text."),
])
def test_bad_feedback_is_a_400(gateway, body, message):
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.client().post("/feedback", body=body, cast_to=object)
    assert refused.value.body["message"] == message


def test_feedback_right_after_a_call_finds_its_row_before_its_batch_is_written(gateway):
    recorder = services(gateway.app).recorder
    recorder.interval = 3600  # the next batch would be written an hour from now
    client = gateway.client()
    request_id = client.chat.completions.with_raw_response.create(model="gpt:pirate", messages=HI).headers[REQUEST_ID]
    rows = BY_NAME["requests"].model
    with db.connection_context():
        assert rows.get_or_none(rows.id == request_id) is None  # still queued
    assert give(client, request_id, 0.5)["score"] == 0.5
    assert [row.request for row in feedback_rows()] == [request_id]


@pytest.mark.slow
def test_feedback_sent_to_another_worker_right_after_the_call(gateway, served):
    """Two gunicorn workers, a new connection per request, so a call and its
    feedback often land on different workers: the feedback still finds its row."""
    command = [arg if not arg.startswith("0.0.0.0:") else "127.0.0.1:{port}" for arg in dockerfile_cmd()]
    server = served(command)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=gateway.key, max_retries=0, timeout=20,
                           default_headers={"Connection": "close"})
    for n in range(20):
        call = client.chat.completions.with_raw_response.create(model="gpt:pirate", messages=HI)
        assert give(client, call.headers[REQUEST_ID], n / 20)["score"] == n / 20
    assert len(feedback_rows()) == 20


def test_the_comparison_counts_what_the_rows_and_feedback_say(gateway):
    pirate = gateway.prompt
    gateway.update("prompts", pirate, instructions="Talk like a sailor, please.")
    versions = BY_NAME["prompt_versions"].model
    with db.connection_context():
        for row in versions.select().where(versions.prompt == pirate.id):
            records.save(BY_NAME["prompt_versions"], {"weight": 1}, row=row)
    client = gateway.client()
    for n in range(40):
        if n % 7 == 0:
            gateway.upstream.script(status=500)
        try:
            call = client.chat.completions.with_raw_response.create(
                model="gpt:pirate", messages=[{"role": "user", "content": "hi " * (n % 5 + 1)}], user=f"u{n}")
        except openai.InternalServerError:
            continue
        if n % 3 == 0:
            give(client, call.headers[REQUEST_ID], (n % 4) / 4)
    client.chat.completions.create(model="gpt", messages=HI)  # no prompt: not counted
    rows = [row for row in gateway.rows(41) if row.prompt == pirate.id]
    scores = {f.request: f.score for f in feedback_rows()}

    expected = []
    for number in (1, 2):
        mine = [row for row in rows if row.prompt_version == number]
        latencies = sorted(row.latency_ms for row in mine)
        given = [scores[row.id] for row in mine if row.id in scores]
        expected.append({
            "version": number, "labels": [], "weight": 1, "calls": len(mine),
            "errors": sum(row.status >= 400 for row in mine),
            "input_tokens": sum(row.input_tokens or 0 for row in mine),
            "output_tokens": sum(row.output_tokens or 0 for row in mine),
            "tokens": sum(row.total_tokens or 0 for row in mine),
            "p50_latency_ms": latencies[(len(latencies) - 1) // 2] if latencies else None,
            "average_score": statistics.fmean(given) if given else None, "scores": len(given)})
    with db.connection_context():
        figures = compare_versions(pirate.id)
    for got in figures:
        if got["average_score"] is not None:
            got["average_score"] = pytest.approx(got["average_score"])
    assert figures == expected
    assert sum(f["calls"] for f in figures) == 40 and sum(f["errors"] for f in figures) == 6
    assert all(f["calls"] and f["scores"] for f in figures)  # both versions served and scored
    with db.connection_context():
        assert [f["calls"] for f in compare_versions(pirate.id, since=rows[-1].created)] == \
            [int(rows[-1].prompt_version == 1), int(rows[-1].prompt_version == 2)]

