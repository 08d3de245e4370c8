"""A fake Anthropic upstream: a real HTTP server speaking the Messages API.

The OpenAI fake in tests/upstream.py gives end-to-end tests a real socket; this
does the same for an upstream that speaks Anthropic's API, so the proxy's
translation is exercised against the wire format the official SDK itself
accepts (tests/test_anthropic_translation.py proves that with the SDK).  It
reuses that fake's server, lifecycle, recording and timing controls, and only
changes what is said.

    with AnthropicUpstream() as upstream:
        upstream.script(status=529)
        ... point the code under test at upstream.base_url ...
        assert upstream.requests[0].headers["x-api-key"] == "sk-ant-..."

:attr:`AnthropicUpstream.base_url` has no ``/v1``, as Anthropic base URLs do
not; requests go to ``POST <base_url>/v1/messages``.  ``POST
/v1/messages/count_tokens`` answers ``{"input_tokens": N}`` with the same count
as a message's usage, and ``GET /v1/models`` lists :attr:`AnthropicUpstream.models`.

Default answer: a ``message`` whose one text block is ``"echo: <text of the last
user message>"``.  Usage is deterministic: input_tokens is the number of
whitespace-separated words in the system prompt and all message texts (text
blocks and tool results), output_tokens the number of words in the reply plus
those in the JSON of any tool-use input.  With ``"stream": true`` the answer is
Anthropic's event stream, exactly as the API sends it::

    message_start (usage.output_tokens 1), then per content block:
    content_block_start, [ping after the first], content_block_delta
    (text_delta one per word / input_json_delta: "" then pieces of the JSON),
    content_block_stop; then message_delta (stop_reason, usage.output_tokens),
    message_stop.  No [DONE].

Every event counts as a "chunk" for ``gate``, ``delay`` and ``drop_after``.
Requests without a key (``x-api-key``, or ``Authorization: Bearer`` as the
official SDK sends it) or without ``anthropic-version`` get 401
authentication_error instead of their scripted answer (which they still take); other paths get 404
not_found_error; malformed bodies 400 invalid_request_error -- all in
Anthropic's error shape ``{"type": "error", "error": {"type", "message"},
"request_id"}``, and every answer carries a ``request-id`` header.
"""

import json
import threading

from tests import upstream as base
from tests.upstream import Headers, RecordedRequest, _pieces, _words

__all__ = ["AnthropicUpstream", "RecordedRequest", "Headers", "ERROR_TYPES"]

EXTRA_BEHAVIOURS = {"tool_use", "stop_reason", "stream_error"}
BEHAVIOURS = base.BEHAVIOURS | EXTRA_BEHAVIOURS
STOP_REASONS = {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal",
                "model_context_window_exceeded"}
#: HTTP status -> Anthropic error type and a message like the API's own.
ERROR_TYPES = {400: ("invalid_request_error", "Invalid request"),
               401: ("authentication_error", "invalid x-api-key"),
               402: ("billing_error", "Your credit balance is too low"),
               403: ("permission_error", "Your API key does not have permission"),
               404: ("not_found_error", "Not found"),
               413: ("request_too_large", "Request exceeds the maximum allowed number of bytes"),
               429: ("rate_limit_error", "Number of requests has exceeded your rate limit"),
               500: ("api_error", "Internal server error"),
               529: ("overloaded_error", "Overloaded")}


class AnthropicUpstream(base.FakeUpstream):
    """A real HTTP server on 127.0.0.1 that speaks Anthropic's Messages API.

    :attr:`models` is what ``GET /v1/models`` lists, in Anthropic's shape.

    Everything but the protocol comes from FakeUpstream: start()/stop()/``with``,
    :attr:`requests`, :meth:`reset`, :meth:`wait_for_request`,
    :meth:`wait_for_disconnect`, and the timing behaviours of :meth:`script`.
    """

    models = [
        {"type": "model", "id": "claude-sonnet-4-6", "display_name": "Claude Sonnet 4.6",
         "created_at": "2026-02-17T00:00:00Z"},
        {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5",
         "created_at": "2025-10-15T00:00:00Z"},
    ]

    def start(self):
        """Bind 127.0.0.1 on a free port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("AnthropicUpstream already started")
        self._stopping = False
        self._server = base._Server(self)
        self._server.RequestHandlerClass = _Handler  # before anything can connect
        self.port = self._server.server_port
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=f"AnthropicUpstream:{self.port}", daemon=True)
        self._thread.start()
        return self

    def script(self, **behaviour):
        """Queue the behaviour of the next request (FIFO), as FakeUpstream.script
        does, with these options for what is said:

        status, body, headers
            As FakeUpstream; an error ``status`` without a body gets an
            Anthropic error body of the matching type (529: overloaded_error).
        reply
            The reply text instead of ``"echo: ..."``.  With ``tool_use`` and no
            ``reply`` the answer has no text block at all.
        usage
            Fields added to the answer's usage, e.g. ``{"cache_read_input_tokens":
            6}``; a stream's message_start carries them, as the API's does.
        tool_use
            ``dict(name=..., input={...})``, or a list of them: tool_use blocks
            after the text, ids ``toolu_fake<request>_<i>``.
        stop_reason
            Instead of ``"tool_use"`` (with tool_use) or ``"end_turn"``.  With
            ``"stop_sequence"`` the answer names the request's first stop sequence.
        chunks
            For streaming, the exact text pieces, one text_delta each.
        stream_error
            For streaming: an error type (``"overloaded_error"``) or error
            object; the stream ends with that ``error`` event instead of
            message_delta and message_stop, as the API does when it fails mid-way.
        gate, delay, drop_after, hang, framing
            As FakeUpstream, counting events as chunks.
        """
        unknown = set(behaviour) - BEHAVIOURS
        if unknown:
            raise TypeError(f"unknown behaviour(s): {', '.join(sorted(unknown))}")
        tool_use = behaviour.get("tool_use")
        if tool_use is not None:
            uses = [tool_use] if isinstance(tool_use, dict) else list(tool_use)
            if not uses or not all(isinstance(u, dict) and isinstance(u.get("name"), str)
                                   and isinstance(u.get("input", {}), dict) for u in uses):
                raise ValueError("tool_use must be dict(name=str, input=dict) or a list of them")
            behaviour["tool_use"] = uses
        if behaviour.get("stop_reason", "end_turn") not in STOP_REASONS:
            raise ValueError(f"stop_reason must be one of {sorted(STOP_REASONS)}")
        extra = {name: behaviour.pop(name) for name in EXTRA_BEHAVIOURS if name in behaviour}
        # The condition's lock is re-entrant: queue and complete the entry
        # atomically, so no request can take it half-written.
        with self._cond:
            super().script(**behaviour)
            self._scripts[-1].update(extra)
        return self


def error_body(type_, message, request_id=None):
    """An error in Anthropic's shape."""
    return {"type": "error", "error": {"type": type_, "message": message},
            "request_id": request_id}


def _text(content, with_tool_results=True):
    """Text of an Anthropic content: a string, or text (and tool result) blocks."""
    if isinstance(content, str):
        return content
    texts = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif block.get("type") == "tool_result" and with_tool_results:
            texts.append(_text(block.get("content")))
    return " ".join(texts)


class _Handler(base._Handler):
    server_version = "FakeAnthropic/1.0"

    @property
    def request_id(self):
        return f"req_fake{len(self.upstream.requests)}"

    def _send_headers(self, status, headers):
        super()._send_headers(status, {**headers, "request-id": self.request_id})

    def _auth_error(self):
        """Answer 401 if the request lacks a key or an API version; True if so.

        The key is ``x-api-key``, as Anthropic documents, or a bearer token:
        the official SDK (2.x) sends its api_key as ``Authorization: Bearer``.
        """
        bearer = self.headers.get("Authorization", "")
        if not self.headers.get("x-api-key") and not (
                bearer.lower().startswith("bearer ") and bearer[len("bearer "):].strip()):
            message = "x-api-key: header is required"
        elif not self.headers.get("anthropic-version"):
            message = "anthropic-version: header is required"
        else:
            return False
        self._send_json(401, error_body("authentication_error", message, self.request_id))
        return True

    def _send_error(self, status, type_, message):
        self._send_json(status, error_body(type_, message, self.request_id))

    def _send_fixed(self, behaviour):
        if self._auth_error():
            return
        if behaviour.get("body") is None:
            status = behaviour.get("status", 200)
            type_, message = ERROR_TYPES.get(status) or (
                ("invalid_request_error", "Invalid request") if status < 500
                else ("api_error", "Internal server error"))
            behaviour = {**behaviour, "body": error_body(type_, message, self.request_id)}
        super()._send_fixed(behaviour)

    def _answer(self, request, behaviour):
        if self._auth_error():
            return
        path = request.path.split("?", 1)[0].rstrip("/")
        routes = {"/v1/messages": ("POST", self._messages),
                  "/v1/messages/count_tokens": ("POST", self._count_tokens),
                  "/v1/models": ("GET", self._models)}
        if path not in routes:
            return self._send_error(404, "not_found_error", f"Not found: {path}")
        method, answer = routes[path]
        if self.command != method:
            return self._send_error(405, "invalid_request_error",
                                    f"Method {self.command} not allowed")
        if method == "POST":
            problem = self._invalid(request.json, needs_max_tokens=answer == self._messages)
            if problem:
                return self._send_error(400, "invalid_request_error", problem)
        answer(request, behaviour, behaviour.get("status", 200))

    @staticmethod
    def _invalid(data, needs_max_tokens=True):
        """What the real API would reject in a request body, if anything: the
        checks that catch a translation gone wrong."""
        if not isinstance(data, dict):
            return "Request body must be a JSON object"
        if not isinstance(data.get("model"), str):
            return "model: Field required"
        if needs_max_tokens and (isinstance(data.get("max_tokens"), bool)
                                 or not isinstance(data.get("max_tokens"), int)):
            return "max_tokens: Field required"
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: Field required"
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                role = message.get("role") if isinstance(message, dict) else None
                return f"messages.{i}.role: Input should be 'user' or 'assistant' (got {role!r})"
            if not isinstance(message.get("content"), (str, list)):
                return f"messages.{i}.content: Field required"
        return None

    def _models(self, request, behaviour, status):
        self._send_json(status, {"data": self.upstream.models, "has_more": False,
                                 "first_id": self.upstream.models[0]["id"],
                                 "last_id": self.upstream.models[-1]["id"]})

    @staticmethod
    def _input_tokens(data):
        texts = [_text(data.get("system") or "")] + [_text(m["content"]) for m in data["messages"]]
        return sum(map(_words, texts))

    def _count_tokens(self, request, behaviour, status):
        self._send_json(status, {"input_tokens": self._input_tokens(request.json)})

    def _messages(self, request, behaviour, status):
        data = request.json
        messages = data["messages"]
        last_user = next((m for m in reversed(messages) if m["role"] == "user"), None)
        uses = behaviour.get("tool_use") or []
        reply = behaviour.get("reply")
        if reply is None and not uses:
            reply = "echo: " + (_text(last_user["content"]) if last_user else "")
        if behaviour.get("chunks") is not None and data.get("stream"):
            reply = "".join(behaviour["chunks"])
        n = len(self.upstream.requests)
        content = [] if reply is None else [{"type": "text", "text": reply}]
        content += [{"type": "tool_use", "id": f"toolu_fake{n}_{i}", "name": use["name"],
                     "input": use.get("input", {})} for i, use in enumerate(uses)]
        stop_reason = behaviour.get("stop_reason") or ("tool_use" if uses else "end_turn")
        stops = data.get("stop_sequences") or []
        stop_sequence = stops[0] if stop_reason == "stop_sequence" and stops else None
        usage = {"input_tokens": self._input_tokens(data),
                 "output_tokens": _words(reply or "") + sum(
                     _words(json.dumps(use.get("input", {}))) for use in uses),
                 **behaviour.get("usage", {})}
        message = {"id": f"msg_fake{n}", "type": "message", "role": "assistant",
                   "model": data["model"], "content": content, "stop_reason": stop_reason,
                   "stop_sequence": stop_sequence, "usage": usage}
        if not data.get("stream"):
            return self._send_json(status, message)
        self._stream_events(status, self._events(message, behaviour), behaviour)

    @staticmethod
    def _events(message, behaviour):
        """The event stream that delivers `message`, as the API sends it."""
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {**message["usage"], "output_tokens": 1}}
        events = [("message_start", {"type": "message_start", "message": start})]
        if not message["content"]:
            events.append(("ping", {"type": "ping"}))
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                opening = {"type": "text", "text": ""}
                chunks = behaviour.get("chunks")
                pieces = list(chunks) if chunks is not None else _pieces(block["text"])
                deltas = [{"type": "text_delta", "text": p} for p in pieces if p]
            else:
                opening = {**block, "input": {}}
                pieces = _pieces(json.dumps(block["input"])) if block["input"] else []
                deltas = [{"type": "input_json_delta", "partial_json": p} for p in [""] + pieces]
            events.append(("content_block_start", {"type": "content_block_start",
                                                   "index": index, "content_block": opening}))
            if index == 0:
                events.append(("ping", {"type": "ping"}))
            events += [("content_block_delta", {"type": "content_block_delta", "index": index,
                                                 "delta": delta}) for delta in deltas]
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        error = behaviour.get("stream_error")
        if error is not None:
            if isinstance(error, str):
                error = {"type": error, "message": dict(ERROR_TYPES.values()).get(error, error)}
            return events + [("error", {"type": "error", "error": error})]
        return events + [
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": message["stop_reason"],
                                         "stop_sequence": message["stop_sequence"]},
                               "usage": {"output_tokens": message["usage"]["output_tokens"]}}),
            ("message_stop", {"type": "message_stop"})]

    def _stream_events(self, status, events, behaviour):
        """FakeUpstream's event stream, with Anthropic's ``event:``/``data:`` pairs
        and no [DONE]."""
        encoded = [f"event: {event}\ndata: {json.dumps(data)}\n\n".encode() for event, data in events]
        self._send_sse(status, encoded, behaviour, "text/event-stream; charset=utf-8")

