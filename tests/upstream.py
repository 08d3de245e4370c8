"""A fake OpenAI-compatible upstream: a real HTTP server for end-to-end tests.

The proxy under test talks to upstreams over real sockets, so its tests need a
real server: something a unit-test mock (which patches the HTTP client) cannot
give us -- keep-alive, chunked and connection-close framing, a client that goes
away mid-stream, an upstream that never answers.  Only the standard library is
used so the helper behaves the same whatever the application under test imports.

    with FakeUpstream() as upstream:
        upstream.script(status=429, headers={"Retry-After": "7"})
        ... point the proxy at upstream.base_url, send a request through it ...
        assert upstream.requests[0].headers["Authorization"] == "Bearer sk-..."

Default answers (no behaviour scripted):

* ``POST /v1/chat/completions`` -- a ``chat.completion`` whose reply is
  ``"echo: <content of the last message>"``; ``POST /v1/completions`` -- a
  ``text_completion`` with one choice per prompt, ``"echo: <prompt>"``.
  Usage is deterministic: prompt_tokens is the number of whitespace-separated
  words in all message contents (or prompts), completion_tokens the number of
  words in the reply (or replies).
* ``POST /v1/embeddings`` -- one embedding per input (a string, a list of strings,
  of token ids, or of lists of token ids): :func:`fake_embedding` of it, with
  ``dimensions`` numbers (8 by default), as floats or, with ``encoding_format:
  "base64"``, as little-endian float32 in base64. Usage: prompt_tokens (and
  total_tokens) is the number of words, or token ids, in all the inputs.
* ``GET /v1/models`` -- :attr:`FakeUpstream.models`; ``GET /v1/models/<id>``.
* With ``"stream": true`` the answer is server-sent events: one chunk per word
  of the reply (the last carrying ``finish_reason``), then -- only if the
  request had ``stream_options.include_usage`` -- a chunk with ``choices: []``
  and ``usage``, then ``data: [DONE]``.  Every one of these ``data:`` events
  counts as a "chunk" for ``gate``, ``delay`` and ``drop_after``.
* Anything else answers 404 (405 for a wrong method) in OpenAI's error shape.
"""

import base64
import collections
import json
import re
import selectors
import socket
import socketserver
import struct
import sys
import threading
import time
import zlib
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FakeUpstream", "RecordedRequest", "Headers", "fake_embedding"]

CREATED = 1_700_000_000  # a fixed timestamp keeps every answer deterministic
DEFAULT_MODEL = "gpt-4o-mini"
EMBEDDING_DIMENSIONS = 8
BEHAVIOURS = {"status", "body", "headers", "reply", "chunks", "framing", "gate", "delay",
              "drop_after", "hang", "line_end", "usage"}
FRAMINGS = {"chunked", "close"}
STATUS_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


class Headers(Mapping):
    """Request headers, looked up case-insensitively (as HTTP requires) but
    iterated with the spelling the client sent; repeated headers are joined
    with ", " as RFC 9110 allows."""

    def __init__(self, pairs):
        self._items = {}
        for name, value in pairs:
            key = name.lower()
            if key in self._items:
                value = f"{self._items[key][1]}, {value}"
                name = self._items[key][0]
            self._items[key] = (name, value)

    def __getitem__(self, name):
        return self._items[name.lower()][1]

    def __iter__(self):
        return (name for name, _ in self._items.values())

    def __len__(self):
        return len(self._items)

    def __contains__(self, name):
        return isinstance(name, str) and name.lower() in self._items

    def __repr__(self):
        return f"Headers({dict(self.items())!r})"


class RecordedRequest:
    """One request as the upstream received it, so tests can assert on exactly
    what the proxy forwarded (method, path with query, headers, raw body)."""

    def __init__(self, method, path, headers, body, client_address):
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        #: (host, port) of the connection it came on: equal ports on two
        #: requests prove the client reused a keep-alive connection.
        self.client_address = client_address
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None
        #: time.monotonic() as each event of a streamed answer was written (the
        #: clock is the machine's, so a client in another process can compare).
        self.sent = []

    def __repr__(self):
        return f"<RecordedRequest {self.method} {self.path} {len(self.body)} bytes>"


class _Stop(Exception):
    """Abandon the current response and close its connection (client gone,
    upstream stopping, or a scripted abrupt close)."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True           # a stuck handler must never keep pytest alive
    allow_reuse_address = True
    request_queue_size = 256        # load tests open many connections at once

    def __init__(self, upstream):
        self.upstream = upstream
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self):
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup
        # that can take seconds on a badly configured host; we know the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        # Clients (and stop()) closing connections under us is the normal
        # business of this server, not something to print tracebacks about.
        if isinstance(sys.exc_info()[1], (OSError, _Stop)):
            return
        super().handle_error(request, client_address)


class FakeUpstream:
    """A real HTTP server on 127.0.0.1 that speaks the OpenAI API.

    Start it (``start()`` or ``with``), point the code under test at
    :attr:`base_url`, script what the next requests get with :meth:`script`,
    then assert on :attr:`requests` and :attr:`client_disconnects`.
    """

    #: What GET /v1/models lists; replace on an instance to list others.
    models = [
        {"id": DEFAULT_MODEL, "object": "model", "created": CREATED, "owned_by": "fake-upstream"},
        {"id": "gpt-3.5-turbo-instruct", "object": "model", "created": CREATED,
         "owned_by": "fake-upstream"},
    ]

    def __init__(self):
        """Nothing listens until start(): creating one in a fixture is free and
        a test can script behaviour before any connection is possible."""
        self.base_url = None
        self.port = None
        #: Every request received, in arrival order (RecordedRequest objects).
        self.requests = []
        #: How many times a client went away while we were answering it.
        self.client_disconnects = 0
        #: Set on the first client disconnect (cleared by reset()).
        self.disconnected = threading.Event()
        self._cond = threading.Condition()  # guards all the state below
        self._scripts = collections.deque()
        self._gates = []                    # every gate handed to script(), to release on stop
        self._release = threading.Event()   # set by stop()/reset(): ends `hang` without a gate
        self._stopping = False
        self._server = None
        self._thread = None
        self._connections = {}              # handler thread -> its socket

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        """Bind 127.0.0.1 on a free port and serve in a daemon thread.  Returns
        self so ``upstream = FakeUpstream().start()`` reads naturally."""
        if self._server is not None:
            raise RuntimeError("FakeUpstream already started")
        self._stopping = False
        self._server = _Server(self)
        self.port = self._server.server_port
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        # A short poll interval because shutdown() waits for the loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=f"FakeUpstream:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop serving and leave nothing behind: release every gate and hang
        (a test that failed half-way must not leave handler threads blocked),
        close the listening socket and every open connection, and join the
        threads.  Safe to call twice."""
        if self._server is None:
            return
        with self._cond:
            self._stopping = True
            self._release_held()
        self._server.shutdown()
        self._server.server_close()
        with self._cond:  # no connection can be accepted any more
            connections = dict(self._connections)
        for sock in connections.values():
            try:  # wakes handlers blocked reading an idle keep-alive connection
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        for thread in connections:
            thread.join(5)
        self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    # -- test controls -----------------------------------------------------

    def reset(self):
        """Forget recorded requests, queued scripts and disconnects, and release
        every gate and hang still holding a response, so one server can serve
        several independent phases of a test."""
        with self._cond:
            self.requests.clear()
            self._scripts.clear()
            self._release_held()
            self.client_disconnects = 0
            self.disconnected.clear()

    def script(self, **behaviour):
        """Queue the behaviour of the next request to arrive (FIFO: call it
        three times to script the next three requests; with nothing queued a
        request gets the default echo answer).  Options, all combinable:

        status, body, headers
            ``body`` (dict -> JSON, str, bytes) or an error ``status`` (>= 400)
            makes the answer exactly this, whatever the path; an error status
            without a body gets an OpenAI-style error body.  ``headers`` are
            added to (or override) any answer's headers; a status < 400
            without a body just changes the default answer's status.
        reply
            The reply text instead of ``"echo: ..."``.
        usage
            Fields added to the answer's usage (and replacing its own), e.g.
            ``{"prompt_tokens_details": {"cached_tokens": 4}}``.
        chunks
            For streaming, the exact content pieces, one chunk each.
        framing
            ``"chunked"`` (default) or ``"close"``: no Content-Length and no
            chunking, ``Connection: close``, the body ends when we close.
        gate
            A threading.Event, or a list of them.  Chunk 0 goes at once;
            before chunk i (i >= 1) we wait for gate[i-1] (a single Event
            gates chunk 1 only).  Lets a test prove chunk 0 reached its client
            while we still hold chunk 1, with no sleeps.
        delay
            Seconds to wait before each chunk after the first.
        drop_after
            Close the connection abruptly after this many chunks: no [DONE]
            and, when chunked, no terminating zero-length chunk.  For a
            non-streaming answer it counts bytes of the body.
        line_end
            For streaming, ``"\r\n"`` or ``"\r"`` instead of ``"\n"`` at the end of
            every line of the event stream. With ``"\r\n"`` each chunk stops
            between the CR and the LF of its event's last line end, and the LF
            starts the next chunk: the hardest place for a reader to be cut.
        hang
            Send nothing -- not even headers -- until stop()/reset(), which
            then close the connection; or, with a ``gate``, until its first
            Event is set, after which the answer proceeds normally.

        While a response is held by gate, delay or hang we watch the socket, so
        a client that goes away is counted at once (see wait_for_disconnect).
        """
        unknown = set(behaviour) - BEHAVIOURS
        if unknown:
            raise TypeError(f"unknown behaviour(s): {', '.join(sorted(unknown))}")
        if behaviour.get("framing", "chunked") not in FRAMINGS:
            raise ValueError(f"framing must be one of {sorted(FRAMINGS)}")
        gate = behaviour.get("gate")
        gates = [] if gate is None else [gate] if isinstance(gate, threading.Event) else list(gate)
        behaviour["gate"] = gates
        with self._cond:
            self._gates.extend(gates)
            if self._stopping:
                for event in gates:
                    event.set()
            self._scripts.append(behaviour)
        return self

    def wait_for_request(self, n=1, timeout=5):
        """Block until at least n requests have arrived (since start or the
        last reset); True if they did, False on timeout.  Lets a test know the
        proxy has reached the upstream before it acts, without sleeping."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.requests) >= n, timeout)

    def wait_for_disconnect(self, timeout=5, n=1):
        """Block until at least n client disconnects have been seen (since
        start or the last reset); True if so, False on timeout.  Proves a proxy
        closed its upstream request promptly after its own client went away."""
        with self._cond:
            return self._cond.wait_for(lambda: self.client_disconnects >= n, timeout)

    # -- used by the handler -------------------------------------------------

    def _release_held(self):
        # Caller holds self._cond.
        for event in self._gates:
            event.set()
        self._gates.clear()
        self._release.set()
        self._release = threading.Event()

    def _record(self, request):
        """Record a request and take its behaviour, atomically, so "the next
        request" means the next to arrive even with concurrent clients."""
        with self._cond:
            self.requests.append(request)
            behaviour = self._scripts.popleft() if self._scripts else {"gate": []}
            release = self._release
            self._cond.notify_all()
        return behaviour, release

    def _client_gone(self):
        with self._cond:
            if self._stopping:
                return
            self.client_disconnects += 1
            self.disconnected.set()
            self._cond.notify_all()

    def _track(self, sock):
        with self._cond:
            if sock is None:
                self._connections.pop(threading.current_thread(), None)
            else:
                self._connections[threading.current_thread()] = sock


def _words(text):
    return len(text.split())


def fake_embedding(item, dimensions=EMBEDDING_DIMENSIONS):
    """The vector the fake upstream answers for one input (a text or token ids):
    the same for the same input, another for another, and exact in float32
    (multiples of 1/64), so a base64 answer decodes to exactly these numbers."""
    seed = zlib.crc32(json.dumps(item).encode())
    return [((seed + 37 * j) % 64 - 32) / 64 for j in range(dimensions)]


def _embedding_inputs(value):
    """The inputs of an embeddings request, one per embedding; None if `value` has
    none of OpenAI's shapes."""
    def tokens(item):
        return isinstance(item, list) and item and all(type(t) is int for t in item)
    if isinstance(value, str) or tokens(value):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) or tokens(v) for v in value):
        return value
    return None


def _pieces(text):
    """Split a reply into per-word pieces that concatenate back to it."""
    return re.findall(r"\s*\S+\s*$|\s*\S+", text) or [text]


def _content_text(content):
    """Text of a chat message's content: a string, or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content
                        if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _error(message, type_, code=None):
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, and chunked responses
    server_version = "FakeUpstream/1.0"

    def setup(self):
        super().setup()
        self.upstream = self.server.upstream
        self.upstream._track(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.upstream._track(None)

    def log_message(self, format, *args):
        pass  # requests are recorded; stderr noise would only clutter test output

    def do_request(self):
        body = self._read_body()
        path = self.path
        request = RecordedRequest(self.command, path, Headers(self.headers.items()), body,
                                  self.client_address)
        behaviour, self.release = self.upstream._record(request)
        self.recorded = request
        self.gates = behaviour["gate"]
        self.delay = behaviour.get("delay")
        self.drop_after = behaviour.get("drop_after")
        self.extra_headers = behaviour.get("headers") or {}
        try:
            if behaviour.get("hang"):
                self._hold(self.gates[0] if self.gates else self.release)
                if not self.gates:
                    raise _Stop
            if "body" in behaviour or behaviour.get("status", 200) >= 400:
                return self._send_fixed(behaviour)
            self._answer(request, behaviour)
        except _Stop:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
            self.upstream._client_gone()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_request

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- routing -------------------------------------------------------------

    def _answer(self, request, behaviour):
        status = behaviour.get("status", 200)
        path = request.path.split("?", 1)[0].rstrip("/")
        routes = {"/v1/chat/completions": ("POST", self._chat),
                  "/v1/completions": ("POST", self._completion),
                  "/v1/embeddings": ("POST", self._embeddings),
                  "/v1/models": ("GET", self._models)}
        route = ("GET", self._model) if path.startswith("/v1/models/") else routes.get(path)
        if route is None:
            return self._send_json(404, _error(f"Unknown path {path}", "invalid_request_error",
                                               "unknown_url"))
        if route[0] != self.command:
            return self._send_json(405, _error(f"Method {self.command} not allowed for {path}",
                                               "invalid_request_error", "method_not_allowed"))
        if self.command == "POST" and not isinstance(request.json, dict):
            return self._send_json(400, _error("The request body is not a JSON object",
                                               "invalid_request_error"))
        route[1](request, behaviour, status)

    def _models(self, request, behaviour, status):
        self._send_json(status, {"object": "list", "data": list(self.upstream.models)})

    def _model(self, request, behaviour, status):
        model_id = request.path.split("?", 1)[0][len("/v1/models/"):]
        for model in self.upstream.models:
            if model["id"] == model_id:
                return self._send_json(status, model)
        self._send_json(404, _error(f"The model '{model_id}' does not exist",
                                    "invalid_request_error", "model_not_found"))

    def _chat(self, request, behaviour, status):
        data = request.json
        messages = data.get("messages") or []
        texts = [_content_text(m.get("content")) for m in messages if isinstance(m, dict)]
        reply = behaviour.get("reply", "echo: " + (texts[-1] if texts else ""))
        if behaviour.get("chunks") is not None and data.get("stream"):
            reply = "".join(behaviour["chunks"])
        usage = {**self._usage(sum(map(_words, texts)), _words(reply)), **behaviour.get("usage", {})}
        model = data.get("model") or DEFAULT_MODEL
        ident = f"chatcmpl-fake{len(self.upstream.requests)}"
        if not data.get("stream"):
            return self._send_json(status, {
                "id": ident, "object": "chat.completion", "created": CREATED, "model": model,
                "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": reply,
                                         "refusal": None}}],
                "usage": usage})
        pieces = behaviour.get("chunks")
        pieces = list(pieces) if pieces is not None else _pieces(reply)
        pieces = pieces or [""]
        with_usage = self._include_usage(data)
        events = []
        for i, piece in enumerate(pieces):
            delta = {"role": "assistant", "content": piece} if i == 0 else {"content": piece}
            events.append({
                "id": ident, "object": "chat.completion.chunk", "created": CREATED,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": "stop" if i == len(pieces) - 1 else None}],
                **({"usage": None} if with_usage else {})})
        if with_usage:
            events.append({"id": ident, "object": "chat.completion.chunk", "created": CREATED,
                           "model": model, "choices": [], "usage": usage})
        self._stream(status, events, behaviour)

    def _completion(self, request, behaviour, status):
        data = request.json
        prompt = data.get("prompt", "")
        if not isinstance(prompt, list):
            prompt = [prompt]
        prompts = [p if isinstance(p, str) else str(p) for p in prompt] or [""]
        replies = [behaviour.get("reply", "echo: " + p) for p in prompts]
        stream = data.get("stream")
        chunks = behaviour.get("chunks")
        if chunks is not None and stream:
            replies = ["".join(chunks)] * len(prompts)
        usage = {**self._usage(sum(map(_words, prompts)), sum(map(_words, replies))), **behaviour.get("usage", {})}
        model = data.get("model") or "gpt-3.5-turbo-instruct"
        ident = f"cmpl-fake{len(self.upstream.requests)}"
        if not stream:
            return self._send_json(status, {
                "id": ident, "object": "text_completion", "created": CREATED, "model": model,
                "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": "stop"}
                            for i, text in enumerate(replies)],
                "usage": usage})
        with_usage = self._include_usage(data)
        events = []
        for index, text in enumerate(replies):
            pieces = (list(chunks) if chunks is not None else _pieces(text)) or [""]
            for i, piece in enumerate(pieces):
                events.append({
                    "id": ident, "object": "text_completion", "created": CREATED, "model": model,
                    "choices": [{"index": index, "text": piece, "logprobs": None,
                                 "finish_reason": "stop" if i == len(pieces) - 1 else None}],
                    **({"usage": None} if with_usage else {})})
        if with_usage:
            events.append({"id": ident, "object": "text_completion", "created": CREATED,
                           "model": model, "choices": [], "usage": usage})
        self._stream(status, events, behaviour)

    def _embeddings(self, request, behaviour, status):
        data = request.json
        inputs = _embedding_inputs(data.get("input"))
        if inputs is None:
            return self._send_json(400, _error("'input' must be a string, an array of strings, of token ids "
                                               "or of arrays of token ids", "invalid_request_error"))
        dimensions = data.get("dimensions", EMBEDDING_DIMENSIONS)
        if type(dimensions) is not int or not 1 <= dimensions <= 4096:
            return self._send_json(400, _error("'dimensions' must be an integer from 1 to 4096",
                                               "invalid_request_error"))
        vectors = [fake_embedding(item, dimensions) for item in inputs]
        if data.get("encoding_format") == "base64":
            vectors = [base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors]
        tokens = sum(len(item) if isinstance(item, list) else _words(item) for item in inputs)
        self._send_json(status, {
            "object": "list", "model": data.get("model") or "text-embedding-3-small",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @staticmethod
    def _usage(prompt_tokens, completion_tokens):
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    @staticmethod
    def _include_usage(data):
        options = data.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    # -- writing -------------------------------------------------------------

    def _send_headers(self, status, headers):
        merged = {k.lower(): (k, v) for k, v in headers.items()}
        merged.update({k.lower(): (k, str(v)) for k, v in self.extra_headers.items()})
        self.send_response(status)
        for name, value in merged.values():
            self.send_header(name, value)
        self.end_headers()

    def _send_json(self, status, payload):
        self._send_body(status, json.dumps(payload).encode(), "application/json")

    def _send_fixed(self, behaviour):
        status = behaviour.get("status", 200)
        body = behaviour.get("body")
        if body is None:
            body = _error(f"Scripted error {status}", STATUS_ERRORS.get(status, "api_error"))
        if isinstance(body, (dict, list)):
            self._send_json(status, body)
        elif isinstance(body, str):
            self._send_body(status, body.encode(), "text/plain; charset=utf-8")
        else:
            self._send_body(status, bytes(body), "application/octet-stream")

    def _send_body(self, status, data, content_type):
        self._send_headers(status, {"Content-Type": content_type,
                                    "Content-Length": str(len(data))})
        if self.drop_after is not None and self.drop_after < len(data):
            self._write(data[:self.drop_after])
            raise _Stop
        self._write(data)

    def _stream(self, status, events, behaviour):
        payloads = [json.dumps(event) for event in events] + ["[DONE]"]
        self._send_sse(status, [f"data: {payload}\n\n".encode() for payload in payloads], behaviour)

    def _send_sse(self, status, encoded, behaviour, content_type="text/event-stream"):
        """Send server-sent events (already encoded) with the scripted framing and
        timing: gates, delay, drop_after, and a client that goes away."""
        chunked = behaviour.get("framing", "chunked") == "chunked"
        headers = {"Content-Type": content_type, "Cache-Control": "no-cache"}
        if chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Connection"] = "close"   # send_header also sets close_connection
        self._send_headers(status, headers)
        line_end = behaviour.get("line_end")
        if line_end:
            encoded = [data.replace(b"\n", line_end.encode()) for data in encoded]
            if line_end == "\r\n":
                encoded = [(b"\n" if i else b"") + data[:-1] for i, data in enumerate(encoded)] + [b"\n"]
        for i, data in enumerate(encoded):
            if self.drop_after is not None and i >= self.drop_after:
                raise _Stop
            if i >= 1:
                if i - 1 < len(self.gates):
                    self._hold(self.gates[i - 1])
                if self.delay:
                    self._hold(None, self.delay)
            self._check_client()
            self._write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            self.recorded.sent.append(time.monotonic())
        if self.drop_after is not None and self.drop_after >= len(encoded):
            raise _Stop   # everything sent, but no proper end of body
        if chunked:
            self._write(b"0\r\n\r\n")

    def _write(self, data):
        self.wfile.write(data)
        self.wfile.flush()

    def _check_client(self):
        """Detect a client that closed its connection before we write to it: a
        first write into a closed socket usually succeeds (the kernel buffers
        it), so write errors alone would notice one chunk late."""
        self._hold(None, 0)

    def _hold(self, event, timeout=None):
        """Wait for `event` (None: just for `timeout`) while watching the
        client socket.  Raises _Stop if the upstream is stopping, and counts a
        disconnect (then raises _Stop) if the client goes away meanwhile."""
        if event is not None and event.is_set():
            self._stop_if_stopping()
            return
        waker = wake_r = None
        selector = selectors.DefaultSelector()
        try:
            selector.register(self.connection, selectors.EVENT_READ)
            if event is not None:
                # A threading.Event cannot be select()ed on: a helper thread
                # turns its set() into a byte on a socketpair.  It ends when
                # the event is set, which stop() guarantees.
                wake_r, wake_w = socket.socketpair()
                selector.register(wake_r, selectors.EVENT_READ)
                waker = threading.Thread(target=_relay, args=(event, wake_w), daemon=True)
                waker.start()
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                remaining = None if deadline is None else max(0, deadline - time.monotonic())
                ready = selector.select(remaining)
                if not ready and deadline is not None and time.monotonic() >= deadline:
                    break
                if any(key.fileobj is wake_r for key, _ in ready):
                    break
                if ready and self._peer_closed():
                    self.upstream._client_gone()
                    raise _Stop
                if ready:  # the client sent more data (pipelining): stop watching it
                    selector.unregister(self.connection)
        finally:
            selector.close()
            if wake_r is not None:
                wake_r.close()
        self._stop_if_stopping()

    def _peer_closed(self):
        try:
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def _stop_if_stopping(self):
        if self.upstream._stopping:
            raise _Stop


def _relay(event, wake_w):
    event.wait()
    try:
        wake_w.send(b"x")
    except OSError:
        pass
    finally:
        wake_w.close()
