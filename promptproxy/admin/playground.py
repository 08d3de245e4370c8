"""The playground (a chat that goes through the real proxy) and "Test connection"
for an upstream api (its model list, to add as models in a few clicks).

The playground calls POST /v1/chat/completions from the browser with a gateway key
of its own user, "Playground", so every call is authenticated, limited and logged
exactly like a client's. Each admin gets one key, labelled "Playground: <email>",
made on first use and reused by every login: the keys table holds its digest, the
admin's record holds it encrypted, and only the page ever shows it in clear.
"""

import json
import time

import certifi
import urllib3
from flask import abort, current_app, flash, redirect, request, url_for
from flask_admin import BaseView, expose
from flask_login import current_user
from peewee import fn
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    LocationValueError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from ..auth import superusers
from ..collections import BY_NAME
from ..data import crypto, records
from ..providers.base import error_message
from ..providers.upstream import upstream_base, upstream_headers
from ..services import services
from . import prices
from .forms import UNREADABLE, decimal_text, mask
from .views import LoginRequired

PLAYGROUND_USER = "Playground"
KEY_PLACEHOLDER = "$PROMPTPROXY_KEY"


def public_base_url():
    """Where clients reach the proxy: PUBLIC_URL, or the address this page came from."""
    base = services().settings.get("PUBLIC_URL") or request.host_url
    return base.rstrip("/") + "/v1"


# -- the playground's gateway key ------------------------------------------------------

def key_label(admin):
    return f"Playground: {admin.email}"


def playground_user():
    """The user every playground call is made as, created on first use."""
    users = BY_NAME["users"]
    row = (users.model.select().where(users.model.name == PLAYGROUND_USER)
           .order_by(users.model.created).first())
    if row is None:
        row, _ = records.save(users, {"name": PLAYGROUND_USER,
                                      "notes": "Calls made from the admin's playground."})
    return row


def kept_key(admin, user):
    """(row, full key) of the admin's kept playground key, if it still works as theirs.

    The database keeps only the key's digest, like any key's; the admin's record keeps
    the key itself encrypted with the server's encryption key (like an api's key), so
    the page can hand it to the browser again after the next login."""
    try:
        key = crypto.decrypt_stored(admin.playground_key) if admin.playground_key else ""
    except crypto.CannotDecrypt:  # the encryption key changed since: make a new one
        key = ""
    if not key:
        return None, None
    keys = BY_NAME["keys"].model
    row = keys.get_or_none(keys.key == crypto.digest(key))
    if row is None or not row.active or row.user != user.id:
        return None, None
    return row, key


def new_playground_key(admin, user):
    """A fresh key for this admin, kept encrypted on their record; their earlier
    playground keys stop working."""
    keys = BY_NAME["keys"]
    row, revealed = records.save(keys, {"user": user.id, "label": key_label(admin)})
    model = keys.model
    earlier = model.select().where(model.user == user.id, fn.LOWER(model.label) == key_label(admin).lower(),
                                   model.active == True, model.id != row.id)  # noqa: E712 (SQL)
    for old in earlier:
        records.save(keys, {"active": False}, row=old)
    superusers.keep_playground_key(admin, crypto.encrypt(revealed["key"]))
    return row, revealed["key"]


def playground_key(admin):
    """(user, key row, full key) of this admin's playground: one key, made on first
    use and reused by every later login, until it is deactivated or deleted."""
    user = playground_user()
    row, key = kept_key(admin, user)
    if key is None:
        row, key = new_playground_key(admin, user)
    return user, row, key


# -- references and snippets --------------------------------------------------------------

def prompt_title(prompt):
    """A prompt's name, or else the start of its description or instructions."""
    if prompt.name:
        return prompt.name
    text = " ".join((prompt.description or prompt.instructions or "").split())
    return (text[:40] + "…" if len(text) > 40 else text) or prompt.id


def choices():
    """Active models (on active apis) and active prompts, as the proxy sees them: the
    reference the proxy accepts (the name, else the id) and what people read."""
    snap = services().catalog.current()
    models = [{"ref": m.name or m.id, "title": m.name or f"{m.model} ({snap.apis[m.api].name})",
               "model": m.model, "api": snap.apis[m.api].name}
              for m in snap.model_list]
    prompts = [{"ref": p.name or p.id, "title": prompt_title(p), **versions_of(p)} for p in snap.prompt_list]
    return models, prompts


def versions_of(prompt):
    """What the playground offers to pin (`prompt@3`, `prompt@staging`) and to fill
    (`prompt_variables`) for one prompt of the catalog's snapshot."""
    return {"versions": sorted(prompt.versions, reverse=True),
            "labels": {label: version.version for label, version in sorted(prompt.labels.items())},
            "variables": prompt.variables or {}}


def pinned(prompt, version):
    """`version` (a number or a label, as text) when the prompt has it, else ""."""
    if not prompt or not version:
        return ""
    return version if version in prompt["labels"] or version in map(str, prompt["versions"]) else ""


def quoted(ref):
    """The reference as each snippet writes it (the page's script does the same)."""
    as_json = json.dumps(ref, ensure_ascii=False)
    return {"raw": ref, "json": as_json, "sh": as_json.replace("'", "'\\''")}


class PlaygroundView(LoginRequired, BaseView):
    @expose("/")
    def index(self):
        user, key_row, key = playground_key(current_user)
        models, prompts = choices()
        model_refs = [m["ref"] for m in models]
        prompt_refs = [p["ref"] for p in prompts]
        model = request.args.get("model")
        model = model if model in model_refs else (model_refs[0] if model_refs else "")
        prompt = request.args.get("prompt")
        prompt = prompt if prompt in prompt_refs else ""
        version = pinned(next((p for p in prompts if p["ref"] == prompt), None), request.args.get("version"))
        ref = (f"{model}:{prompt}" + (f"@{version}" if version else "")) if model and prompt else model
        page = {"key": key, "endpoint": request.script_root + "/v1/chat/completions", "version": version,
                "prompts": {p["ref"]: p for p in prompts}}
        response = current_app.make_response(self.render(
            "promptproxy/playground.html", models=models, prompts=prompts, model=model, prompt=prompt,
            ref=quoted(ref), base_url=public_base_url(), placeholder=KEY_PLACEHOLDER,
            page=page, user=user, key_row=key_row,
            apis=BY_NAME["apis"].model.select().order_by(BY_NAME["apis"].model.name)))
        response.headers["Cache-Control"] = "no-store"  # the page holds a live key
        return response


# -- test connection ------------------------------------------------------------------------

_http = urllib3.PoolManager(ca_certs=certifi.where(), retries=False)


class ConnectionFailed(Exception):
    """A readable reason why the upstream's model list could not be read."""


def models_url(api):
    """Where the api lists its models: beside the endpoints the proxy calls."""
    return upstream_base(api.protocol, api.base_url) + "/models"


def list_upstream_models(api):
    """The model ids the upstream offers: GET <base_url>/models with the api's key."""
    try:
        secret = crypto.decrypt_stored(api.api_key) if api.api_key else ""
    except crypto.CannotDecrypt:
        raise ConnectionFailed(f"The stored API key {UNREADABLE}.") from None
    headers = upstream_headers(api, secret, urllib3.HTTPHeaderDict({"Accept": "application/json"}))
    url = models_url(api)
    seconds = api.timeout or 60
    try:
        response = _http.request("GET", url, headers=headers, redirect=False, retries=False,
                                 timeout=urllib3.Timeout(connect=seconds, read=seconds))
    except NewConnectionError:
        raise ConnectionFailed(f"Could not reach {url}: nothing answered there "
                               "(is the server running, and is the base URL right?).") from None
    except ConnectTimeoutError:
        raise ConnectionFailed(f"Could not connect to {url} within {seconds} s.") from None
    except ReadTimeoutError:
        raise ConnectionFailed(f"{url} did not answer within {seconds} s (the api's timeout).") from None
    except SSLError as exc:
        raise ConnectionFailed(f"The TLS connection to {url} failed: {scrub(str(exc), secret)}") from None
    except LocationValueError:
        raise ConnectionFailed(f"The base URL {api.base_url} is not a valid URL.") from None
    except ProtocolError:
        raise ConnectionFailed(f"{url} closed the connection without a proper answer.") from None
    except HTTPError as exc:
        raise ConnectionFailed(f"Could not read {url} ({type(exc).__name__}).") from None
    try:
        data = json.loads(response.data)
    except ValueError:
        data = None
    message = error_message(data)
    if response.status in (401, 403):
        raise ConnectionFailed(
            f"The upstream refused the API key (HTTP {response.status})"
            + (f": {scrub(message, secret)}" if message else ".")
            + ("" if secret else " No API key is set for this api."))
    if response.status == 404:
        raise ConnectionFailed(f"{url} does not exist (HTTP 404). The base URL usually ends with /v1.")
    if response.status >= 300:
        raise ConnectionFailed(f"The upstream answered HTTP {response.status}"
                               + (f": {scrub(message, secret)}" if message else "."))
    if data is None:
        kind = response.headers.get("Content-Type") or "no content type"
        raise ConnectionFailed(f"{url} answered with something that is not JSON ({kind}).")
    items = data.get("data") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConnectionFailed(f"{url} answered JSON, but not a list of models.")
    found = {}
    for item in items:
        about = ""
        if isinstance(item, dict):
            model_id, about = item.get("id"), item.get("display_name") or item.get("owned_by") or ""
        else:
            model_id = item
        if isinstance(model_id, str) and model_id.strip():
            found[model_id] = str(about)
    return sorted(found.items(), key=lambda pair: pair[0].lower())


def price_text(values):
    """Prices as the connection page shows them: input / cached input / output."""
    return " / ".join("—" if value is None else decimal_text(value) for value in values)


def scrub(text, secret):
    """Never echo the api's key, whatever the upstream put in its message."""
    text = text[:500]
    return text.replace(secret, mask(secret)) if secret else text


class ConnectionView(LoginRequired, BaseView):
    def is_visible(self):
        return False

    def _api(self, api_id):
        apis = BY_NAME["apis"].model
        api = apis.get_or_none(apis.id == api_id)
        if api is None:
            abort(404)
        return api

    def _existing(self, api):
        models = BY_NAME["models"].model
        return {row.model: row for row in models.select().where(models.api == api.id)}

    @expose("/")
    def index(self):
        return redirect(url_for("apis.index_view"))  # pick an api there

    @expose("/<api_id>")
    def check(self, api_id):
        api = self._api(api_id)
        started = time.perf_counter()
        try:
            upstream, error = list_upstream_models(api), None
        except ConnectionFailed as failed:
            upstream, error = [], str(failed)
        elapsed = round((time.perf_counter() - started) * 1000)
        currency = services().settings["CURRENCY"]
        suggestions = {model_id: known for model_id, _ in upstream
                       if (known := prices.suggested(model_id, currency)) is not None}
        return self.render("promptproxy/connection.html", api=api, upstream=upstream, error=error,
                           existing=self._existing(api), elapsed=elapsed, url=models_url(api),
                           suggestions=suggestions, currency=currency, priced=prices.priced,
                           price_text=price_text, known_currency=prices.CURRENCY)

    @expose("/<api_id>", methods=("POST",))
    def add_models(self, api_id):
        api = self._api(api_id)
        existing = self._existing(api)
        models = BY_NAME["models"]
        wanted = list(dict.fromkeys(m.strip() for m in request.form.getlist("model") if m.strip()))
        currency = services().settings["CURRENCY"]
        confirmed = {model_id: known for model_id in request.form.getlist("price")
                     if (known := prices.suggested(model_id, currency)) is not None}
        added, skipped, failed, repriced = [], [], [], []
        for model_id in wanted:
            if model_id in existing:
                skipped.append(model_id)
                continue
            name_taken = models.model.select().where(models.model.name == model_id).exists()
            try:
                row, _ = records.save(models, {"api": api.id, "model": model_id,
                                               "name": None if name_taken else model_id,
                                               **confirmed.get(model_id, {})})
            except records.RecordInvalid as invalid:
                failed.append(f"{model_id} ({invalid})")
                continue
            existing[model_id] = row
            added.append(model_id + (" (with its known prices)" if model_id in confirmed else ""))
        for model_id, known in confirmed.items():
            row = existing.get(model_id)
            if model_id not in wanted and row is not None and not prices.priced(row):
                records.save(models, known, row=row)
                repriced.append(model_id)
        if not (wanted or confirmed):
            flash("Select at least one model to add.", "warning")
        if added:
            flash(f"Added {len(added)} model{'s' * (len(added) != 1)}: {', '.join(added)}.", "success")
        if repriced:
            flash(f"Set the known prices of {', '.join(repriced)}.", "success")
        if skipped:
            flash(f"Skipped {len(skipped)} already present: {', '.join(skipped)}.", "info")
        if failed:
            flash(f"Could not add: {'; '.join(failed)}.", "error")
        return redirect(url_for(".check", api_id=api.id))
