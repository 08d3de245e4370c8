"""The proxy: OpenAI- and Anthropic-compatible endpoints in front of any
OpenAI-compatible or Anthropic api.

Every call walks the same path, and this file reads top to bottom along it:

    authenticate -> resolve -> allow -> limit -> rewrite -> forward -> stream -> record

The client sends `model: "<model>:<prompt>"`; we find both records, put the
stored system prompt in front, send the call to the model's upstream api with
the api's own key, relay the answer as it arrives, and write one request row.
How each client format is spoken to through each kind of upstream (rewrite,
forward, the stream's events) is the providers' (promptproxy/providers/).
Lookups come from an in-memory catalog (refreshed when it misses, so what an admin
just created works on the next call) and rows are written in batches off the
request path. Each call has one owner of its end, `Call.end`: whatever happens on
the way, it writes one row and releases the call's rate-limit slot, once.
"""

import json
import logging

from flask import Blueprint, Response, current_app, jsonify, request
from urllib3.exceptions import HTTPError
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

from . import providers
from .accounting.calls import Call
from .accounting.limits import Limited, LimitsUnavailable
from .data.catalog import rehash_key
from .data.fields import utcnow
from .errors import ProxyError, database_unavailable, shown
from .prompting import referenced_prompt, serve
from .providers import sse
from .providers.anthropic.messages import rewrite_messages
from .providers.base import Refused, error_text, parsed_json
from .providers.openai import rewrite_chat, rewrite_completion
from .providers.upstream import PASSED_BACK, forward, upstream_failure
from .services import services

log = logging.getLogger(__name__)

proxy = Blueprint("proxy", __name__, url_prefix="/v1")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
REQUEST_ID = "x-promptproxy-request-id"  # on every answer to a call: the id of its request row


def catalog():
    return services().catalog


def looked_up(find, snap):
    """`find(snap)`, or on a miss (an unknown key, model or prompt), `find` again on
    a freshly checked snapshot: what an admin or script just created works on the
    very next call, on any worker. Returns (result, the snapshot used)."""
    try:
        return find(snap), snap
    except ProxyError as missed:
        if missed.status not in (401, 404):
            raise
        fresh = catalog().fresh()
        if fresh is snap:
            raise
    return find(fresh), fresh


# -- 1. authenticate ----------------------------------------------------------

def authenticate(snap):
    """The caller's key and user, from `Authorization: Bearer <key>`. An unknown
    key is refused here; a disabled user later, so the refusal is accounted."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "").strip()
    if not token:
        raise ProxyError(401, "Missing API key: send it as 'Authorization: Bearer <key>'.",
                         code="missing_api_key")
    key = snap.find_key(token)
    if key is None or not key.active:
        raise ProxyError(401, "Invalid API key.", code="invalid_api_key")
    if key.key_legacy:
        rehash_key(key, token)
    if key.expires is not None and key.expires <= utcnow():
        raise ProxyError(401, "This API key has expired.", code="expired_api_key")
    user = snap.users.get(key.user)
    if user is None:
        raise ProxyError(401, "Invalid API key.", code="invalid_api_key")
    return key, user


# -- 2. resolve -----------------------------------------------------------------

def resolve(snap, ref):
    """(model, api, prompt) for `<model>` or `<model>:<prompt>`.

    Each part is a record id or a public name. Names may contain colons
    (`llama3:8b`), so the whole string is tried as a model first; only then is
    it split at its last colon into model and prompt. The prompt may pin a version
    (`<prompt>@3`, `<prompt>@staging`): see prompting.referenced_prompt.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ProxyError(400, "'model' must be a model id or name, optionally followed by ':<prompt>'.",
                         param="model", code="invalid_model")
    model = usable_model(snap, ref)
    if model is not None:
        return model, snap.apis[model.api], None
    model_ref, colon, prompt_ref = ref.rpartition(":")
    if not colon:
        raise ProxyError(404, f"The model '{shown(ref)}' does not exist or is not available.",
                         param="model", code="model_not_found")
    if not model_ref or not prompt_ref:
        raise ProxyError(400, f"Malformed model reference '{shown(ref)}': use '<model>' or "
                         "'<model>:<prompt>'.", param="model", code="invalid_model")
    model = usable_model(snap, model_ref)
    if model is None:
        raise ProxyError(404, f"The model '{shown(model_ref)}' does not exist or is not available.",
                         param="model", code="model_not_found")
    return model, snap.apis[model.api], referenced_prompt(snap, prompt_ref)


def usable_model(snap, ref):
    model = snap.models.get(ref)
    if model is None or not model.active:
        return None
    api = snap.apis.get(model.api)
    return model if api is not None and api.active else None


# -- 3. allow ---------------------------------------------------------------------

def allow(key, user, model, prompt):
    """Per-user access rules, narrowed further by the key's own: an empty list
    allows everything, so a fresh install works without setting any."""
    for holder, who in ((user, "user"), (key, "key")):
        if (holder.apis and model.api not in holder.apis) or (holder.models and model.id not in holder.models):
            raise ProxyError(403, f"The model '{model.name or model.id}' is not allowed for this {who}.",
                             param="model", code="model_not_allowed")
        if prompt is not None and holder.prompts and prompt.id not in holder.prompts:
            raise ProxyError(403, f"The prompt '{prompt.name or prompt.id}' is not allowed for this {who}.",
                             param="model", code="prompt_not_allowed")
    if prompt is None and user.require_prompt:
        raise ProxyError(403, "This user must call through a stored prompt: use '<model>:<prompt>'.",
                         param="model", code="prompt_required")


def allowed(key, user, model, prompt):
    try:
        allow(key, user, model, prompt)
    except ProxyError:
        return False
    return True


# -- 4. limit -------------------------------------------------------------------------

def limit(call):
    """Admit the call within its user's (or key's) rate limits, or refuse it with 429."""
    try:
        call.ticket = call.limiter.acquire(call.key, call.user)
    except Limited as over:
        call.metrics.limited(over.kind)
        raise ProxyError(429, str(over), type_="requests" if over.kind != "tpm" else "tokens",
                         code="rate_limit_exceeded",
                         headers={**over.headers, "Retry-After": str(over.retry_after)}) from None
    except LimitsUnavailable as down:
        raise database_unavailable(down) from None


def limit_headers(call):
    """The headers of every answer to a call: its request row's id, and its rate
    limits once it was admitted."""
    return {**(call.ticket.headers if call.ticket else {}), REQUEST_ID: call.id}


# -- 5. rewrite, 6. forward: the providers' (see `proxied`) ------------------------

# -- 7. stream (or answer at once) --------------------------------------------------

def answer(call, upstream, route):
    """A whole (non-streamed) answer, in the client's format. An upstream error keeps
    its status, and its very body when the client speaks the upstream's language."""
    try:
        data = upstream.read()
    except HTTPError as exc:
        raise upstream_failure(call.api, exc) from None
    finally:
        upstream.release_conn()
    call.first_byte()
    call.status = upstream.status
    parsed = parsed_json(data)
    headers = {name: upstream.headers[name] for name in PASSED_BACK if name in upstream.headers}
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
    if call.track:
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

    def __init__(self, call, upstream, events):
        self.call, self.upstream = call, upstream
        self.chunks = relay(call, upstream, events)
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


def relay(call, upstream, events):
    """Server-sent events from the upstream to the client, as each one arrives.

    Reads with read1, which returns whatever the socket has, so neither chunked nor
    close-delimited upstreams are held back. `events` decides what each upstream
    event becomes for the client (passed on, translated, dropped) and how the
    stream ends; see OpenAIEvents. Whatever goes wrong on the way ends the stream
    with an error event in the client's format.
    """
    parser = sse.Parser(comments=True)  # keep-alive comments are passed on too
    try:
        while True:
            try:
                piece = upstream.read1(65536)
            except HTTPError as exc:
                failure = upstream_failure(call.api, exc)
                call.fail(failure.status, failure.message, failure.upstream_error)
                yield events.failed(failure.message, failure.code)
                return
            if not piece:
                break
            call.first_byte()
            out = [events.event(event) for event in parser.feed(piece)]
            if out:
                yield b"".join(out)
        for event in parser.end():
            yield events.event(event)
        yield events.ended()
    except Exception:
        log.exception("relaying a stream from '%s' failed", call.api.name)
        call.fail(500, "PromptProxy failed while relaying the stream; see the server's log.")
        yield events.failed(call.error, "internal_error")


# -- the endpoints, each the whole path in order -----------------------------------

def handle(endpoint, rewrite, client="openai"):
    try:
        (key, user), snap = looked_up(authenticate, catalog().current())
    except ProxyError as refused:
        return refused.response(client=client)  # no user to account it to: no row
    parts = services()
    call = Call(endpoint, key, user, limiter=parts.limiter, recorder=parts.recorder, metrics=parts.metrics)
    try:
        response = proxied(call, snap, rewrite, client)
        if isinstance(response.response, Streamed):
            return response  # its body ends the call when the server closes it
    except ProxyError as refused:
        call.fail(refused.status, refused.message, refused.upstream_error)
        response = refused.response(limit_headers(call), client)
    except Exception:
        log.exception("unexpected error on %s", request.path)
        unexpected = ProxyError(500, "PromptProxy failed on this call; see the server's log.",
                                type_="api_error", code="internal_error")
        call.fail(unexpected.status, unexpected.message)
        response = unexpected.response(limit_headers(call), client)
    call.end()
    return response


def proxied(call, snap, rewrite, client):
    """The path of an authenticated call, up to the response that answers it."""
    if not call.user.active:
        raise ProxyError(403, "This user is disabled.", code="user_disabled")
    body = json_body()
    call.request_body = body if call.track else None
    call.model_ref = body.get("model")
    (call.model, call.api, call.prompt), snap = looked_up(lambda s: resolve(s, call.model_ref), snap)
    allow(call.key, call.user, call.model, call.prompt)
    try:  # what a provider refuses (a pairing it lacks, a body it cannot send) is a 400
        route = providers.route(client, call.endpoint, call.api.protocol)
        call.stream = stream_flag(body)
        served, forwarded = serve(call, body)  # the prompt's version, its variables filled in
        limit(call)
        call.system_prompt = served.instructions if served else None
        upstream_body, hide_usage = route.prepare(rewrite(forwarded, call.model, served))
    except Refused as exc:
        raise ProxyError(400, str(exc), param=exc.param) from None
    if route.path is None:  # the route answers itself; nothing goes upstream
        response = jsonify(route.local_answer(call, upstream_body))
        response.headers.update(limit_headers(call))
        return response
    upstream = forward(services().pools, call.api, route.path, json.dumps(upstream_body).encode(), call.stream,
                       request.environ)
    is_sse = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
    if call.stream and upstream.status < 400 and is_sse:
        return Response(Streamed(call, upstream, route.events(call, hide_usage)),
                        status=upstream.status, headers={**SSE_HEADERS, **limit_headers(call)},
                        content_type="text/event-stream; charset=utf-8")
    response = answer(call, upstream, route)
    response.headers.update(limit_headers(call))
    return response


def stream_flag(body):
    stream = body.get("stream")
    if stream is None:
        return False
    if not isinstance(stream, bool):
        raise ProxyError(400, "'stream' must be true or false.", param="stream")
    return stream


def json_body():
    """The request's JSON object. Bodies over the limit are refused whether or not
    they say their length (a chunked upload is counted as it is read)."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    too_large = ProxyError(413, f"The request body is larger than the limit of {limit} bytes.")
    try:
        raw = request.get_data(cache=False)
        stream = request.stream
        if isinstance(stream, LimitedStream) and stream.is_exhausted and request.content_length is None \
                and request.environ["wsgi.input"].read(1):
            raise too_large
    except RequestEntityTooLarge:
        raise too_large from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ProxyError(400, "The request body is not valid JSON (or is nested too deeply).") from None
    if not isinstance(body, dict):
        raise ProxyError(400, "The request body must be a JSON object.")
    return body


@proxy.post("/chat/completions")
@proxy.post("/chat/completion")
def chat_completions():
    return handle("chat/completions", rewrite_chat)


@proxy.post("/completions")
@proxy.post("/completion")
def completions():
    return handle("completions", rewrite_completion)


@proxy.post("/messages")
def messages():
    """Anthropic's Messages API, for the Anthropic SDK and Claude Code."""
    return handle("messages", rewrite_messages, client="anthropic")


@proxy.post("/messages/count_tokens")
def count_tokens():
    """Anthropic's token counting: asked of an Anthropic api, estimated locally for
    a model behind an OpenAI-compatible one."""
    return handle("messages/count_tokens", rewrite_messages, client="anthropic")


def model_object(model_id, created, owner):
    return {"id": model_id, "object": "model", "created": int(created.timestamp()), "owned_by": owner}


def model_objects(snap, key, user):
    """Every model and model:prompt pairing the caller may use, in OpenAI's model shape."""
    objects = []
    for model in snap.model_list:
        if allowed(key, user, model, None):
            owner = snap.apis[model.api].name
            objects.append(model_object(model.name or model.id, model.created, owner))
    for model in snap.model_list:
        owner = snap.apis[model.api].name
        for prompt in snap.prompt_list:
            if allowed(key, user, model, prompt):
                objects.append(model_object(f"{model.name or model.id}:{prompt.name or prompt.id}",
                                            max(model.created, prompt.created), owner))
    return objects


def active_caller(snap):
    key, user = authenticate(snap)
    if not user.active:
        raise ProxyError(403, "This user is disabled.", code="user_disabled")
    return key, user


@proxy.get("/models")
def list_models():
    snap = catalog().fresh()  # a listing shows what was just created
    try:
        key, user = active_caller(snap)
    except ProxyError as refused:
        return refused.response()
    return jsonify(object="list", data=model_objects(snap, key, user))


@proxy.get("/models/<path:ref>")
def get_model(ref):
    try:
        (key, user), snap = looked_up(active_caller, catalog().current())
        (model, api, prompt), snap = looked_up(lambda s: resolve(s, ref), snap)
        allow(key, user, model, prompt)
    except ProxyError as refused:
        return refused.response()
    created = max(model.created, prompt.created) if prompt else model.created
    return jsonify(model_object(ref, created, api.name))
