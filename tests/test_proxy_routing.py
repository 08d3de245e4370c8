"""Groups, retries, fallbacks, cooldowns and upstream concurrency caps, end to end:
two real upstream servers on loopback, one failing on command, and the official
SDKs as clients. Whatever fails behind the gateway, each call gets one answer."""

import concurrent.futures
import threading
import time

import anthropic
import openai
import pytest

from promptproxy import create_app, stop
from promptproxy.services import services

from .conftest import UPSTREAM_SECRET, Gateway
from .upstream import FakeUpstream

HI = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def second():
    """The second upstream server."""
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def pair(gateway, second):
    """A group `pool` of two models, one on each upstream: `a` on the gateway's own
    upstream (the one the tests make fail), `b` on the second."""
    gateway.api_b = gateway.create("apis", name="Second", base_url=second.base_url, api_key=UPSTREAM_SECRET,
                                   timeout=5)
    gateway.a = gateway.create("models", api=gateway.api.id, model="model-a", name="pool")
    gateway.b = gateway.create("models", api=gateway.api_b.id, model="model-b", name="pool")
    gateway.second = second
    return gateway


def answered_by(response):
    return response.headers["x-promptproxy-model"]


def test_a_group_serves_every_call_while_one_member_answers_503(pair):
    pair.update("models", pair.b, weight=0)  # `a` is always tried first: the failures are certain
    for _ in range(10):
        pair.upstream.script(status=503)
    client = pair.client()
    for _ in range(12):
        response = client.chat.completions.with_raw_response.create(model="pool", messages=HI)
        assert response.parse().choices[0].message.content == "echo: hello there"
        assert answered_by(response) == pair.b.id
    # three failures within a minute: `a` cools down and receives nothing more
    assert len(pair.upstream.requests) == 3
    assert len(pair.second.requests) == 12
    rows = pair.rows(12)
    assert {(row.api, row.model, row.status) for row in rows} == {(pair.api_b.id, pair.b.id, 200)}
    tried = [[(a["api"], a["status"]) for a in row.attempts] for row in rows]
    assert tried == [[(pair.api.id, 503), (pair.api_b.id, 200)]] * 3 + [[(pair.api_b.id, 200)]] * 9
    assert all(isinstance(a["ms"], int) and a["ms"] >= 0 for row in rows for a in row.attempts)
    state = services(pair.app).upstreams.state()
    assert state[pair.api.id]["until"] is not None
    assert [e["error"].split(":")[0] for e in state[pair.api.id]["errors"]] == ["HTTP 503"] * 3


def test_a_model_answering_429_falls_back_also_for_a_stream_but_a_400_is_not_retried(gateway, second):
    api_b = gateway.create("apis", name="Second", base_url=second.base_url, timeout=5)
    spare = gateway.create("models", api=api_b.id, model="spare-model", name="spare")
    gateway.update("models", gateway.model, fallbacks=[spare.id])
    gateway.upstream.script(status=429)
    gateway.upstream.script(status=429)  # for the stream: it fails before its first byte
    client = gateway.client()

    response = client.chat.completions.with_raw_response.create(model="gpt", messages=HI)
    assert answered_by(response) == spare.id
    assert second.requests[-1].json["model"] == "spare-model"

    chunks = list(client.chat.completions.create(model="gpt", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello there"
    assert len(second.requests) == 2

    second.reset()
    gateway.upstream.reset()
    gateway.upstream.script(status=400)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt", messages=HI)
    assert len(gateway.upstream.requests) == 1 and second.requests == []

    rows = gateway.rows(3)
    assert [row.status for row in rows] == [200, 200, 400]
    assert [row.api for row in rows] == [api_b.id, api_b.id, gateway.api.id]
    assert [[a["status"] for a in row.attempts] for row in rows] == [[429, 200], [429, 200], [400]]
    assert rows[1].stream is True


def test_a_429_with_retry_after_cools_its_api_down_for_that_long(gateway, second):
    api_b = gateway.create("apis", name="Second", base_url=second.base_url, timeout=5, cooldown=5)
    gateway.create("models", api=api_b.id, model="other", name="gpt")
    gateway.update("apis", gateway.api, cooldown=5)
    gateway.update("models", gateway.model, weight=1000)
    gateway.upstream.script(status=429, headers={"Retry-After": "120"})
    gateway.client().chat.completions.create(model="gpt", messages=HI)
    upstreams = services(gateway.app).upstreams
    until = upstreams.state()[gateway.api.id]["until"]
    assert until - upstreams.clock() > 100  # the longer of Retry-After and the api's cooldown


def test_the_last_failure_reaches_the_client_in_its_format_with_its_retry_after(pair):
    for upstream in (pair.upstream, pair.second):
        upstream.script(status=429, headers={"Retry-After": "7"})
    with pytest.raises(openai.RateLimitError) as raised:
        pair.client().chat.completions.create(model="pool", messages=HI)
    assert raised.value.response.headers["retry-after"] == "7"
    assert raised.value.response.headers["x-promptproxy-model"] in (pair.a.id, pair.b.id)
    (row,) = pair.rows(1)
    assert row.status == 429 and len(row.attempts) == 2
    assert row.model == raised.value.response.headers["x-promptproxy-model"]


def test_an_api_retries_its_own_failures_before_moving_on(gateway):
    gateway.update("apis", gateway.api, retries=2)
    gateway.upstream.script(status=502, headers={"Retry-After": "0"})
    gateway.upstream.script(status=500, headers={"Retry-After": "0"})
    reply = gateway.client().chat.completions.create(model="gpt", messages=HI)
    assert reply.choices[0].message.content == "echo: hello there"
    (row,) = gateway.rows(1)
    assert [a["status"] for a in row.attempts] == [502, 500, 200]


def test_timeouts_and_unreachable_upstreams_before_the_first_byte_move_on(pair):
    pair.update("apis", pair.api, timeout=1)
    pair.update("models", pair.b, weight=0)
    client = pair.client()
    pair.upstream.script(hang=True)
    assert client.chat.completions.create(model="pool", messages=HI).choices[0].message.content
    pair.upstream.script(hang=True)
    chunks = list(client.chat.completions.create(model="pool", messages=HI, stream=True))
    assert chunks and len(pair.second.requests) == 2

    pair.update("apis", pair.api, base_url=f"http://127.0.0.1:{closed_port()}/v1")
    assert client.chat.completions.create(model="pool", messages=HI).choices[0].message.content
    rows = pair.rows(3)
    assert [row.attempts[0]["error"].split(" went silent")[0] for row in rows[:2]] == ["The upstream 'Local'"] * 2
    assert "could not be reached" in rows[2].attempts[0]["error"]
    assert {row.status for row in rows} == {200}


def closed_port():
    from .servers import free_port

    return free_port()


def test_a_stream_that_already_sent_bytes_is_never_retried(pair):
    pair.update("models", pair.b, weight=0)
    pair.upstream.script(drop_after=2)
    chunks = []
    with pytest.raises(openai.APIError):
        for chunk in pair.client().chat.completions.create(model="pool", messages=HI, stream=True):
            chunks.append(chunk)
    assert chunks and pair.second.requests == []
    (row,) = pair.rows(1)
    assert row.status >= 500 and len(row.attempts) == 1


@pytest.mark.slow
def test_weights_3_to_1_split_400_calls_within_5_points(pair):
    pair.update("models", pair.a, weight=3)
    client = pair.client()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        served = list(pool.map(
            lambda _: answered_by(client.chat.completions.with_raw_response.create(model="pool", messages=HI)),
            range(400)))
    share = served.count(pair.a.id) / 400
    assert 0.70 <= share <= 0.80, share
    assert served.count(pair.b.id) == 400 - served.count(pair.a.id)


def test_an_api_at_its_concurrency_cap_sends_the_next_call_to_the_other_member(pair):
    pair.update("apis", pair.api, concurrency=1)
    pair.update("models", pair.b, weight=0)
    held = threading.Event()
    pair.upstream.script(gate=held)  # the first call streams from `a` and holds its slot
    client = pair.client()
    stream = client.chat.completions.create(model="pool", messages=HI, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.content is not None
    second = client.chat.completions.with_raw_response.create(model="pool", messages=HI)
    assert answered_by(second) == pair.b.id
    held.set()
    assert list(stream)
    third = client.chat.completions.with_raw_response.create(model="pool", messages=HI)  # the slot is free
    assert answered_by(third) == pair.a.id
    rows = pair.rows(3)
    capped = next(row for row in rows if len(row.attempts) == 2)
    assert capped.attempts[0] == {"model": pair.a.id, "api": pair.api.id, "status": None,
                                  "error": "at its concurrency cap", "ms": 0}


def refused_while_a_stream_is_held(gateway):
    """The 429 (with Retry-After: 1) a call to `gpt` gets while another one streams;
    once that stream ends, the next call goes through."""
    held = threading.Event()
    gateway.upstream.script(gate=held)
    client = gateway.client()
    stream = client.chat.completions.create(model="gpt", messages=HI, stream=True)
    next(iter(stream))
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt", messages=HI)
    held.set()
    list(stream)
    assert client.chat.completions.create(model="gpt", messages=HI).choices
    assert raised.value.response.headers["retry-after"] == "1"
    return raised.value


def test_a_lone_model_at_its_cap_is_a_429_with_retry_after_1(gateway):
    gateway.update("apis", gateway.api, concurrency=1)
    assert refused_while_a_stream_is_held(gateway).code == "upstream_concurrency"


def test_when_every_candidate_cools_down_the_one_ending_first_is_tried(pair):
    upstreams = services(pair.app).upstreams
    pair.upstream.script(status=429, headers={"Retry-After": "300"})
    pair.second.script(status=429, headers={"Retry-After": "100"})
    with pytest.raises(openai.RateLimitError):
        pair.client().chat.completions.create(model="pool", messages=HI)
    cooling = upstreams.cooling([pair.api.id, pair.api_b.id])
    assert cooling[pair.api_b.id] < cooling[pair.api.id]
    response = pair.client().chat.completions.with_raw_response.create(model="pool", messages=HI)
    assert answered_by(response) == pair.b.id


def test_fallbacks_bring_their_groups_and_access_rules_narrow_the_candidates(pair):
    third = FakeUpstream().start()
    try:
        api_c = pair.create("apis", name="Third", base_url=third.base_url, timeout=5)
        c = pair.create("models", api=api_c.id, model="model-c", name="cheap")
        pair.update("models", pair.a, fallbacks=[c.id])
        pair.update("models", pair.b, fallbacks=[c.id])
        pair.upstream.script(status=503)
        pair.second.script(status=503)
        response = pair.client().chat.completions.with_raw_response.create(model="pool", messages=HI)
        assert answered_by(response) == c.id
        # a key allowed only `b` is never served by `a`
        narrow = pair.create("keys", user=pair.user.id, models=[pair.b.id])
        for _ in range(5):
            response = pair.client(narrow).chat.completions.with_raw_response.create(model="pool", messages=HI)
            assert answered_by(response) == pair.b.id
    finally:
        third.stop()


def test_models_list_a_group_once_and_the_anthropic_sdk_is_served_by_it(pair):
    ids = [m.id for m in pair.client().models.list()]
    assert ids.count("pool") == 1 and ids.count("pool:pirate") == 1
    pair.update("models", pair.b, weight=0)
    pair.upstream.script(status=529)
    claude = anthropic.Anthropic(base_url=pair.url, api_key=pair.key, max_retries=0)
    message = claude.messages.create(model="pool", max_tokens=50, messages=HI)
    assert message.content[0].text == "echo: hello there"


def test_open_webui_style_calls_get_one_answer_each_whatever_fails_behind(pair):
    """Open WebUI sends plain HTTP with its user headers and streams by default."""
    import requests

    pair.update("models", pair.b, weight=0)
    for _ in range(3):
        pair.upstream.script(status=500)
    headers = {"Authorization": f"Bearer {pair.key}", "X-OpenWebUI-User-Name": "Ann",
               "X-OpenWebUI-User-Email": "ann@example.com"}
    for stream in (True, False, True, False, True):
        response = requests.post(pair.url + "/v1/chat/completions", headers=headers, timeout=20,
                                 json={"model": "pool", "messages": HI, "stream": stream})
        assert response.status_code == 200
        if stream:
            assert response.text.count("data: [DONE]") == 1
        else:
            assert response.json()["choices"][0]["message"]["content"] == "echo: hello there"
    assert len(pair.rows(5)) == 5


def test_an_instance_cap_refuses_calls_over_it_with_retry_after_1(data_dir, upstream):
    from werkzeug.serving import make_server

    app = create_app({"DATA_DIR": str(data_dir), "CATALOG_TTL": 0, "MAX_CONCURRENCY": 1})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        gateway = Gateway(app, f"http://127.0.0.1:{server.server_port}", upstream)
        gateway.user = gateway.create("users", name="Tom", email="tom@example.com")
        gateway.key = gateway.create("keys", user=gateway.user.id)
        api = gateway.create("apis", name="Local", base_url=upstream.base_url, timeout=5)
        gateway.create("models", api=api.id, model="m", name="gpt")
        assert "PROMPTPROXY_MAX_CONCURRENCY" in refused_while_a_stream_is_held(gateway).message
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        stop(app)


@pytest.mark.slow
def test_a_cooldown_started_on_one_worker_holds_on_the_other(pair, served):
    """The Docker image's command, two gevent workers: after three failures, wherever
    they happened, the failing member receives no calls, whichever worker serves them."""
    from .test_metrics import KEPT_IN, TOKEN, image_command, per_process

    pair.update("models", pair.b, weight=0)
    for _ in range(10):
        pair.upstream.script(status=503)
    server = served(image_command(), PROMPTPROXY_METRICS_TOKEN=TOKEN)
    (directory,) = [match.group(1) for match in server.wait_for_log(KEPT_IN)]
    pair.url = server.url

    def call(_):  # a connection of its own, so either worker may take it
        client = pair.client(default_headers={"Connection": "close"})
        return answered_by(client.chat.completions.with_raw_response.create(model="pool", messages=HI))

    assert [call(n) for n in range(3)] == [pair.b.id] * 3
    assert len(pair.upstream.requests) == 3
    before = per_process(directory)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(call, range(60))) == {pair.b.id}
    after = per_process(directory)
    assert len(pair.upstream.requests) == 3  # cooling down, on both workers
    served_now = {pid: after[pid] - before.get(pid, 0) for pid in after}
    assert len(served_now) == 2 and all(count > 0 for count in served_now.values()), served_now


def test_the_admin_shows_each_apis_state_and_can_end_a_cooldown(pair, admin):
    from .conftest import csrf_token

    pair.update("models", pair.b, weight=0)
    for _ in range(3):
        pair.upstream.script(status=503, body={"error": {"message": "overloaded, sorry"}})
    for _ in range(3):
        pair.client().chat.completions.create(model="pool", messages=HI)
    listing = admin.get("/_/apis/").get_data(as_text=True)
    assert listing.count("cooling down") == 1 and listing.count(">ready<") == 1
    details_url = f"/_/apis/details/?id={pair.api.id}"
    page = admin.get(details_url).get_data(as_text=True)
    until = services(pair.app).upstreams.state()[pair.api.id]["until"]
    assert "cooling down</span> until " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until)) in page
    assert page.count("HTTP 503: overloaded, sorry") == 3
    token = csrf_token(admin, details_url)
    admin.post("/_/apis/cooldown/", data={"id": pair.api.id, "csrf_token": token})
    assert "cooling down" not in admin.get(details_url).get_data(as_text=True)
    response = pair.client().chat.completions.with_raw_response.create(model="pool", messages=HI)
    assert answered_by(response) == pair.a.id


def test_embeddings_are_served_by_groups_and_fallbacks_too(pair):
    pair.update("models", pair.b, weight=0)
    pair.upstream.script(status=503)
    response = pair.client().embeddings.with_raw_response.create(model="pool", input=["one", "two"])
    assert answered_by(response) == pair.b.id
    assert len(response.parse().data) == 2
    (row,) = pair.rows(1)
    assert row.endpoint == "embeddings" and row.api == pair.api_b.id and row.input_tokens == 2
    assert [a["status"] for a in row.attempts] == [503, 200]
