"""The admin's defences: where login may lead, cookies, page headers, CSV exports
and a login throttle shared by every worker and keyed on the real client."""

import csv
import io

import pytest

from promptproxy import create_app
from promptproxy.collections import BY_NAME
from promptproxy.data import records
from promptproxy.data.db import db
from promptproxy.services import services

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, csrf_token, make_admin

LOGIN = "/api/collections/_superusers/auth-with-password"


def log_in(client, next_=None, password=ADMIN_PASSWORD, **kwargs):
    token = csrf_token(client, "/_/login")
    query = {"next": next_} if next_ is not None else {}
    return client.post("/_/login", query_string=query, data={
        "csrf_token": token, "email": ADMIN_EMAIL, "password": password}, **kwargs)


@pytest.mark.parametrize("next_", [
    "/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "/ /evil.example", "//evil.example",
    "/\\evil.example", "\\/evil.example", "https://evil.example/", "javascript:alert(1)", "evil.example",
    "/\x00/evil.example", "/\u202e/evil.example", "/\x7f/evil.example", "///evil.example",
])
def test_login_next_never_leaves_the_server(app, client, next_):
    make_admin()
    response = log_in(client, next_)
    assert response.status_code == 302
    assert response.headers["Location"] == "/_/"


@pytest.mark.parametrize("next_", ["/_/keys/", "/_/requests/?flt1_status_equals=500&page=2",
                                   "/_/users/?search=%C3%A9"])
def test_login_next_leads_to_a_local_page(app, client, next_):
    make_admin()
    assert log_in(client, next_).headers["Location"] == next_


def test_cookies_are_secure_behind_https(data_dir):
    app = create_app({"DATA_DIR": str(data_dir), "PUBLIC_URL": "https://llm.example.com"})
    try:
        client = app.test_client()
        make_admin()
        response = log_in(client)
        cookies = response.headers.getlist("Set-Cookie")
        assert cookies and all("Secure" in c and "HttpOnly" in c for c in cookies)
        assert app.config["REMEMBER_COOKIE_SECURE"] is True
    finally:
        services(app).recorder.stop()


def test_cookies_are_not_secure_over_plain_http(app, client):
    make_admin()
    cookies = log_in(client).headers.getlist("Set-Cookie")
    assert cookies and not any("Secure" in c for c in cookies)


def test_admin_pages_forbid_framing_and_sniffing(admin):
    for url in ("/_/", "/_/login", "/_/keys/", "/_/keys/new/", "/_/stats.json"):
        headers = admin.get(url).headers
        assert headers["X-Frame-Options"] == "DENY", url
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], url
        assert headers["X-Content-Type-Options"] == "nosniff", url
        assert headers["Referrer-Policy"] == "same-origin", url


def test_csv_export_defuses_formula_cells(admin):
    with db.connection_context():
        user, _ = records.save(BY_NAME["users"], {"name": "=Tom"})
        BY_NAME["requests"].model.create(
            user=user.id, endpoint="/v1/chat/completions", status=200, model_ref="@SUM(A1)",
            user_message='=HYPERLINK("http://evil.example","click")', error="+1", reply="-2",
            system_prompt="\tx", request_body={"messages": []})
    export = admin.get("/_/requests/export/csv/")
    assert export.status_code == 200
    [row] = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert row["User message"] == "'=HYPERLINK(\"http://evil.example\",\"click\")"
    assert row["User"] == "'=Tom"
    assert (row["Model requested"], row["Error"], row["Reply"], row["System prompt"]) == \
        ("'@SUM(A1)", "'+1", "'-2", "'\tx")
    assert row["Status"] == "200" and row["Request body"] == '{"messages": []}'


def fail_logins(client, times=5, **kwargs):
    for _ in range(times):
        assert client.post(LOGIN, json={"identity": ADMIN_EMAIL, "password": "wrong"},
                           **kwargs).status_code == 400


def right_login(client, **kwargs):
    return client.post(LOGIN, json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, **kwargs)


def test_two_instances_share_the_throttle(app, client, data_dir):
    make_admin()
    other = create_app({"DATA_DIR": str(data_dir)})  # another worker on the same data
    try:
        fail_logins(client)
        blocked = right_login(other.test_client())
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
        assert log_in(other.test_client()).status_code == 401  # the admin form, too
    finally:
        services(other).recorder.stop()


def test_the_admin_and_the_rest_api_ask_the_apps_one_throttle(app, client):
    make_admin()
    throttle = services(app).throttle
    now = [1_000_000.0]
    throttle.clock = lambda: now[0]
    fail_logins(client)
    assert right_login(client).status_code == 429
    assert b"Too many failed attempts" in log_in(client).data
    now[0] += 3600  # on this throttle's clock alone: both logins go through again
    assert right_login(client).status_code == 200
    assert log_in(client).status_code == 302


def test_behind_a_trusted_proxy_one_address_cannot_lock_out_another(data_dir):
    app = create_app({"DATA_DIR": str(data_dir), "TRUSTED_PROXIES": 1})
    try:
        client = app.test_client()
        make_admin()
        attacker = {"headers": {"X-Forwarded-For": "203.0.113.7"}}
        admin = {"headers": {"X-Forwarded-For": "198.51.100.9"}}
        fail_logins(client, **attacker)
        assert right_login(client, **attacker).status_code == 429
        assert right_login(client, **admin).status_code == 200
        # Spoofed extra hops in front are not believed: the proxy's own hop decides.
        spoofed = {"headers": {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}}
        assert right_login(client, **spoofed).status_code == 429
    finally:
        services(app).recorder.stop()


def test_without_trusted_proxies_forwarded_addresses_are_ignored(app, client):
    make_admin()
    fail_logins(client, headers={"X-Forwarded-For": "203.0.113.7"})
    assert right_login(client, headers={"X-Forwarded-For": "198.51.100.9"}).status_code == 429


def test_throttle_is_per_account(app, client):
    make_admin()
    make_admin("other@example.com")
    fail_logins(client)
    assert client.post(LOGIN, json={"identity": "other@example.com",
                                    "password": ADMIN_PASSWORD}).status_code == 200
