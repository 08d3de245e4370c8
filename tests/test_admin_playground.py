"""The admin's playground (a chat through the real proxy, with its own user and a
key per admin, kept across logins) and "Test connection" for an api (the upstream's model list, and
importing models from it), against the real fake upstream."""

import html
import json
import re
import socket
from pathlib import Path

import pytest
import requests

from promptproxy.auth.superusers import Superuser
from promptproxy.collections import BY_NAME
from promptproxy.data import crypto, records
from promptproxy.data.db import db
from promptproxy.data.fields import GatewayKey

from .conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    UPSTREAM_SECRET,
    csrf_token,
    make_admin,
)

PLAYGROUND = "/_/playground/"


def login(client):
    token = csrf_token(client, "/_/login")
    response = client.post("/_/login", data={"csrf_token": token, "email": ADMIN_EMAIL,
                                             "password": ADMIN_PASSWORD})
    assert response.status_code == 302
    return client


def page_config(page):
    """What the playground page hands its script: the endpoint and the key."""
    match = re.search(r'<script type="application/json" id="pg-config">(.*?)</script>', page, re.DOTALL)
    assert match, "no playground config on the page"
    return json.loads(match.group(1))


def visit(client, query=""):
    response = client.get(PLAYGROUND + query)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    page = response.get_data(as_text=True)
    return page, page_config(page)["key"]


def rows(collection, **where):
    return rows_of(BY_NAME[collection].model, **where)


def rows_of(table, **where):
    with db.connection_context():
        query = table.select().order_by(table.created, table.id)
        for name, value in where.items():
            query = query.where(getattr(table, name) == value)
        return list(query)


def playground_keys():
    users = rows("users", name="Playground")
    assert len(users) == 1
    return rows("keys", user=users[0].id)


def snippets(page):
    """The client snippets column, as HTML (entities decoded)."""
    start = page.index('id="pg-snippets"')
    end = page.index('id="pg-config"')
    return html.unescape(page[start:end])


def snippet(page, snippet_id):
    """One snippet as it is copied: the text of its <pre>, without markup."""
    match = re.search(rf'<pre id="{snippet_id}"[^>]*>(.*?)</pre>', page, re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", match.group(1)))


def stream_chat(url, key, model, content):
    """A streamed chat call as the page's script makes it: the reply's text pieces."""
    response = requests.post(url, headers={"Authorization": f"Bearer {key}", "Accept": "text/event-stream"},
                             json={"model": model, "stream": True,
                                   "messages": [{"role": "user", "content": content}]},
                             stream=True, timeout=20)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    pieces, done = [], False
    for line in response.iter_lines(decode_unicode=True):
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        delta = json.loads(data)["choices"][0]["delta"]
        if delta.get("content"):
            pieces.append(delta["content"])
    assert done
    return pieces


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the playground ---------------------------------------------------------------------

def test_playground_and_connection_pages_require_login(app, client):
    make_admin()
    for url in (PLAYGROUND, "/_/connection/anything"):
        response = client.get(url)
        assert response.status_code == 302
        assert "/_/login" in response.headers["Location"]
    assert not rows("users") and not rows("keys")  # nothing made for a stranger


def test_first_visit_creates_the_playground_user_and_a_key_stored_as_a_hash(app, admin, gateway):
    response = admin.get(PLAYGROUND)
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    key = page_config(page)["key"]
    assert key.startswith(GatewayKey.PREFIX) and page.count(key) == 1

    (row,) = playground_keys()
    assert row.label == f"Playground: {ADMIN_EMAIL}" and row.active
    assert row.key == GatewayKey.digest(key) and row.key_prefix == key[:10]
    data_dir = Path(app.config["PROMPTPROXY"]["DATA_DIR"])
    for path in data_dir.glob("data.db*"):
        assert key.encode() not in path.read_bytes(), path.name
    # The admin's record keeps it encrypted with the server's encryption key, and the
    # session cookie (signed, not encrypted) holds nothing of it.
    (stored,) = [a.playground_key for a in rows_of(Superuser, email=ADMIN_EMAIL)]
    assert crypto.decrypt_stored(stored) == key
    cookie = admin.get_cookie("session").value
    session = app.session_interface.get_signing_serializer(app).loads(cookie)
    assert key not in json.dumps(session) and key[3:13] not in json.dumps(session)

    # The page says which key and which user the calls use, the key by its label and prefix.
    identity = " ".join(re.sub(r"<[^>]+>", " ", html.unescape(
        re.search(r'id="pg-identity">(.*?)</p>', page, re.DOTALL).group(1))).split())
    assert "as the user Playground (made by the playground on its first use)" in identity
    assert f"“Playground: {ADMIN_EMAIL}” ( {key[:10]}… )" in identity
    assert "one key per admin, kept for your next logins" in identity
    assert f'href="/_/keys/details/?id={row.id}"' in page

    # The choices are the active models and prompts, shown by name, chosen by reference.
    assert '<option value="gpt" title="gpt-4o-mini on Local" selected>gpt</option>' in page
    assert '>llama3:8b</option>' in page and '<option value="pirate">pirate</option>' in page
    assert 'href="/_/playground/"' in admin.get("/_/").get_data(as_text=True)  # in the menu


def test_dropdowns_name_records_without_a_name_readably(admin, gateway):
    model = gateway.create("models", api=gateway.api.id, model="o3-mini")
    prompt = gateway.create("prompts", instructions="Answer in French,\n  whatever the question.")
    page, _ = visit(admin)
    assert re.search(rf'<option value="{model.id}" title="o3-mini on Local"( selected)?>o3-mini \(Local\)</option>',
                     page)
    assert f'<option value="{prompt.id}">Answer in French, whatever the question.</option>' in page
    shown = re.findall(r"<option[^>]*>([^<]*)</option>", page)
    assert model.id not in shown and prompt.id not in shown  # the reference may be the id; the text is not


def test_a_second_visit_in_the_same_session_reuses_the_key(admin, gateway):
    _, first = visit(admin)
    _, second = visit(admin, "?model=llama3:8b")
    assert first == second
    assert len(playground_keys()) == 1


def test_three_logins_share_one_playground_key_that_works(app, admin, gateway):
    _, key = visit(admin)
    for _ in range(2):
        _, again = visit(login(app.test_client()))  # a fresh browser each time
        assert again == key
    (row,) = playground_keys()
    assert (row.key, row.active, row.label) == (GatewayKey.digest(key), True, f"Playground: {ADMIN_EMAIL}")
    assert len(rows("users", name="Playground")) == 1  # the user is reused
    assert stream_chat(gateway.url + "/v1/chat/completions", key, "gpt", "hi")


def test_logging_out_and_in_again_keeps_the_key(admin, gateway):
    _, old_key = visit(admin)
    admin.post("/_/logout", data={"csrf_token": csrf_token(admin, PLAYGROUND)})
    assert admin.get(PLAYGROUND).status_code == 302
    _, new_key = visit(login(admin))
    assert new_key == old_key
    assert [(k.key, k.active) for k in playground_keys()] == [(GatewayKey.digest(old_key), True)]


def test_each_admin_has_a_key_of_their_own(app, admin, gateway):
    _, mine = visit(admin)
    make_admin("second@example.com")
    other = app.test_client()
    token = csrf_token(other, "/_/login")
    other.post("/_/login", data={"csrf_token": token, "email": "second@example.com",
                                 "password": ADMIN_PASSWORD})
    _, theirs = visit(other)
    assert theirs != mine
    assert sorted((k.label, k.active) for k in playground_keys()) == [
        ("Playground: admin@example.com", True), ("Playground: second@example.com", True)]


def test_a_key_deactivated_or_deleted_by_hand_is_replaced_on_the_next_visit(admin, gateway):
    _, first = visit(admin)
    (row,) = playground_keys()
    gateway.update("keys", row, active=False)
    _, second = visit(admin)
    assert second != first
    assert [k.active for k in playground_keys()] == [False, True]

    import openai

    with pytest.raises(openai.AuthenticationError):
        gateway.client(first).chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "hi"}])

    with db.connection_context():
        records.delete(BY_NAME["keys"], playground_keys()[1])
    _, third = visit(admin)
    assert third not in (first, second)
    assert [(k.key, k.active) for k in playground_keys()] == [
        (GatewayKey.digest(first), False), (GatewayKey.digest(third), True)]


def test_an_unreadable_kept_key_is_replaced_and_retired(app, admin, gateway):
    """After the encryption key changed, the kept key cannot be read: a new one is
    made and the old one, which nobody can use any more, is deactivated."""
    _, first = visit(admin)
    with db.connection_context():
        Superuser.update(playground_key="not a token").execute()
    _, second = visit(admin)
    assert second != first
    assert [(k.key, k.active) for k in playground_keys()] == [
        (GatewayKey.digest(first), False), (GatewayKey.digest(second), True)]


def test_the_page_key_streams_through_the_proxy_and_is_logged_as_the_playground_user(admin, gateway):
    page, key = visit(admin, "?model=gpt&prompt=pirate")
    endpoint = page_config(page)["endpoint"]
    assert endpoint == "/v1/chat/completions"

    pieces = stream_chat(gateway.url + endpoint, key, "gpt:pirate", "Hello there, matey")
    assert len(pieces) > 1 and "".join(pieces) == "echo: Hello there, matey"  # token by token
    sent = gateway.upstream.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Talk like a pirate."}
    assert sent["model"] == "gpt-4o-mini" and sent["stream"] is True

    (request,) = gateway.rows(1)
    (user,) = rows("users", name="Playground")
    (key_row,) = playground_keys()
    assert (request.user, request.key, request.model_ref) == (user.id, key_row.id, "gpt:pirate")
    assert (request.stream, request.status, request.prompt) == (True, 200, gateway.prompt.id)


def test_snippets_name_the_exact_reference_and_never_the_playground_key(app, admin, gateway):
    page, key = visit(admin, "?model=llama3:8b&prompt=pirate")
    text = snippets(page)
    assert key not in text and key[:10] not in text
    assert "$PROMPTPROXY_KEY" in text
    curl = snippet(page, "pg-curl")
    assert curl.startswith("curl http://localhost/v1/chat/completions")
    assert 'Authorization: Bearer $PROMPTPROXY_KEY' in curl
    assert """-d '{"model": "llama3:8b:pirate", "messages": """ in curl
    python = snippet(page, "pg-python")
    assert 'OpenAI(base_url="http://localhost/v1", api_key=os.environ["PROMPTPROXY_KEY"])' in python
    assert '    model="llama3:8b:pirate",\n' in python
    compile(python, "snippet.py", "exec")  # it is Python
    assert 'id="pg-owui-model" value="llama3:8b:pirate"' in text  # Open WebUI
    assert 'id="pg-owui-url" value="http://localhost/v1"' in text
    assert 'id="pg-owui-key" value="$PROMPTPROXY_KEY"' in text
    assert text.count("Copy</button>") == 5
    assert 'id="pg-ref" class="pg-ref" data-quote="raw">llama3:8b:pirate<' in page

    app.config["PROMPTPROXY"]["PUBLIC_URL"] = "https://gateway.example.com/"
    page, _ = visit(admin, "?model=gpt")
    text = snippets(page)
    assert 'base_url="https://gateway.example.com/v1"' in snippet(page, "pg-python")
    assert "curl https://gateway.example.com/v1/chat/completions" in snippet(page, "pg-curl")
    assert 'value="https://gateway.example.com/v1"' in text
    assert '"model": "gpt", ' in snippet(page, "pg-curl") and "gpt:" not in text

    page, _ = visit(admin, "?model=no-such-model&prompt=no-such-prompt")  # falls back to the first model
    assert 'data-quote="raw">gpt<' in page


def test_the_page_loads_nothing_from_elsewhere(admin, gateway):
    page, _ = visit(admin)
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert url.startswith(("/", "#")), url


# -- test connection -----------------------------------------------------------------

def test_connection_lists_the_upstream_models_and_marks_those_already_added(admin, gateway):
    response = admin.get(f"/_/connection/{gateway.api.id}")
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and 'id="connection-ok"' in page
    assert 'name="model" value="gpt-3.5-turbo-instruct"' in page
    assert 'name="model" value="gpt-4o-mini"' not in page  # already a model of this api
    assert "already a model: gpt" in page
    assert UPSTREAM_SECRET not in page

    sent = gateway.upstream.requests[-1]
    assert (sent.method, sent.path) == ("GET", "/v1/models")
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_SECRET}"


def test_connection_to_an_anthropic_api_sends_its_headers(admin, gateway):
    api = gateway.create("apis", name="Claude", base_url=gateway.upstream.base_url,
                         api_key=UPSTREAM_SECRET, protocol="anthropic", timeout=5)
    page = admin.get(f"/_/connection/{api.id}").get_data(as_text=True)
    assert 'id="connection-ok"' in page
    sent = gateway.upstream.requests[-1]
    assert sent.headers["x-api-key"] == UPSTREAM_SECRET
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in sent.headers


def test_connection_links_from_the_apis_list_and_details(admin, gateway):
    url = f"/_/connection/{gateway.api.id}"
    assert f'href="{url}"' in admin.get("/_/apis/").get_data(as_text=True)
    details = admin.get(f"/_/apis/details/?id={gateway.api.id}").get_data(as_text=True)
    assert 'id="test-connection"' in details and f'href="{url}"' in details
    assert admin.get("/_/connection/no-such-api").status_code == 404
    assert 'href="/_/connection/' not in admin.get("/_/").get_data(as_text=True)  # not in the menu


def connection_error(admin, api):
    page = admin.get(f"/_/connection/{api.id}").get_data(as_text=True)
    assert UPSTREAM_SECRET not in page
    match = re.search(r'id="connection-error"[^>]*>(.*?)</div>', page, re.DOTALL)
    assert match, page[:2000]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())


def test_connection_to_an_unreachable_api_says_so(admin, gateway):
    api = gateway.create("apis", name="Gone", base_url=f"http://127.0.0.1:{closed_port()}/v1",
                         api_key=UPSTREAM_SECRET, timeout=5)
    message = connection_error(admin, api)
    assert "Could not reach" in message and "/v1/models" in message


def test_connection_refused_with_401_is_readable_and_hides_the_key(admin, gateway):
    gateway.upstream.script(status=401, body={"error": {
        "message": f"Incorrect API key provided: {UPSTREAM_SECRET}.", "type": "invalid_request_error"}})
    message = connection_error(admin, gateway.api)
    assert "refused the API key (HTTP 401)" in message
    assert "Incorrect API key provided: ••••••••" in message


def test_connection_to_a_server_that_is_not_an_api(admin, gateway):
    gateway.upstream.script(body="<html>It works!</html>")
    assert "not JSON" in connection_error(admin, gateway.api)
    gateway.upstream.script(status=500)
    assert "HTTP 500: Scripted error 500" in connection_error(admin, gateway.api)


def test_connection_to_a_silent_upstream_times_out(admin, gateway):
    api = gateway.create("apis", name="Slow", base_url=gateway.upstream.base_url,
                         api_key=UPSTREAM_SECRET, timeout=1)
    gateway.upstream.script(hang=True)
    assert "did not answer within 1 s" in connection_error(admin, api)


def test_importing_creates_models_and_skips_existing_ones(admin, gateway):
    url = f"/_/connection/{gateway.api.id}"
    response = admin.post(url, data={"csrf_token": csrf_token(admin, url),
                                     "model": ["gpt-4o-mini", "gpt-3.5-turbo-instruct"]})
    assert response.status_code == 302 and response.headers["Location"].endswith(url)
    page = admin.get(url).get_data(as_text=True)
    assert "Added 1 model: gpt-3.5-turbo-instruct." in page
    assert "Skipped 1 already present: gpt-4o-mini." in page
    assert "already a model: gpt-3.5-turbo-instruct" in page

    added = rows("models", model="gpt-3.5-turbo-instruct")
    assert [(m.api, m.name, m.active) for m in added] == [(gateway.api.id, "gpt-3.5-turbo-instruct", True)]
    assert len(rows("models", model="gpt-4o-mini")) == 1

    # Another api offering the same model: the name is taken, so the new one has none.
    other = gateway.create("apis", name="Other", base_url=gateway.upstream.base_url, timeout=5)
    other_url = f"/_/connection/{other.id}"
    admin.post(other_url, data={"csrf_token": csrf_token(admin, other_url), "model": "gpt-3.5-turbo-instruct"})
    names = {m.api: m.name for m in rows("models", model="gpt-3.5-turbo-instruct")}
    assert names == {gateway.api.id: "gpt-3.5-turbo-instruct", other.id: None}

    # The imported model is usable by its name at once.
    reply = gateway.client().chat.completions.create(
        model="gpt-3.5-turbo-instruct", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "echo: hi"


def test_importing_requires_a_csrf_token(admin, gateway):
    url = f"/_/connection/{gateway.api.id}"
    response = admin.post(url, data={"model": "gpt-3.5-turbo-instruct"})
    assert response.status_code == 400
    response = admin.post(url, data={"csrf_token": "forged", "model": "gpt-3.5-turbo-instruct"})
    assert response.status_code == 400
    assert not rows("models", model="gpt-3.5-turbo-instruct")
