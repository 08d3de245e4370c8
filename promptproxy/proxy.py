"""The proxy: OpenAI- and Anthropic-compatible endpoints in front of any
OpenAI-compatible or Anthropic api.

Every call walks the same path, and this file reads top to bottom along it:

    authenticate -> resolve -> allow -> limit -> rewrite -> forward -> stream -> record
                                                  (retry, fall back)

The client sends `model: "<model>:<prompt>"`; we find both records, put the
stored system prompt in front, send the call to the model's upstream api with
the api's own key, relay the answer as it arrives, and write one request row.
A model name may stand for a group of models, and a model may have fallbacks:
until the client has received a byte, a try that failed retryably is followed by
the next (see promptproxy/routing.py for the order); the row names the model
that answered and lists every try.
How each client format is spoken to through each kind of upstream (rewrite,
forward, the stream's events) is the providers' (promptproxy/providers/).
Lookups come from an in-memory catalog (refreshed when it misses, so what an admin
just created works on the next call) and rows are written in batches off the
request path. Each call has one owner of its end, `Call.end`: whatever happens on
the way, it writes one row and releases the call's rate-limit slot, once.
"""

import json
import logging
import time

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

from . import providers, routing
from .accounting.calls import Call
from .accounting.end_users import end_user
from .accounting.limits import Limited, LimitsUnavailable, OverBudget
from .data.catalog import rehash_key
from .data.fields import utcnow
from .errors import ProxyError, database_unavailable, shown
from .prompting import referenced_prompt, serve
from .providers.anthropic.messages import rewrite_messages
from .providers.base import Refused
from .providers.embeddings import rewrite_embeddings
from .providers.openai import rewrite_chat, rewrite_completion
from .relay import Streamed, sent
from .services import services

log = logging.getLogger(__name__)

proxy = Blueprint("proxy", __name__, url_prefix="/v1")

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
    """(models, prompt) for `<model>` or `<model>:<prompt>`: the models that may
    serve the call (a group, when the name is shared) and the prompt or None.

    Each part is a record id or a public name. Names may contain colons
    (`llama3:8b`), so the whole string is tried as a model first; only then is
    it split at its last colon into model and prompt. The prompt may pin a version
    (`<prompt>@3`, `<prompt>@staging`): see prompting.referenced_prompt.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ProxyError(400, "'model' must be a model id or name, optionally followed by ':<prompt>'.",
                         param="model", code="invalid_model")
    group = usable_models(snap, ref)
    if group:
        return group, None
    model_ref, colon, prompt_ref = ref.rpartition(":")
    if not colon:
        raise ProxyError(404, f"The model '{shown(ref)}' does not exist or is not available.",
                         param="model", code="model_not_found")
    if not model_ref or not prompt_ref:
        raise ProxyError(400, f"Malformed model reference '{shown(ref)}': use '<model>' or "
                         "'<model>:<prompt>'.", param="model", code="invalid_model")
    group = usable_models(snap, model_ref)
    if not group:
        raise ProxyError(404, f"The model '{shown(model_ref)}' does not exist or is not available.",
                         param="model", code="model_not_found")
    return group, referenced_prompt(snap, prompt_ref)


def usable_models(snap, ref):
    """The usable models `ref` names: the one with that id, else the group with that name."""
    model = snap.models.get(ref)
    if model is None or not model.active:
        return []
    if model.id != ref:
        return snap.groups.get(ref, [])
    api = snap.apis.get(model.api)
    return [model] if api is not None and api.active else []


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
    """Admit the call within its user's (or key's) rate limits and budget, or refuse
    it with 429."""
    try:
        call.ticket = call.limiter.acquire(call.key, call.user)
    except Limited as over:
        call.metrics.limited(over.kind)
        raise ProxyError(429, str(over), type_="requests" if over.kind != "tpm" else "tokens",
                         code="rate_limit_exceeded",
                         headers={**over.headers, "Retry-After": str(over.retry_after)}) from None
    except OverBudget as over:  # as OpenAI names running out of credit
        call.metrics.limited("budget")
        retry = {"Retry-After": str(over.retry_after)} if over.retry_after else {}
        raise ProxyError(429, over.message(services().settings["CURRENCY"]), type_="insufficient_quota",
                         code="budget_exceeded", headers={**over.headers, **retry}) from None
    except LimitsUnavailable as down:
        raise database_unavailable(down) from None


# -- 5. rewrite, 6. forward: the providers' (see `proxied`) ------------------------

# -- 7. stream (or answer at once): relay.py's -------------------------------------

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
        response = refused.response(call.headers, client)
    except Exception:
        log.exception("unexpected error on %s", request.path)
        unexpected = ProxyError(500, "PromptProxy failed on this call; see the server's log.",
                                type_="api_error", code="internal_error")
        call.fail(unexpected.status, unexpected.message)
        response = unexpected.response(call.headers, client)
    call.end()
    return response


def proxied(call, snap, rewrite, client):
    """The path of an authenticated call, up to the response that answers it."""
    if not call.user.active:
        raise ProxyError(403, "This user is disabled.", code="user_disabled")
    body = json_body()
    call.end_user = end_user(body, request.environ)
    call.request_body = body if call.track else None
    call.model_ref = body.get("model")
    (group, call.prompt), snap = looked_up(lambda s: resolve(s, call.model_ref), snap)
    plan = routing.candidates(snap, group, lambda model: allowed(call.key, call.user, model, call.prompt))
    if not plan:
        allow(call.key, call.user, group[0], call.prompt)  # raises why the caller may use none of them
    call.model, call.api = plan[0], snap.apis[plan[0].api]
    routes = routes_for(client, call.endpoint, snap, plan)
    call.stream = stream_flag(body)
    try:
        served, forwarded = serve(call, body)  # the prompt's version, its variables filled in
    except Refused as exc:
        raise ProxyError(400, str(exc), param=exc.param) from None
    limit(call)
    call.system_prompt = served.instructions if served else None
    if len(plan) > 1:  # a choice to make: skip the apis cooling down
        plan = routing.without_cooling(plan, services().upstreams.cooling(model.api for model in plan))
    return tried(call, snap, plan, routes, lambda model: rewrite(dict(forwarded), model, served))


def routes_for(client, endpoint, snap, plan):
    """{model id: route} for the candidates able to serve this client's call; when
    none is (a pairing no provider has), the first one's refusal is a 400."""
    routes, refusal = {}, None
    for model in plan:
        try:
            routes[model.id] = providers.route(client, endpoint, snap.apis[model.api].protocol)
        except Refused as exc:
            refusal = refusal or exc
    if not routes:
        raise ProxyError(400, str(refusal), param=refusal.param)
    return routes


def tried(call, snap, plan, routes, rewritten):
    """Try the candidates in order, each up to 1 + its api's `retries` times, until
    one answers; the first success, or else the last failure, is the response."""
    upstreams = services().upstreams
    failure = refusal = None
    for model in plan:
        route = routes.get(model.id)
        if route is None:
            continue
        call.model, call.api = model, snap.apis[model.api]
        try:  # what a provider refuses (a body it cannot send) is a 400
            upstream_body, hide_usage = route.prepare(rewritten(model))
        except Refused as exc:
            refusal = refusal or exc
            continue
        if route.path is None:  # the route answers itself; nothing goes upstream
            response = jsonify(route.local_answer(call, upstream_body))
            response.headers.update(call.headers)
            return response
        if not holds_slot(call):
            continue
        encoded = json.dumps(upstream_body).encode()
        for retry in range(1 + (call.api.retries or 0)):
            if len(call.attempts) >= routing.MAX_ATTEMPTS:
                break
            outcome = sent(call, route, encoded, hide_usage)
            if isinstance(outcome, Response):
                return outcome
            failure = outcome
            told = routing.retry_after(failure.retry_after)
            cooling = upstreams.failed(call.api, failure.text,
                                       told if failure.status == 429 else None)
            if cooling or retry == (call.api.retries or 0) or (told or 0) > routing.LONGEST_WAIT:
                break  # on to the next candidate
            time.sleep(routing.backoff(retry, told))
        call.release_upstream()
    if failure is not None:
        return failure.response(call)
    if refusal is not None:
        raise ProxyError(400, str(refusal), param=refusal.param)
    raise ProxyError(429, f"Every upstream able to serve '{shown(str(call.model_ref))}' is at its concurrency "
                     "cap. Try again in 1 s.", type_="requests", code="upstream_concurrency",
                     headers={"Retry-After": "1"})


def holds_slot(call):
    """Take a slot under the api's concurrency cap, when it has one; False when it is
    full (the call then goes to the next candidate)."""
    if not call.api.concurrency:
        return True
    try:
        call.upstream_ticket = call.limiter.hold(f"api:{call.api.id}", call.api.concurrency)
    except LimitsUnavailable as down:
        raise database_unavailable(down) from None
    if call.upstream_ticket is None:
        call.attempts.append({"model": call.model.id, "api": call.api.id, "status": None,
                              "error": "at its concurrency cap", "ms": 0})
        return False
    return True


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


@proxy.post("/embeddings")
def embeddings():
    return handle("embeddings", rewrite_embeddings)


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
    """Every model and model:prompt pairing the caller may use, in OpenAI's model
    shape; a group (models sharing a name) is listed once, by its name."""
    listed = {}  # public name or id -> a model the caller may use by it
    for model in snap.model_list:
        ref = model.name or model.id
        if ref not in listed and allowed(key, user, model, None):
            listed[ref] = model
    objects = [model_object(ref, model.created, snap.apis[model.api].name) for ref, model in listed.items()]
    pairs = set()
    for model in snap.model_list:
        ref = model.name or model.id
        for prompt in snap.prompt_list:
            pair = f"{ref}:{prompt.name or prompt.id}"
            if pair not in pairs and allowed(key, user, model, prompt):
                pairs.add(pair)
                objects.append(model_object(pair, max(model.created, prompt.created), snap.apis[model.api].name))
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
        (group, prompt), snap = looked_up(lambda s: resolve(s, ref), snap)
        usable = [model for model in group if allowed(key, user, model, prompt)]
        if not usable:
            allow(key, user, group[0], prompt)  # raises why
    except ProxyError as refused:
        return refused.response()
    model = usable[0]
    created = max(model.created, prompt.created) if prompt else model.created
    return jsonify(model_object(ref, created, snap.apis[model.api].name))
