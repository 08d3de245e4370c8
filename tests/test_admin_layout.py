"""The admin's frame: a sidebar with the dashboard, the collections and their record
counts, then the tools; labelled row actions; no page heading above the login."""

import re

from flask_admin import BaseView, expose

from promptproxy.admin import layout
from promptproxy.admin.views import LoginRequired
from promptproxy.collections import BY_NAME
from promptproxy.data import records
from promptproxy.data.db import db

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, csrf_token, make_admin

ENTRY = re.compile(r'<a class="nav-link( active)?" href="([^"]+)"[^>]*>\s*<span>([^<]+)</span>\s*'
                   r'(?:<span class="pp-count"[^>]*>([^<]+)</span>)?')


def sidebar(client, url):
    """The sidebar's entries on `url`: (name, count or None, active)."""
    html = client.get(url).get_data(as_text=True)
    nav = re.search(r'<div class="collapse d-md-block" id="pp-nav">(.*?)</nav>', html, re.S)
    assert nav, html[:2000]
    return [(name.strip(), count or None, bool(active)) for active, _, name, count in ENTRY.findall(nav.group(1))]


def add(collection, **data):
    with db.connection_context():
        return records.save(BY_NAME[collection], data)[0]


def test_the_sidebar_lists_the_collections_with_their_counts(admin):
    add("users", name="Tom", email="tom@example.com")
    add("users", name="Ann", email="ann@example.com")
    add("apis", name="Local", base_url="http://127.0.0.1:9/v1")
    assert sidebar(admin, "/_/users/") == [
        ("Dashboard", None, False),
        ("Users", "2", True), ("Keys", "0", False), ("APIs", "1", False), ("Models", "0", False),
        ("Prompts", "0", False), ("Prompt versions", "0", False), ("Requests", "0", False), ("Feedback", "0", False),
        ("Playground", None, False), ("Live log", None, False),
    ]
    page = admin.get("/_/users/").get_data(as_text=True)
    assert "<h4" in page and ">Users</h4>" in page  # the page's heading, in the sidebar's words


def test_counts_stop_at_a_cap(admin, monkeypatch):
    monkeypatch.setattr(layout, "COUNT_CAP", 2)
    for name in ("Tom", "Ann", "Bob"):
        add("users", name=name, email=f"{name.lower()}@example.com")
    entries = {name: count for name, count, _ in sidebar(admin, "/_/")}
    assert entries["Users"] == "2+" and entries["Keys"] == "0"


def test_a_view_added_later_joins_the_sidebar(app, client):
    class Audit(LoginRequired, BaseView):
        @expose("/")
        def index(self):
            return self.render("promptproxy/base.html")

    (admin_,) = app.extensions["admin"]
    admin_.add_view(Audit(name="Audit", endpoint="audit", url="audit"))
    make_admin()
    client.post("/_/login", data={"csrf_token": csrf_token(client, "/_/login"),
                                  "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    entries = sidebar(client, "/_/audit/")
    assert [name for name, *_ in entries][-3:] == ["Playground", "Live log", "Audit"]
    assert entries[-1] == ("Audit", None, True)


def test_row_actions_are_labelled(admin):
    add("users", name="Tom", email="tom@example.com")
    page = admin.get("/_/users/").get_data(as_text=True)
    for label in ("View", "Edit", "Delete"):
        assert f'aria-label="{label}"' in page
        assert re.search(rf'<span class="pp-action-text">{label}</span>', page)
    add("apis", name="Local", base_url="http://127.0.0.1:9/v1")
    apis = admin.get("/_/apis/").get_data(as_text=True)
    assert '<span class="pp-action-text">Test connection</span>' in apis


def test_login_and_setup_pages_have_no_sidebar_and_no_stray_heading(app, client):
    setup = client.get("/_/").get_data(as_text=True)  # no admin yet: the set-up notice
    make_admin()
    login = client.get("/_/login").get_data(as_text=True)
    for page in (setup, login):
        assert 'id="pp-sidebar"' not in page
        assert "<h4" not in page and "Home" not in page
    assert "<h2>Log in</h2>" in login


def test_list_columns_fold_on_phones(admin):
    styles = admin.get("/_/requests/").get_data(as_text=True)
    narrow = re.search(r"@media \(max-width: 575\.98px\) \{ ([^{]+) \{ display: none; \} \}", styles)
    hidden = {selector.strip().removeprefix(".model-list .col-") for selector in narrow.group(1).split(",")}
    assert {"created", "user", "model"}.isdisjoint(hidden) and {"endpoint", "status"} <= hidden
    assert ".model-list .col-created { white-space: nowrap; }" in styles
