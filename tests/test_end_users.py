"""End users: who a call is for, as its client says (OpenAI's `user`, Anthropic's
`metadata.user_id`, Open WebUI's forwarded user headers), recorded on its request
row, filtered in the REST API and the admin's request list, shown on a request's
page and counted on the dashboard. Calls go through the official SDKs to a real
upstream on loopback."""

import html
import json
import re

import anthropic
import openai
import pytest
import requests

from promptproxy.accounting import end_users

from .anthropic_upstream import AnthropicUpstream

HI = [{"role": "user", "content": "hi"}]


def chat(gateway, **kwargs):
    """One chat call through the openai SDK; it must be answered."""
    answer = gateway.client().chat.completions.create(model="gpt", messages=HI, **kwargs)
    assert answer.choices[0].message.content == "echo: hi"


def open_webui(email=None, user_id=None, name=None):
    """The headers Open WebUI adds with ENABLE_FORWARD_USER_INFO_HEADERS (it percent-encodes the name)."""
    headers = {"X-OpenWebUI-User-Email": email, "X-OpenWebUI-User-Id": user_id,
               "X-OpenWebUI-User-Name": name, "X-OpenWebUI-User-Role": "user"}
    return {name: value for name, value in headers.items() if value is not None}


# -- what is recorded ----------------------------------------------------------------

def test_the_openai_user_field_is_recorded(gateway):
    chat(gateway, user="alice")
    gateway.client().completions.create(model="gpt", prompt="hello", user="bob")
    chat(gateway)
    rows = gateway.rows(3)
    assert [(row.endpoint, row.end_user) for row in rows] == [
        ("chat/completions", "alice"), ("completions", "bob"), ("chat/completions", None)]
    assert gateway.upstream.requests[0].json["user"] == "alice"  # passed on untouched


def test_open_webui_headers_are_recorded_email_first(gateway):
    chat(gateway, extra_headers=open_webui(email="ann@example.com", user_id="7f1c-42", name="Ann Lee"))
    chat(gateway, extra_headers=open_webui(user_id="7f1c-42", name="Ann Lee"))
    chat(gateway, extra_headers=open_webui(name="J%C3%BCrgen M%C3%BCller 100%25"))
    chat(gateway, extra_headers={"x-openwebui-user-email": "lower@example.com"})  # any case
    assert [row.end_user for row in gateway.rows(4)] == [
        "ann@example.com", "7f1c-42", "Jürgen Müller 100%", "lower@example.com"]


def test_a_header_sent_as_utf8_bytes_is_read_as_utf8(gateway):
    """The openai SDK sends only ASCII headers; other clients send UTF-8 bytes."""
    for email in ("zoë@exämple.com".encode(), b"caf\xe9@example.com"):  # the second is not UTF-8
        response = requests.post(gateway.url + "/v1/chat/completions", json={"model": "gpt", "messages": HI},
                                 headers={"Authorization": f"Bearer {gateway.key}",
                                          "X-OpenWebUI-User-Email": email}, timeout=20)
        assert response.status_code == 200, response.text
    assert [row.end_user for row in gateway.rows(2)] == ["zoë@exämple.com", "café@example.com"]


def test_the_user_field_comes_before_the_headers(gateway):
    headers = open_webui(email="ann@example.com", user_id="7f1c-42")
    chat(gateway, user="alice", extra_headers=headers)
    chat(gateway, user="", extra_headers=headers)  # empty: not a user
    chat(gateway, user="  \n\t ", extra_headers=headers)  # nothing left once cleaned
    chat(gateway, extra_body={"user": 42}, extra_headers=headers)  # not a string
    chat(gateway, extra_headers={**headers, "X-OpenWebUI-User-Email": ""})
    assert [row.end_user for row in gateway.rows(5)] == [
        "alice", "ann@example.com", "ann@example.com", "ann@example.com", "7f1c-42"]


@pytest.mark.parametrize("user, recorded", [
    (12345, None), (3.5, None), (True, None), (None, None), (["alice"], None), ({"id": "alice"}, None),
    ("x" * 100_000, "x" * end_users.MAX_LENGTH),
    ("  alice  ", "alice"),
    ("al\x00i\x1bce\x7f\u200b\u202e", "alice"),  # control and invisible characters go
    ("Ann\tLee\nthe\u2028second", "Ann Lee the second"),  # other whitespace is a space
    ("Zoë 🙂 *", "Zoë 🙂 *"),
    ("\x00" * 300 + "late", None),  # only the first MAX_LENGTH characters are looked at
])
def test_junk_user_values_never_fail_a_call(gateway, user, recorded):
    chat(gateway, extra_body={"user": user})
    (row,) = gateway.rows(1)
    assert row.status == 200 and row.end_user == recorded
    assert row.error is None  # the row records nothing was wrong with the call


def test_lone_surrogates_are_dropped(gateway):
    """JSON may escape a lone surrogate, which UTF-8 cannot encode (the SDK refuses to send one)."""
    body = json.dumps({"model": "gpt", "messages": HI, "user": "\ud800bob\udfff"})
    assert "\\ud800" in body
    response = requests.post(gateway.url + "/v1/chat/completions", data=body, timeout=20,
                             headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    (row,) = gateway.rows(1)
    assert row.status == 200 and row.end_user == "bob"
    assert "end_user" not in row.error  # the tracked request body notes its own replacement


def test_a_huge_header_is_cut(gateway):
    chat(gateway, extra_headers=open_webui(user_id="i" * 4000))
    (row,) = gateway.rows(1)
    assert row.end_user == "i" * end_users.MAX_LENGTH


def test_a_refused_call_records_its_end_user_too(gateway):
    with pytest.raises(openai.NotFoundError):
        gateway.client().chat.completions.create(model="no-such-model", messages=HI, user="alice")
    (row,) = gateway.rows(1)
    assert row.status == 404 and row.end_user == "alice"


@pytest.fixture
def claude(gateway):
    with AnthropicUpstream() as server:
        api = gateway.create("apis", name="Anthropic", base_url=server.base_url, api_key="sk-ant-" + "k" * 24,
                             protocol="anthropic", timeout=5)
        gateway.create("models", api=api.id, model="claude-sonnet-4-6", name="sonnet")
        gateway.claude = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=20)
        yield gateway


def test_anthropic_metadata_user_id_and_headers_on_messages_and_count_tokens(claude):
    sdk = claude.claude
    sdk.messages.create(model="sonnet", max_tokens=20, messages=HI, metadata={"user_id": "carol"})
    sdk.messages.create(model="gpt", max_tokens=20, messages=HI, metadata={"user_id": "dave"})  # translated
    sdk.messages.create(model="sonnet", max_tokens=20, messages=HI, extra_headers=open_webui(name="Eve"))
    sdk.messages.count_tokens(model="sonnet", messages=HI, extra_headers=open_webui(email="fay@example.com"))
    sdk.messages.count_tokens(model="gpt", messages=HI, extra_headers=open_webui(user_id="u-9"))  # counted here
    sdk.messages.create(model="sonnet", max_tokens=20, messages=HI, extra_body={"metadata": "not an object"},
                        extra_headers=open_webui(user_id="u-10"))
    rows = claude.rows(6)
    assert [(row.endpoint, row.status, row.end_user) for row in rows] == [
        ("messages", 200, "carol"), ("messages", 200, "dave"), ("messages", 200, "Eve"),
        ("messages/count_tokens", 200, "fay@example.com"), ("messages/count_tokens", 200, "u-9"),
        ("messages", 200, "u-10")]


def test_cleaned_and_header_text():
    """The parts the proxy calls on each call, for what a socket cannot carry."""
    assert end_users.cleaned("\x1f") is None and end_users.cleaned("") is None
    assert end_users.header_text("J%C3%BCrgen", quoted=True) == "Jürgen"
    assert end_users.header_text("100%", quoted=True) == "100%"
    assert end_users.header_text("100%25", quoted=False) == "100%25"  # only the name is encoded
    assert end_users.end_user({}, {}) is None
    assert end_users.end_user({"user": "a", "metadata": {"user_id": "b"}}, {}) == "a"
    assert end_users.end_user({"metadata": {"user_id": "b"}}, {"HTTP_X_OPENWEBUI_USER_EMAIL": "c"}) == "b"


# -- where it shows ------------------------------------------------------------------

def three_end_users(gateway):
    """Calls for alice (3), ann@example.com (2, from headers), O'Brien (1) and nobody (2)."""
    for _ in range(3):
        chat(gateway, user="alice")
    for _ in range(2):
        chat(gateway, extra_headers=open_webui(email="ann@example.com", name="Ann"))
    chat(gateway, user="O'Brien")
    chat(gateway)
    with pytest.raises(openai.NotFoundError):
        gateway.client().chat.completions.create(model="no-such-model", messages=HI)
    return gateway.rows(8)


def test_rest_filters_on_end_user(gateway, api):
    rows = three_end_users(gateway)

    def ids(filter_):
        response = api.get("/api/collections/requests/records", query_string={"filter": filter_, "perPage": 100})
        assert response.status_code == 200, response.json
        return sorted(item["id"] for item in response.json["items"])

    def expected(keep):
        return sorted(row.id for row in rows if keep(row.end_user))

    assert ids("end_user='alice'") == expected(lambda e: e == "alice") and len(ids("end_user='alice'")) == 3
    assert ids('end_user = "ann@example.com"') == expected(lambda e: e == "ann@example.com")
    assert ids('end_user = "O\'Brien"') == expected(lambda e: e == "O'Brien")
    assert ids('end_user ~ "example.com"') == expected(lambda e: e == "ann@example.com")
    assert ids("end_user = null") == expected(lambda e: e is None) and len(ids("end_user = null")) == 2
    assert ids("end_user='nobody'") == []
    item = api.get(f"/api/collections/requests/records/{rows[0].id}").json
    assert item["end_user"] == "alice"


def page_text(page):
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_the_request_list_filters_and_shows_end_users(gateway, admin):
    rows = three_end_users(gateway)
    page = admin.get("/_/requests/?flt0_end_user_equals=alice").get_data(as_text=True)
    shown = set(re.findall(r"/_/requests/details/\?id=(\w+)", page))
    assert shown == {row.id for row in rows if row.end_user == "alice"}
    assert "End user" in page and 'class="col-end_user"' in page

    everyone = admin.get("/_/requests/").get_data(as_text=True)
    assert "O&#39;Brien" in everyone or "O&#x27;Brien" in everyone
    assert "ann@example.com" in everyone
    others = admin.get("/_/requests/?flt0_end_user_not_equal=alice").get_data(as_text=True)
    assert set(re.findall(r"/_/requests/details/\?id=(\w+)", others)) == {
        row.id for row in rows if row.end_user not in ("alice", None)}


def test_a_long_end_user_is_cut_in_the_list_and_whole_on_its_page(gateway, admin):
    long_ = "w" * end_users.MAX_LENGTH
    chat(gateway, user=long_)
    (row,) = gateway.rows(1)
    listed = admin.get("/_/requests/").get_data(as_text=True)
    assert f'<span title="{long_}">{"w" * 47}…</span>' in listed
    assert page_text(listed).count(long_) == 0  # only in the title
    details = admin.get(f"/_/requests/details/?id={row.id}").get_data(as_text=True)
    assert f"End user {long_}" in page_text(details)


def test_the_request_details_page_shows_the_end_user(gateway, admin):
    chat(gateway, extra_headers=open_webui(email="ann@example.com"))
    (row,) = gateway.rows(1)
    text = page_text(admin.get(f"/_/requests/details/?id={row.id}").get_data(as_text=True))
    assert "End user ann@example.com" in text


def test_the_dashboard_counts_top_end_users(gateway, admin):
    rows = three_end_users(gateway)
    block = admin.get("/_/stats.json?range=24h").json["breakdowns"]["end_user"]
    counts = {}
    for row in rows:
        counts.setdefault(row.end_user or "", []).append(row)
    assert [(e["id"], e["name"], e["requests"], e["errors"], e["input_tokens"], e["deleted"])
            for e in block["top"]] == sorted(
        [(end_user, end_user or "(none)", len(calls), sum(r.status >= 400 for r in calls),
          sum(r.input_tokens or 0 for r in calls), False) for end_user, calls in counts.items()],
        key=lambda entry: (-entry[2], entry[0]))
    assert block["others"]["count"] == 0

    html_ = admin.get("/_/").get_data(as_text=True)
    assert 'id="top-end_user"' in html_ and "Top end users" in html_
