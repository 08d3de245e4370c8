"""Prometheus metrics: the figures every call adds to as it ends, and `GET /metrics`.

Under gunicorn each worker is its own process, so the figures are kept with
prometheus_client's multiprocess mode: every process writes its own to
memory-mapped files in `PROMETHEUS_MULTIPROC_DIR`, and a scrape, whichever worker
answers it, sums the files of all of them. The server makes that directory fresh
for its instance when it starts (serving/metrics_dir.py), before any worker
imports prometheus_client, which picks its mode once, at import. An app run
without it (the tests' in-process server) keeps its figures in memory, per app.

A call is in flight from its `Call` to its `Call.end`, which hands the call here
once: see `Metrics.ended`. `GET /metrics` answers only with
`Authorization: Bearer $PROMPTPROXY_METRICS_TOKEN`, and is not there at all
(404) while that setting is empty.
"""

import glob
import hmac
import os
import time

from flask import Blueprint, Response, abort, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from ..providers.base import token_count
from ..services import services

DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own setting
# LLM calls take from milliseconds (a refusal) to minutes (a long generation).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
FIRST_BYTE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)

page = Blueprint("metrics", __name__)


class Metrics:
    """One app's figures. Labels are names an admin chose (models, apis, prompts),
    never what a client sent, so their number stays that of the records."""

    def __init__(self):
        self.directory = os.environ.get(DIRECTORY)
        own = CollectorRegistry()
        call = ("model", "api", "prompt")
        self.requests = Counter("promptproxy_requests", "Calls answered, by model, api, prompt and "
                                "status class (2xx, 4xx, 5xx).", (*call, "status"), registry=own)
        self.input_tokens = Counter("promptproxy_input_tokens", "Input (prompt) tokens the upstreams "
                                    "counted.", call, registry=own)
        self.output_tokens = Counter("promptproxy_output_tokens", "Output (completion) tokens the "
                                     "upstreams counted.", call, registry=own)
        self.latency = Histogram("promptproxy_request_duration_seconds", "Time from a call's arrival "
                                 "to its end.", ("model", "api", "status"), buckets=LATENCY_BUCKETS,
                                 registry=own)
        self.first_byte = Histogram("promptproxy_time_to_first_byte_seconds", "Time from a call's "
                                    "arrival to the upstream's first byte.", ("model", "api"),
                                    buckets=FIRST_BYTE_BUCKETS, registry=own)
        self.upstream_errors = Counter("promptproxy_upstream_errors", "Upstream failures, by api and "
                                       "kind (connection, timeout, broken, invalid, status_4xx, "
                                       "status_5xx, stream_error, incomplete).", ("api", "kind"),
                                       registry=own)
        self.rate_limited = Counter("promptproxy_rate_limited", "Calls refused by a rate limit or a "
                                    "budget, by limit (rpm, tpm, rpd, concurrency, budget).", ("limit",), registry=own)
        # Summed over the live processes only: a worker that died has no calls left.
        self.in_flight = Gauge("promptproxy_calls_in_flight", "Calls being answered now.",
                               multiprocess_mode="livesum", registry=own)
        # A process may be given the id of one that died, and with it that one's file.
        self.in_flight.set(0)
        self.series = {}  # (model, api, prompt, status) -> the labelled figures a call adds to
        if self.directory:
            self.registry = CollectorRegistry()
            MultiProcessCollector(self.registry, self.directory)
        else:
            self.registry = own

    def began(self):
        self.in_flight.inc()

    def ended(self, call):
        """Count an ended call (`Call.end` hands each one here once). It leaves the
        calls in flight last, so a scrape that sees none in flight sees every count."""
        try:
            model = (call.model.name or call.model.id) if call.model else ""
            api = call.api.name if call.api else ""
            prompt = (call.prompt.name or call.prompt.id) if call.prompt else ""
            status = f"{call.status // 100}xx"
            key = (model, api, prompt, status)
            requests, input_tokens, output_tokens, latency, first_byte = self.series.get(key) or self.labelled(*key)
            requests.inc()
            usage = call.usage if isinstance(call.usage, dict) else {}
            tokens_in, tokens_out = token_count(usage.get("prompt_tokens")), token_count(usage.get("completion_tokens"))
            if tokens_in:
                input_tokens.inc(tokens_in)
            if tokens_out:
                output_tokens.inc(tokens_out)
            latency.observe(time.perf_counter() - call.started)
            if call.ttfb_ms is not None:
                first_byte.observe(call.ttfb_ms / 1000)
            if call.upstream_error:
                self.upstream_errors.labels(api, call.upstream_error).inc()
        finally:
            self.in_flight.dec()

    def labelled(self, model, api, prompt, status):
        """The figures of one kind of call, looked up once: prometheus_client's
        `labels()` costs about as much as all the counting of a call."""
        series = self.series[model, api, prompt, status] = (
            self.requests.labels(model, api, prompt, status), self.input_tokens.labels(model, api, prompt),
            self.output_tokens.labels(model, api, prompt), self.latency.labels(model, api, status),
            self.first_byte.labels(model, api))
        return series

    def limited(self, limit):
        self.rate_limited.labels(limit).inc()

    def exposition(self, accept=None):
        """(body, content type) of a scrape, in the format `accept` asks for."""
        if self.directory:
            forget_dead_processes(self.directory)
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def forget_dead_processes(directory):
    """Drop the live figures (calls in flight) of worker processes that have died,
    killed or not: gunicorn starts new ones, and the old ones' calls are over."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid = int(path.rpartition("_")[2][:-len(".db")])
        if not running(pid):
            try:
                mark_process_dead(pid, directory)
            except FileNotFoundError:  # another worker's scrape just did
                pass


def running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@page.get("/metrics")
def scrape():
    token = services().settings["METRICS_TOKEN"]
    if not token:
        abort(404)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return Response("Unauthorized: send 'Authorization: Bearer <PROMPTPROXY_METRICS_TOKEN>'.\n", 401,
                        {"WWW-Authenticate": 'Bearer realm="metrics"'}, content_type="text/plain")
    body, content_type = services().metrics.exposition(request.headers.get("Accept"))
    return Response(body, content_type=content_type)
