"""First run, login and the guard in front of every admin page."""



import pytest

from promptproxy.auth import superusers
from promptproxy.collections import ALL

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, csrf_token, make_admin


def setup_link(app):
    return "/_/setup/" + superusers.setup_token(app.secret_key)


def test_fresh_server_points_to_the_link_in_the_log(app, client, caplog):
    page = client.get("/_/")
    assert page.status_code == 200
    assert "set-up link printed in the" in page.get_data(as_text=True)
    # Nothing on the page gives the link away.
    assert superusers.setup_token(app.secret_key) not in page.get_data(as_text=True)


def test_the_log_prints_the_setup_link(data_dir, caplog):
    from promptproxy import create_app

    with caplog.at_level("WARNING"):
        app = create_app({"DATA_DIR": str(data_dir), "PUBLIC_URL": "http://gw.example:8090"})
    assert f"http://gw.example:8090{setup_link(app)}" in caplog.text


def test_first_admin_is_created_only_through_the_link(app, client):
    assert client.get("/_/setup/not-the-token").status_code == 302
    url = setup_link(app)
    form = client.get(url)
    assert b"Create your admin account" in form.data
    token = csrf_token(client, url)

    short = client.post(url, data={"csrf_token": token, "email": "root@example.com",
                                   "password": "short", "confirm": "short"})
    assert b"at least 8 characters" in short.data
    assert not superusers.any_exist()

    done = client.post(url, data={"csrf_token": token, "email": "root@example.com",
                                  "password": ADMIN_PASSWORD, "confirm": ADMIN_PASSWORD})
    assert done.status_code == 302
    assert client.get("/_/").status_code == 200  # logged in straight away
    assert b"id=\"dashboard\"" in client.get("/_/").data

    # The link is spent: it can neither show the form nor create a second admin.
    assert client.get(url).status_code == 302
    again = client.post(url, data={"csrf_token": token, "email": "evil@example.com",
                                   "password": ADMIN_PASSWORD, "confirm": ADMIN_PASSWORD})
    assert again.status_code == 302
    assert [a.email for a in superusers.Superuser.select()] == ["root@example.com"]


def test_setup_form_needs_its_csrf_token(app, client):
    url = setup_link(app)
    response = client.post(url, data={"email": "root@example.com", "password": ADMIN_PASSWORD,
                                      "confirm": ADMIN_PASSWORD})
    assert response.status_code == 400
    assert not superusers.any_exist()


def admin_urls(app, record_ids):
    urls = ["/_/"]
    for collection in ALL:
        base = f"/_/{collection.name}/"
        record = record_ids.get(collection.name, "abc")
        urls += [base, base + f"details/?id={record}"]
        if not collection.readonly:
            urls += [base + "new/", base + f"edit/?id={record}"]
        if collection.readonly:
            urls += [base + "export/csv/"]
    return urls


def test_every_admin_page_requires_login(app, client):
    make_admin()
    for url in admin_urls(app, {}):
        response = client.get(url)
        assert response.status_code == 302, url
        assert "/_/login" in response.headers["Location"], url
    for collection in ALL:
        response = client.post(f"/_/{collection.name}/delete/", data={"id": "abc"})
        assert response.status_code in (302, 400), collection.name  # no session: refused either way
    body = client.get("/_/users/").get_data(as_text=True)
    assert "<table" not in body


def test_login_logout(app, client):
    make_admin()
    token = csrf_token(client, "/_/login")
    wrong = client.post("/_/login", data={"csrf_token": token, "email": ADMIN_EMAIL, "password": "nope"})
    assert wrong.status_code == 401
    assert b"Wrong email or password" in wrong.data

    right = client.post("/_/login?next=/_/keys/", data={"csrf_token": token, "email": ADMIN_EMAIL,
                                                        "password": ADMIN_PASSWORD})
    assert right.headers["Location"] == "/_/keys/"
    assert client.get("/_/keys/").status_code == 200

    client.post("/_/logout", data={"csrf_token": csrf_token(client, "/_/")})
    assert client.get("/_/keys/").status_code == 302


def test_login_never_redirects_off_site(app, client):
    make_admin()
    token = csrf_token(client, "/_/login")
    response = client.post("/_/login?next=//evil.example/", data={
        "csrf_token": token, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert response.headers["Location"] == "/_/"


def test_failed_logins_are_slowed_down(app, client):
    make_admin()
    token = csrf_token(client, "/_/login")
    for _ in range(5):
        page = client.post("/_/login", data={"csrf_token": token, "email": ADMIN_EMAIL, "password": "x"})
        assert b"Wrong email or password" in page.data
    blocked = client.post("/_/login", data={"csrf_token": token, "email": ADMIN_EMAIL,
                                            "password": ADMIN_PASSWORD})
    assert b"Too many failed attempts" in blocked.data
    assert client.get("/_/keys/").status_code == 302  # even the right password waits


def test_throttle_backs_off_and_forgets(app):
    from promptproxy.auth.throttle import LoginThrottle
    from promptproxy.data.db import db

    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    db.connect(reuse_if_open=True)
    for _ in range(5):
        assert throttle.wait("k") == 0
        throttle.failed("k")
    assert throttle.wait("k") == 2
    now[0] += 2
    assert throttle.wait("k") == 0
    throttle.failed("k")
    assert throttle.wait("k") == 4
    now[0] += 16 * 60
    assert throttle.wait("k") == 0
    throttle.succeeded("k")
    assert throttle.wait("k") == 0


@pytest.mark.sqlite  # with PostgreSQL the secrets come from the environment
def test_session_secret_and_encryption_key_are_private_files(app, data_dir):
    for name in (".secret_key", ".encryption_key"):
        path = data_dir / name
        assert path.stat().st_mode & 0o777 == 0o600
        assert len(path.read_text()) >= 40


def test_secrets_from_environment_win(data_dir, monkeypatch):
    from promptproxy import create_app

    monkeypatch.setenv("PROMPTPROXY_SECRET_KEY", "s" * 50)
    app = create_app({"DATA_DIR": str(data_dir)})
    assert app.secret_key == "s" * 50
    assert not (data_dir / ".secret_key").exists()
