"""GET /metrics: Prometheus' text format, behind its bearer token, counting every
call where it ends. In process (one app, figures in memory) for the route and
every kind of figure; then the Docker image's gunicorn command with two gevent
workers, whose figures are summed however the calls were spread over them, and
whose calls in flight forget a worker that was killed."""

import concurrent.futures
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import openai
import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from promptproxy.services import services

from .servers import dockerfile_cmd, free_port
from .upstream import FakeUpstream

TOKEN = "metrics-" + "t0k3n" * 6
HI = [{"role": "user", "content": "hello there"}]
KEPT_IN = re.compile(r"Prometheus figures of this server are kept in (\S+)")
BOOTING = re.compile(r"Booting worker with pid: (\d+)")


class Scraped:
    """The samples of one scrape, summed over the labels a question leaves out."""

    def __init__(self, text):
        self.text = text
        self.samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    def __call__(self, name, **labels):
        return sum(sample.value for sample in self.samples if sample.name == name
                   and all(sample.labels.get(label) == value for label, value in labels.items()))

    def label_sets(self, name):
        return {tuple(sorted(sample.labels.items())) for sample in self.samples if sample.name == name}


def scrape(base, token=TOKEN):
    response = requests.get(base + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return Scraped(response.text)


def settled(base, timeout=10):
    """A scrape once no call is in flight any more. A stream's call ends just after
    its last chunk went out, so its client may finish a moment before it."""
    deadline = time.monotonic() + timeout
    while True:
        scraped = scrape(base)
        if scraped("promptproxy_calls_in_flight") == 0 or time.monotonic() > deadline:
            return scraped
        time.sleep(0.02)


def wait_until(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def enable(app):
    services(app).settings["METRICS_TOKEN"] = TOKEN  # read on each scrape


# -- the route ------------------------------------------------------------------

def test_metrics_is_not_there_without_its_token_setting(client):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 404


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Bearer {TOKEN}x", f"Basic {TOKEN}",
                                           TOKEN, "Bearer ", "Bearer \u00e9t\u00e9"],
                         ids=["missing", "wrong", "longer", "basic", "no-scheme", "empty", "non-ascii"])
def test_metrics_refuses_a_wrong_or_missing_token(app, client, authorization):
    enable(app)
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.mimetype == "text/plain"
    assert TOKEN not in response.get_data(as_text=True)
    assert "Bearer <PROMPTPROXY_METRICS_TOKEN>" in response.get_data(as_text=True)


def test_metrics_answers_the_token_in_prometheus_text_format(app, client):
    enable(app)
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    families = {family.name: family for family in text_string_to_metric_families(response.get_data(as_text=True))}
    assert families["promptproxy_calls_in_flight"].type == "gauge"
    assert families["promptproxy_calls_in_flight"].samples[0].value == 0
    # OpenMetrics for a scraper that asks for it
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}",
                                               "Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.mimetype == "application/openmetrics-text"
    assert response.get_data(as_text=True).endswith("# EOF\n")


# -- what each call adds, in process ------------------------------------------------

def test_every_kind_of_figure_counts_the_calls_made(gateway, app):
    enable(app)
    client = gateway.client()
    gone = gateway.create("apis", name="Gone", base_url=f"http://127.0.0.1:{free_port()}/v1")
    gateway.create("models", api=gone.id, model="gone-model", name="gone")
    limited_user = gateway.create("users", name="Lim", email="lim@example.com", rpd=1)
    limited = gateway.client(gateway.create("keys", user=limited_user.id))

    plain = client.chat.completions.create(model="gpt:pirate", messages=HI)
    parts = list(client.chat.completions.create(model="gpt", messages=HI, stream=True,
                                                stream_options={"include_usage": True}))
    streamed = parts[-1].usage
    gateway.upstream.script(status=500)
    gateway.upstream.script(status=429)
    gateway.upstream.script(body="<html>not json</html>")
    for expected in (openai.InternalServerError, openai.RateLimitError, openai.APIStatusError):
        with pytest.raises(expected):
            client.chat.completions.create(model="gpt", messages=HI)
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="gone", messages=HI)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=HI)
    gateway.upstream.script(chunks=["cut ", "short"], framing="close", drop_after=1)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="gpt", messages=HI, stream=True))
    admitted = limited.chat.completions.create(model="gpt", messages=HI).usage
    with pytest.raises(openai.RateLimitError):
        limited.chat.completions.create(model="gpt", messages=HI)

    figures = settled(gateway.url)
    assert figures("promptproxy_calls_in_flight") == 0
    requests_total = "promptproxy_requests_total"
    assert figures(requests_total) == 10 == len(gateway.rows(10))
    assert figures(requests_total, model="gpt", api="Local", prompt="pirate", status="2xx") == 1
    assert figures(requests_total, model="gpt", api="Local", prompt="", status="2xx") == 2
    assert figures(requests_total, model="gpt", api="Local", prompt="", status="4xx") == 2  # upstream's 429, ours
    assert figures(requests_total, model="gpt", api="Local", prompt="", status="5xx") == 3
    assert figures(requests_total, model="gone", api="Gone", prompt="", status="5xx") == 1
    assert figures(requests_total, model="", api="", prompt="", status="4xx") == 1  # no such model

    assert figures("promptproxy_input_tokens_total", prompt="pirate") == plain.usage.prompt_tokens
    assert figures("promptproxy_output_tokens_total", prompt="pirate") == plain.usage.completion_tokens
    assert figures("promptproxy_input_tokens_total") == \
        plain.usage.prompt_tokens + streamed.prompt_tokens + admitted.prompt_tokens
    assert figures("promptproxy_output_tokens_total") == \
        plain.usage.completion_tokens + streamed.completion_tokens + admitted.completion_tokens

    errors = "promptproxy_upstream_errors_total"
    assert {kind: figures(errors, kind=kind) for kind in ("status_5xx", "status_4xx", "invalid", "incomplete")} \
        == {"status_5xx": 1, "status_4xx": 1, "invalid": 1, "incomplete": 1}
    assert figures(errors, api="Gone", kind="connection") == 1
    assert figures(errors) == 5
    assert figures("promptproxy_rate_limited_total", limit="rpd") == 1
    assert figures("promptproxy_rate_limited_total") == 1

    assert figures("promptproxy_request_duration_seconds_count") == 10
    assert figures("promptproxy_request_duration_seconds_count", model="gpt", status="4xx") == 2
    assert figures("promptproxy_request_duration_seconds_sum") > 0
    # A first byte came from the upstream on every call that reached one and was answered.
    assert figures("promptproxy_time_to_first_byte_seconds_count") == 7
    assert figures("promptproxy_time_to_first_byte_seconds_count", model="gpt", api="Local") == 7


def test_upstream_timeouts_broken_answers_and_stream_errors_are_told_apart(gateway, app):
    enable(app)
    client = gateway.client()
    gateway.update("apis", gateway.api, timeout=1)
    gateway.upstream.script(hang=True)
    with pytest.raises(openai.APIStatusError) as silent:
        client.chat.completions.create(model="gpt", messages=HI)
    assert silent.value.status_code == 504
    gateway.upstream.script(chunks=["a ", "b ", "c"], drop_after=1)  # chunked, cut mid-body
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="gpt", messages=HI, stream=True))
    event = json.dumps({"error": {"message": "overloaded", "type": "server_error"}})
    gateway.upstream.script(body=f"data: {event}\n\n", headers={"Content-Type": "text/event-stream"})
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="gpt", messages=HI, stream=True))

    figures = settled(gateway.url)
    errors = "promptproxy_upstream_errors_total"
    assert {kind: figures(errors, api="Local", kind=kind) for kind in ("timeout", "broken", "stream_error")} \
        == {"timeout": 1, "broken": 1, "stream_error": 1}
    assert figures(errors) == 3
    assert figures("promptproxy_requests_total", status="5xx") == 3


def test_calls_in_flight_while_a_stream_is_being_answered(gateway, app):
    enable(app)
    hold = threading.Event()
    gateway.upstream.script(chunks=["a ", "b"], gate=hold)
    stream = gateway.client().chat.completions.create(model="gpt", messages=HI, stream=True)
    try:
        next(iter(stream))
        assert scrape(gateway.url)("promptproxy_calls_in_flight") == 1
    finally:
        hold.set()
        list(stream)
    figures = settled(gateway.url)
    assert figures("promptproxy_calls_in_flight") == 0
    assert figures("promptproxy_requests_total", status="2xx") == 1


# -- the Docker image's command: two gevent workers ---------------------------------

def image_command():
    return [arg if not arg.startswith("0.0.0.0:") else "127.0.0.1:{port}" for arg in dockerfile_cmd()]


def per_process(directory, name="promptproxy_requests"):
    """{pid: total of `name`} from each worker's own file in the metrics directory."""
    totals = {}
    for path in Path(directory).glob("counter_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        totals[pid] = sum(sample.value for metric in MultiProcessCollector.merge([str(path)])
                          if metric.name == name for sample in metric.samples)
    return totals


@pytest.mark.slow
def test_two_workers_figures_add_up_to_the_calls_made(gateway, served):
    """Calls of every kind spread over both workers; one scrape, whichever worker
    answers it, counts them all."""
    flaky_upstream = FakeUpstream().start()
    try:
        run_calls_over_two_workers(gateway, served, flaky_upstream)
    finally:
        flaky_upstream.stop()


def run_calls_over_two_workers(gateway, served, flaky_upstream):
    PLAIN, STREAMED, FAILED, UNREACHABLE, UNKNOWN, REFUSED = 40, 30, 10, 5, 5, 5
    flaky = gateway.create("apis", name="Flaky", base_url=flaky_upstream.base_url)
    gateway.create("models", api=flaky.id, model="flaky-model", name="flaky")
    gone = gateway.create("apis", name="Gone", base_url=f"http://127.0.0.1:{free_port()}/v1")
    gateway.create("models", api=gone.id, model="gone-model", name="gone")
    one_at_a_time = gateway.create("users", name="Lim", email="lim@example.com", concurrency=1)
    lim_key = gateway.create("keys", user=one_at_a_time.id)
    for _ in range(FAILED):
        flaky_upstream.script(status=500)

    server = served(image_command(), PROMPTPROXY_METRICS_TOKEN=TOKEN)
    gateway.url = server.url
    (directory,) = [match.group(1) for match in server.wait_for_log(KEPT_IN)]
    assert Path(directory).is_dir()
    assert settled(server.url)("promptproxy_requests_total") == 0

    usage, lock = [], threading.Lock()

    def plain(i):  # a client of its own, so a connection of its own, to whichever worker takes it
        reply = gateway.client().chat.completions.create(
            model="gpt:pirate", messages=[{"role": "user", "content": f"plain call {i}"}])
        with lock:
            usage.append(("pirate", reply.usage.prompt_tokens, reply.usage.completion_tokens))

    def streamed(i):
        chunks = list(gateway.client().chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": f"streamed call number {i}"}], stream=True,
            stream_options={"include_usage": True}))
        with lock:
            usage.append(("", chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens))

    def failed(i):
        with pytest.raises(openai.InternalServerError):
            gateway.client().chat.completions.create(model="flaky", messages=HI)

    def unreachable(i):
        with pytest.raises(openai.APIStatusError) as refused:
            gateway.client().chat.completions.create(model="gone", messages=HI)
        assert refused.value.status_code == 502

    def unknown(i):
        with pytest.raises(openai.NotFoundError):
            gateway.client().chat.completions.create(model=f"no-such-model-{i}", messages=HI)

    jobs = ([(plain, i) for i in range(PLAIN)] + [(streamed, i) for i in range(STREAMED)]
            + [(failed, i) for i in range(FAILED)] + [(unreachable, i) for i in range(UNREACHABLE)]
            + [(unknown, i) for i in range(UNKNOWN)])
    jobs.sort(key=lambda job: (job[1] * 7919 + len(job[0].__name__)) % 101)  # interleave kinds
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for future in [pool.submit(fn, i) for fn, i in jobs]:
            future.result()

    # One call held open on a key allowed one at a time: in flight, and the next ones refused.
    hold = threading.Event()
    flaky_upstream.script(chunks=["held ", "open"], gate=hold)
    lim = gateway.client(lim_key)
    stream = lim.chat.completions.create(model="flaky", messages=HI, stream=True,
                                         stream_options={"include_usage": True})
    try:
        next(iter(stream))
        assert scrape(server.url)("promptproxy_calls_in_flight") == 1
        for _ in range(REFUSED):
            with pytest.raises(openai.RateLimitError):
                lim.chat.completions.create(model="flaky", messages=HI)
    finally:
        hold.set()
        held = list(stream)
    usage.append(("", held[-1].usage.prompt_tokens, held[-1].usage.completion_tokens))

    figures = settled(server.url)
    assert figures("promptproxy_calls_in_flight") == 0
    total = len(jobs) + 1 + REFUSED
    requests_total = "promptproxy_requests_total"
    assert figures(requests_total) == total
    assert figures(requests_total, model="gpt", api="Local", prompt="pirate", status="2xx") == PLAIN
    assert figures(requests_total, model="gpt", api="Local", prompt="", status="2xx") == STREAMED
    assert figures(requests_total, model="flaky", api="Flaky", prompt="", status="5xx") == FAILED
    assert figures(requests_total, model="flaky", api="Flaky", prompt="", status="2xx") == 1
    assert figures(requests_total, model="flaky", api="Flaky", prompt="", status="4xx") == REFUSED
    assert figures(requests_total, model="gone", api="Gone", prompt="", status="5xx") == UNREACHABLE
    assert figures(requests_total, model="", api="", prompt="", status="4xx") == UNKNOWN
    assert figures("promptproxy_input_tokens_total") == sum(tokens for _, tokens, _ in usage)
    assert figures("promptproxy_output_tokens_total") == sum(tokens for _, _, tokens in usage)
    assert figures("promptproxy_input_tokens_total", prompt="pirate") == \
        sum(tokens for prompt, tokens, _ in usage if prompt == "pirate")
    assert figures("promptproxy_upstream_errors_total", api="Flaky", kind="status_5xx") == FAILED
    assert figures("promptproxy_upstream_errors_total", api="Gone", kind="connection") == UNREACHABLE
    assert figures("promptproxy_upstream_errors_total") == FAILED + UNREACHABLE
    assert figures("promptproxy_rate_limited_total", limit="concurrency") == REFUSED
    assert figures("promptproxy_request_duration_seconds_count") == total
    assert figures("promptproxy_time_to_first_byte_seconds_count") == PLAIN + STREAMED + FAILED + 1

    # Both workers answered calls, and the figures above are their sum.
    served_by = per_process(directory)
    assert len(served_by) == 2 and all(served_by.values()), served_by
    assert sum(served_by.values()) == total

    log = server.stop()
    assert "Traceback" not in log, log[-3000:]
    assert not Path(directory).exists()  # the server's own temporary directory goes with it


@pytest.mark.slow
def test_app_py_serve_keeps_its_figures_in_a_directory_of_its_own(gateway, served):
    server = served(PROMPTPROXY_METRICS_TOKEN=TOKEN)
    gateway.url = server.url
    (directory,) = [match.group(1) for match in server.wait_for_log(KEPT_IN)]
    gateway.client().chat.completions.create(model="gpt", messages=HI)
    figures = settled(server.url)
    assert figures("promptproxy_requests_total", model="gpt", status="2xx") == 1
    assert list(per_process(directory).values()) == [1]
    assert "Traceback" not in server.stop()
    assert not Path(directory).exists()


def stale_file(directory, kind, pid, name, sample, labels, value):
    """A figure left by a process of an earlier run, written as prometheus_client writes one."""
    mapped = MmapedDict(str(Path(directory) / f"{kind}_{pid}.db"))
    mapped.write_value(mmap_key(name, sample, tuple(labels), tuple(labels.values()), "left over"), value, 0.0)
    mapped.close()


@pytest.mark.slow
def test_a_killed_worker_leaves_no_call_in_flight(gateway, served, tmp_path):
    """PROMETHEUS_MULTIPROC_DIR set by the operator: emptied of an earlier run's
    files when the server starts. A worker killed with a call in flight: once
    gunicorn has replaced it, the call is no longer counted in flight."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    stale_file(directory, "counter", 4242, "promptproxy_requests", "promptproxy_requests_total",
               {"model": "gpt", "api": "Local", "prompt": "", "status": "2xx"}, 1000)
    stale_file(directory, "gauge_livesum", os.getpid(), "promptproxy_calls_in_flight",  # a live process
               "promptproxy_calls_in_flight", {}, 5)

    server = served(image_command(), PROMPTPROXY_METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(directory))
    gateway.url = server.url
    assert server.wait_for_log(KEPT_IN)[0].group(1) == str(directory)
    figures = scrape(server.url)
    assert figures("promptproxy_calls_in_flight") == 0
    assert figures("promptproxy_requests_total") == 0

    hold = threading.Event()
    gateway.upstream.script(chunks=["a ", "b"], gate=hold)
    stream = gateway.client().chat.completions.create(model="gpt", messages=HI, stream=True)
    try:
        next(iter(stream))
        assert scrape(server.url)("promptproxy_calls_in_flight") == 1
        (worker,) = [int(path.stem.rpartition("_")[2]) for path in directory.glob("gauge_livesum_*.db")
                     if any(value for _, value, _, _ in MmapedDict.read_all_values_from_file(str(path)))]
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(openai.APIError):
            list(stream)
    finally:
        hold.set()
        stream.close()
    assert settled(server.url, timeout=30)("promptproxy_calls_in_flight") == 0
    assert server.wait_for_log(re.compile(rf"Worker \(pid:{worker}\) was sent SIGKILL"))
    # gunicorn's new worker has built its app (and so set its signal handlers: a
    # SIGTERM before that would be lost, and the stop below would wait for it).
    replacement = int(server.wait_for_log(BOOTING, count=3)[2].group(1))
    assert wait_until(lambda: (directory / f"gauge_livesum_{replacement}.db").exists())

    gateway.client().chat.completions.create(model="gpt", messages=HI)  # served on
    figures = settled(server.url)
    assert figures("promptproxy_calls_in_flight") == 0
    assert figures("promptproxy_requests_total") == 1  # the killed call never ended
    assert "Traceback" not in server.stop()
    assert directory.is_dir()  # the operator's directory stays
