"""One try of a call upstream, and what reaches the client of its answer (steps 6
and 7 of the proxy's path): a whole answer shaped for the client, or a stream
relayed event by event as it arrives, whose body owns the end of its call.

A try reads everything up to the first byte of the answer before anything is
sent to the client, so that until then a failure can still be tried again
elsewhere (see `proxy.tried`)."""

import json
import logging
import time

from flask import Response, request
from urllib3.exceptions import HTTPError

from . import routing
from .errors import ProxyError, shown
from .providers import sse
from .providers.base import Refused, error_text, parsed_json
from .providers.upstream import PASSED_BACK, forward, upstream_failure
from .services import services

log = logging.getLogger(__name__)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Failed:
    """A try that failed retryably: a transport error (a ProxyError), or an
    upstream's error answer, already read. The last one becomes the response."""

    def __init__(self, call, route=None, upstream=None, data=b"", error=None):
        self.model, self.api, self.route = call.model, call.api, route
        self.upstream, self.data, self.error = upstream, data, error
        self.status = upstream.status if upstream is not None else error.status
        self.retry_after = upstream.headers.get("Retry-After") if upstream is not None else None
        self.text = error.message if error is not None else f"HTTP {self.status}: " + shown(
            error_text(parsed_json(data), data) or "", 300)

    def response(self, call):
        call.model, call.api = self.model, self.api
        if self.error is not None:
            raise self.error
        response = answered(call, self.route, self.upstream, self.data)
        response.headers.update(call.headers)
        return response


def sent(call, route, encoded, hide_usage):
    """One try of the current model: the Response for the client, or a Failed try
    worth another (nothing has reached the client then). Everything up to the
    first byte of the answer is read here, so a timeout before it is retryable."""
    began = time.perf_counter()
    upstream, streamed = None, False
    try:
        upstream = forward(services().pools, call.api, route.path, encoded, call.stream, request.environ)
        streamed = (call.stream and upstream.status < 400
                    and upstream.headers.get("Content-Type", "").startswith("text/event-stream"))
        data = upstream.read1(65536) if streamed else upstream.read()
    except (ProxyError, HTTPError) as exc:
        error = exc if isinstance(exc, ProxyError) else upstream_failure(call.api, exc)
        if upstream is not None:
            upstream.close()
        call.attempted(began, error=error.message)
        if error.upstream_error in routing.RETRYABLE_FAILURES:
            return Failed(call, error=error)
        raise error from None
    finally:
        if upstream is not None and not streamed:
            upstream.release_conn()  # read whole: the connection goes back to the pool
    call.attempted(began, status=upstream.status)
    if upstream.status in routing.RETRYABLE_STATUS:
        return Failed(call, route, upstream, data)
    if streamed:
        call.first_byte()
        return Response(Streamed(call, upstream, route.events(call, hide_usage), data),
                        status=upstream.status, content_type="text/event-stream; charset=utf-8",
                        headers={**SSE_HEADERS, **call.headers, "X-PromptProxy-Model": call.model.id})
    response = answered(call, route, upstream, data)
    response.headers.update(call.headers)
    return response


def answered(call, route, upstream, data):
    """A whole (non-streamed) answer, in the client's format. An upstream error keeps
    its status, and its very body when the client speaks the upstream's language."""
    call.first_byte()
    call.status = upstream.status
    parsed = parsed_json(data)
    headers = {name: upstream.headers[name] for name in PASSED_BACK if name in upstream.headers}
    headers["X-PromptProxy-Model"] = call.model.id
    content_type = upstream.headers.get("Content-Type", "application/json")
    if upstream.status >= 400:
        call.error = error_text(parsed, data)
        call.upstream_error = f"status_{upstream.status // 100}xx"
        status, body = route.error(upstream.status, parsed, data)
        call.status = status  # what the client was told
        if body is None:
            return Response(data, status=status, headers=headers, content_type=content_type)
        return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")
    if not isinstance(parsed, dict):
        raise ProxyError(502, f"The upstream '{call.api.name}' answered with something that is not JSON.",
                         type_="api_error", code="upstream_error", upstream_error="invalid")
    try:
        body = route.answer(call, parsed)
    except Refused as exc:
        raise ProxyError(502, f"The upstream's answer could not be translated: {exc}",
                         type_="api_error", code="upstream_error", upstream_error="invalid") from None
    if call.track and call.response_body is None:  # unless the route kept a shorter account of it
        call.response_body = parsed
    if body is parsed:  # passed through: send the upstream's own bytes
        return Response(data, status=upstream.status, headers=headers, content_type=content_type)
    return Response(json.dumps(body), status=upstream.status, headers=headers, content_type="application/json")


class Streamed:
    """The body of a streamed answer, and the owner of its call's end.

    A stream relayed to its end ends its call at once, before the server finishes
    the response. Otherwise the WSGI server's `close` ends it, whether the client
    went away half-way or was gone before the first event (when a generator's own
    `finally` would never run). Either way the call ends once.
    """

    def __init__(self, call, upstream, events, first):
        self.call, self.upstream = call, upstream
        self.chunks = relay(call, upstream, events, first)
        self.complete = False

    def __iter__(self):
        yield from self.chunks
        self.complete = True
        self.call.end()

    def close(self):
        try:
            self.chunks.close()
            if not self.complete and self.call.status < 400:
                self.call.fail(499, "The client disconnected before the stream ended.")
        finally:
            self.upstream.close()  # promptly frees the upstream too when the client went away
            self.call.end()


def relay(call, upstream, events, first):
    """Server-sent events from the upstream to the client, as each one arrives,
    beginning with `first`, the piece read before the response began (see `sent`).

    Reads with read1, which returns whatever the socket has, so neither chunked nor
    close-delimited upstreams are held back. `events` decides what each upstream
    event becomes for the client (passed on, translated, dropped) and how the
    stream ends; see OpenAIEvents. Whatever goes wrong on the way ends the stream
    with an error event in the client's format.
    """
    parser = sse.Parser(comments=True)  # keep-alive comments are passed on too
    piece = first
    try:
        while True:
            if piece is None:
                try:
                    piece = upstream.read1(65536)
                except HTTPError as exc:
                    failure = upstream_failure(call.api, exc)
                    call.fail(failure.status, failure.message, failure.upstream_error)
                    yield events.failed(failure.message, failure.code)
                    return
            if not piece:
                break
            out = [events.event(event) for event in parser.feed(piece)]
            piece = None
            if out:
                yield b"".join(out)
        for event in parser.end():
            yield events.event(event)
        yield events.ended()
    except Exception:
        log.exception("relaying a stream from '%s' failed", call.api.name)
        call.fail(500, "PromptProxy failed while relaying the stream; see the server's log.")
        yield events.failed(call.error, "internal_error")
