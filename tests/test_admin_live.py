"""The live log at /_/live: calls pushed to the admin as server-sent events as they
finish, read from the requests table so every worker's calls arrive, filtered by
user and model on the server, and never to anyone who is not logged in."""

import contextlib
import json
import re
import time

import openai
import pytest
import requests

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_admin
from .servers import dockerfile_cmd

EVENTS = "/_/live/events"
WAIT = 15  # seconds an expected event may take at most (the server polls every 0.5 s)


def test_the_live_log_needs_the_admin_login(app, client):
    for url in ("/_/live/", EVENTS, EVENTS + "?model=x"):
        response = client.get(url, headers={"Accept": "text/event-stream"})
        assert response.status_code == 302, url
        assert "/_/login" in response.headers["Location"]
        assert "text/event-stream" not in response.headers.get("Content-Type", "")
        assert b"data:" not in response.data


def test_the_live_page_offers_users_and_models_by_name(admin, gateway):
    page = admin.get("/_/live/").get_data(as_text=True)
    assert f'<option value="{gateway.user.id}">Tom</option>' in page
    assert f'<option value="{gateway.model.id}">gpt</option>' in page
    assert f'<option value="{gateway.llama.id}">llama3:8b</option>' in page
    assert 'id="live-pause"' in page and "new EventSource(" in page
    assert "//cdn" not in page and "https://" not in page  # nothing loaded from elsewhere
    assert 'href="/_/live/"' in admin.get("/_/playground/").get_data(as_text=True)  # in the menu


# -- reading a stream as a browser does -------------------------------------------------------

class Stream:
    """An open event stream, read event by event with a deadline (never a sleep)."""

    def __init__(self, session, url, last_event_id=None, **params):
        headers = {"Accept": "text/event-stream"}
        if last_event_id:  # as a browser reconnecting after the stream dropped
            headers["Last-Event-ID"] = last_event_id
        self.response = session.get(url, params=params, stream=True, timeout=(5, WAIT), headers=headers)
        assert self.response.status_code == 200, self.response.text[:500]
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.chunks = self.response.iter_content(chunk_size=None)
        self.buffer = b""
        self.next_block()  # the stream's opening comment: it follows the table from here on

    def next_block(self):
        deadline = time.monotonic() + WAIT
        while b"\n\n" not in self.buffer:
            assert time.monotonic() < deadline, "no event in time"
            self.buffer += next(self.chunks)
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        return block.decode()

    def next_call(self):
        """The next `call` event's data, skipping keep-alive comments."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            fields = dict(line.split(": ", 1) for line in self.next_block().splitlines()
                          if not line.startswith(":"))
            if fields.get("event") == "call":
                return json.loads(fields["data"])
        raise AssertionError("no call event in time")

    def close(self):
        self.response.close()


def admin_session(base_url):
    session = requests.Session()
    form = session.get(base_url + "/_/login", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form).group(1)
    response = session.post(base_url + "/_/login", timeout=10, allow_redirects=False,
                            data={"csrf_token": token, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert response.status_code == 302, response.text[:500]
    return session


def shown(call):
    return call["user"], call["model"], call["prompt"], call["status"]


@pytest.mark.slow
def test_the_live_log_shows_the_calls_of_every_worker_and_filters_by_model(gateway, served):
    """The Docker image's gunicorn (two workers) and a `python app.py serve` beside it
    over the same data: a stream opened on one shows the calls answered by the other."""
    ann = gateway.create("users", name="Ann")
    ann_key = gateway.create("keys", user=ann.id, label="ann")
    command = [arg if not arg.startswith("0.0.0.0:") else "127.0.0.1:{port}" for arg in dockerfile_cmd()]
    gunicorn = served(command)
    other = served()
    make_admin()
    session = admin_session(gunicorn.url)

    def client(server, key=None):
        sdk = gateway.client(key)
        sdk.base_url = server.url + "/v1"
        return sdk

    def chat(sdk, model):
        return sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi there"}])

    everything = Stream(session, gunicorn.url + EVENTS)
    only_gpt = Stream(session, gunicorn.url + EVENTS, model=gateway.model.id)
    try:
        chat(client(gunicorn), "gpt:pirate")
        gateway.upstream.script(status=429)
        with pytest.raises(openai.RateLimitError):
            chat(client(other, ann_key), "llama3:8b")  # another process altogether
        calls = [everything.next_call(), everything.next_call()]
        assert sorted(map(shown, calls)) == [("Ann", "llama3:8b", "", 429), ("Tom", "gpt", "pirate", 200)]
        ok = next(c for c in calls if c["status"] == 200)
        assert ok["endpoint"] == "chat/completions" and ok["tokens"] > 0 and ok["latency_ms"] >= 0
        assert ok["url"].startswith("/_/requests/details/") and ok["id"] in ok["url"]

        # A llama call recorded before a gpt call: the filtered stream skips it.
        chat(client(other), "llama3:8b")
        assert shown(everything.next_call()) == ("Tom", "llama3:8b", "", 200)
        chat(client(gunicorn, ann_key), "gpt")
        assert shown(everything.next_call()) == ("Ann", "gpt", "", 200)
        assert [shown(only_gpt.next_call()), shown(only_gpt.next_call())] == [
            ("Tom", "gpt", "pirate", 200), ("Ann", "gpt", "", 200)]
    finally:
        everything.close()
        only_gpt.close()


@pytest.mark.postgresql
def test_rows_committed_out_of_order_each_reach_the_live_log_once(gateway, database_url):
    """PostgreSQL: several writers commit batches in an order that is neither the
    order they began nor their calls' times. A batch that began first (a long
    call's row, with an old time) and commits last is still shown, after the one
    committed before it, and nothing is shown twice, also to a browser resuming
    from its last event."""
    import datetime as dt

    import psycopg

    from promptproxy.admin.live import TransactionLog, new_calls

    make_admin()
    session = admin_session(gateway.url)
    log = TransactionLog()
    start = log.start("")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    insert = ('INSERT INTO requests (id, created, updated, "user", model, endpoint, status) '
              "VALUES (%s, %s, %s, %s, %s, 'chat/completions', 200)")
    with contextlib.ExitStack() as streams:
        stream = streams.enter_context(contextlib.closing(Stream(session, gateway.url + EVENTS)))
        with psycopg.connect(database_url) as first, psycopg.connect(database_url) as second:
            first.execute(insert, ("longcall0000001", now - dt.timedelta(minutes=5), now,
                                   gateway.user.id, gateway.model.id))  # began first
            second.execute(insert, ("quickcall000001", now, now, gateway.user.id, gateway.llama.id))
            second.commit()
            with psycopg.connect(database_url) as other:  # committed and visible to anyone...
                assert other.execute("SELECT id FROM requests").fetchall() == [("quickcall000001",)]
            assert new_calls(log, start) == []  # ...but held back while an earlier batch may still commit
            first.commit()

        shown = new_calls(log, start)
        assert [call["id"] for _, _, call in shown] == ["longcall0000001", "quickcall000001"]
        assert new_calls(log, shown[-1][0]) == []
        assert [(c["id"], c["model"]) for c in (stream.next_call(), stream.next_call())] == [
            ("longcall0000001", "gpt"), ("quickcall000001", "llama3:8b")]

        # A browser that reconnects sends the id of the last event it received.
        resumed = streams.enter_context(contextlib.closing(
            Stream(session, gateway.url + EVENTS, last_event_id=shown[0][1])))
        assert resumed.next_call()["id"] == "quickcall000001"
        gateway.client().chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
        after = stream.next_call()  # the next call, not one already shown
        assert (after["model"], after["status"]) == ("gpt", 200)
        assert after["id"] not in ("longcall0000001", "quickcall000001")
        assert resumed.next_call()["id"] == after["id"]
