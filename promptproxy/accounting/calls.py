"""One call's account: what the proxy learns about a call as it goes, and its
single end.

`Call.end` is the one way a call ends: it prices the call (see costs.py), gives
its rate-limit slot back (counting its tokens and its cost), queues its request
row and counts it in the metrics, once, whatever happened on the way. The proxy
(promptproxy/proxy.py) fills a Call in step by step.
"""

import logging
import time
from dataclasses import dataclass, field

from ..data.fields import new_id, utcnow
from ..providers.base import last_user_message
from . import costs

log = logging.getLogger(__name__)

REQUEST_ID = "x-promptproxy-request-id"  # on every answer to a call: the id of its request row


@dataclass
class Call:
    """What we learn about one call as it goes; at the end it becomes its request row."""

    endpoint: str
    key: object
    user: object
    id: str = field(default_factory=new_id)  # its row's, known from the start for `x-promptproxy-request-id`
    started: float = field(default_factory=time.perf_counter)
    created: object = field(default_factory=utcnow)
    model_ref: str = None
    end_user: str = None  # who the client says the call is for (end_users.end_user)
    model: object = None
    api: object = None
    prompt: object = None  # the prompt as referenced (prompting.Referenced)
    prompt_version: int = None  # the number of the prompt's version served
    stream: bool = False
    status: int = 200
    error: str = None
    upstream_error: str = None  # how the upstream failed, if it did: a kind, for the metrics
    ticket: object = None  # what the rate limiter admitted; released when the call ends
    upstream_ticket: object = None  # a slot under the answering api's concurrency cap, if it has one
    attempts: list = field(default_factory=list)  # each try: model, api, status or error, ms
    usage: dict = None
    cost: int = None  # nano-units of the currency, worked out when the call ends (see costs.py)
    ttfb_ms: float = None
    request_body: dict = None
    response_body: object = None
    system_prompt: str = None
    reply_parts: list = field(default_factory=list)
    limiter: object = None
    recorder: object = None
    metrics: object = None  # none for a Call made outside the proxy (a benchmark's)
    ended: bool = False

    def __post_init__(self):
        if self.metrics is not None:
            self.metrics.began()  # in flight until it ends

    @property
    def headers(self):
        """The headers of every answer to this call: its request row's id, and its
        rate limits once it was admitted."""
        return {**(self.ticket.headers if self.ticket else {}), REQUEST_ID: self.id}

    @property
    def track(self):
        return bool(self.key.track)

    def fail(self, status, error, upstream_error=None):
        self.status, self.error = status, error
        if upstream_error and not self.upstream_error:  # the first failure is the cause
            self.upstream_error = upstream_error

    def end(self):
        """The one way a call ends: price it, release its rate-limit slot (counting
        its tokens and its cost), then queue its row and count it. Safe to call
        again; only the first counts."""
        if self.ended:
            return
        self.ended = True
        usage = self.usage if isinstance(self.usage, dict) else {}
        try:
            self.cost = costs.cost(self.usage, self.model)
        except Exception:  # never lose the row over a figure
            log.exception("the cost of a call could not be worked out")
        try:
            for release in (self.release_upstream,
                            lambda: self.limiter.release(self.ticket, usage.get("total_tokens"), self.cost)):
                try:
                    release()
                except Exception:
                    log.exception("releasing a slot of a call failed")
        finally:
            try:
                row = self.row()
            except Exception:  # never lose the row over what a client or upstream sent
                log.exception("the request row of a call could not be built whole")
                row = self.row(bodies=False)
            try:
                self.recorder.record(row)
            finally:
                if self.metrics is not None:
                    self.metrics.ended(self)

    def release_upstream(self):
        """Give back the slot held under an api's concurrency cap (the call moves on, or ends)."""
        ticket, self.upstream_ticket = self.upstream_ticket, None
        if ticket is not None:
            self.limiter.release(ticket, None)

    def attempted(self, began, status=None, error=None):
        """Note a try of the current model and api that `began` (perf_counter) then."""
        self.attempts.append({"model": self.model.id, "api": self.api.id, "status": status, "error": error,
                              "ms": round((time.perf_counter() - began) * 1000)})

    def first_byte(self):
        if self.ttfb_ms is None:
            self.ttfb_ms = (time.perf_counter() - self.started) * 1000

    def row(self, bodies=True):
        """The request row; with the bodies, prompt and reply only for tracked keys."""
        usage = self.usage if isinstance(self.usage, dict) else {}
        row = {
            "id": self.id, "created": self.created, "user": self.user.id, "key": self.key.id,
            "api": self.api.id if self.api else None, "model": self.model.id if self.model else None,
            "prompt": self.prompt.id if self.prompt else None, "prompt_version": self.prompt_version,
            "model_ref": self.model_ref if isinstance(self.model_ref, str) else None,
            "end_user": self.end_user,
            "endpoint": self.endpoint, "stream": self.stream, "status": self.status,
            "error": self.error,
            "input_tokens": usage.get("prompt_tokens"), "output_tokens": usage.get("completion_tokens"),
            "total_tokens": usage.get("total_tokens"), "cost": costs.amount(self.cost),
            "latency_ms": round((time.perf_counter() - self.started) * 1000),
            "ttfb_ms": round(self.ttfb_ms) if self.ttfb_ms is not None else None,
            "attempts": self.attempts or None,
        }
        if self.track and bodies:
            row.update(request_body=self.request_body, response_body=self.response_body,
                       system_prompt=self.system_prompt, user_message=last_user_message(self.request_body),
                       reply="".join(part for part in self.reply_parts if isinstance(part, str)) or None)
        return row
