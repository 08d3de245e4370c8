"""Request rows: every finished call's row is stored, whatever the client or the
upstream sent; one bad row never holds back the others; rows survive a killed
worker (the spool); and a locked database never stalls the streams in flight."""

import contextlib
import datetime as dt
import json
import signal
import sqlite3
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from promptproxy import create_app, stop
from promptproxy.collections import BY_NAME
from promptproxy.data.db import db
from promptproxy.data.fields import new_id, utcnow
from promptproxy.services import services

from .servers import dockerfile_cmd

MESSAGES = [{"role": "user", "content": "hello there"}]


def post(url, key, body):
    """A raw POST (the SDKs would not send a lone surrogate); (status, JSON)."""
    request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def stored(**where):
    model = BY_NAME["requests"].model
    with db.connection_context():
        query = model.select().order_by(model.created, model.id)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return list(query)


def test_poison_rows_from_upstream_and_client_are_stored_and_hold_nothing_back(gateway):
    gateway.upstream.script(body={
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": "n/a", "completion_tokens": 2.0, "total_tokens": True}})
    answer = gateway.client().chat.completions.create(model="gpt", messages=MESSAGES)
    assert answer.choices[0].message.content == "hi"
    status, body = post(gateway.url, gateway.key, {"model": "\ud800", "messages": []})
    assert status == 404, body
    nul = gateway.client().chat.completions.create(model="gpt", messages=[{"role": "user", "content": "a\x00b"}])
    assert nul.choices[0].message.content == "echo: a\x00b"  # relayed as it is; only its row is cleaned
    for i in range(60):
        gateway.client().chat.completions.create(model="gpt", messages=[{"role": "user", "content": f"n{i}"}])

    rows = gateway.rows(63)
    assert len(rows) == 63
    usage_row, surrogate_row, nul_row = rows[0], rows[1], rows[2]
    assert (usage_row.input_tokens, usage_row.output_tokens, usage_row.total_tokens) == (None, 2, None)
    assert "input_tokens was not a number" in usage_row.error
    assert "total_tokens was not a number" in usage_row.error
    assert usage_row.response_body["usage"]["prompt_tokens"] == "n/a"  # the body is kept as received
    assert surrogate_row.status == 404 and surrogate_row.model_ref == "\ufffd"
    assert "model_ref had characters that cannot be stored" in surrogate_row.error
    assert surrogate_row.request_body == {"model": "\ufffd", "messages": []}
    # PostgreSQL's text cannot hold NUL: replaced on either database, JSON keeps it escaped
    assert nul_row.user_message == "a\ufffdb" and "user_message had characters" in nul_row.error
    assert nul_row.request_body["messages"] == [{"role": "user", "content": "a\x00b"}]
    assert [row.user_message for row in rows[3:]] == [f"n{i}" for i in range(60)]
    from promptproxy.accounting import stats
    with db.connection_context():
        assert stats.summary("24h")["totals"]["requests"] == 63  # the rollup took every row


def a_row(**values):
    return {"created": utcnow(), "user": "u1", "key": None, "endpoint": "/v1/chat/completions",
            "stream": False, "status": 200, **values}


def test_stop_writes_every_row_and_drops_only_the_one_that_cannot_be_written(app, caplog):
    recorder = services(app).recorder
    taken = new_id()
    recorder.record(a_row(id=taken, model_ref="first"))
    assert recorder.flush()
    recorder.record(a_row(model_ref="before"))
    recorder.record(a_row(id=taken, model_ref="same id again"))  # cannot be inserted
    recorder.record(a_row(model_ref="huge", input_tokens=10**30, output_tokens=float("nan"),
                          latency_ms="12", request_body={"x": float("inf"), "y": "\udfff"},
                          response_body={"deep": [[["ok"]]]}))
    recorder.record(a_row(model_ref="after"))
    stop(app)  # writes everything, raises nothing
    stop(app)  # twice is harmless (the atexit hook runs it again)

    rows = {row.model_ref: row for row in stored()}
    assert set(rows) == {"first", "before", "huge", "after"}
    assert recorder.dropped == 1 and "dropped request row " + taken in caplog.text
    huge = rows["huge"]
    assert (huge.input_tokens, huge.output_tokens, huge.latency_ms) == (None, None, 12)
    assert huge.request_body == {"x": None, "y": "\ufffd"}
    assert huge.response_body == {"deep": [[["ok"]]]}
    assert "input_tokens was out of range" in huge.error and "latency_ms was not an integer" in huge.error
    assert not list((Path(app.config["PROMPTPROXY"]["DATA_DIR"]) / "spool").glob("*.jsonl"))


def test_spooled_rows_of_a_dead_worker_are_replayed_once_at_start(app, data_dir):
    """A worker died after committing part of its spool: the next start writes
    the rest, and no row (nor its count in the rollup) twice."""
    recorder = services(app).recorder
    first = a_row(model_ref="committed before the crash", id=new_id())
    recorder.record(dict(first))
    assert recorder.flush()
    stop(app)
    db.close()
    spool = data_dir / "spool"
    lines = [dict(first, created=first["created"].isoformat(" "), updated=first["created"].isoformat(" "))]
    for i in range(3):
        created = (utcnow() + dt.timedelta(seconds=i)).isoformat(" ")
        lines.append(dict(a_row(model_ref=f"lost {i}", id=new_id()), created=created, updated=created))
    segment = spool / "99999999-dead.0.jsonl"  # no lock file: nobody owns it
    segment.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"cut short')

    again = create_app({"DATA_DIR": str(data_dir), "CATALOG_TTL": 0})
    try:
        refs = [row.model_ref for row in stored()]
        assert refs == ["committed before the crash", "lost 0", "lost 1", "lost 2"]
        assert not segment.exists()
        from promptproxy.accounting import stats
        with db.connection_context():
            assert stats.summary("24h")["totals"]["requests"] == 4
    finally:
        stop(again)


def test_spool_files_are_private(app, data_dir):
    recorder = services(app).recorder
    recorder.spool.append({"id": "x"})
    spool = data_dir / "spool"
    assert spool.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in spool.iterdir() if p.name != "replay.lock"} == {0o600}


# -- with the real servers ------------------------------------------------------------

@contextlib.contextmanager
def write_lock(data_dir, database_url, what="data"):
    """Another process's lock that holds back PromptProxy's writes of request rows
    (`what` = "data") or of rate-limit counts ("limits"), reads going on: SQLite's
    write lock on data.db or limits.db, or on PostgreSQL an EXCLUSIVE lock on
    the tables they go to (a connection of our own)."""
    if database_url:
        import psycopg

        tables = {"data": ["requests"], "limits": ["_limit_windows", "_limit_inflight"]}[what]
        conn = psycopg.connect(database_url, autocommit=True)
        begin, end = "BEGIN; LOCK TABLE " + ", ".join(tables) + " IN EXCLUSIVE MODE", "ROLLBACK"
    else:
        conn = sqlite3.connect(data_dir / f"{what}.db", isolation_level=None, timeout=10)
        begin, end = "BEGIN IMMEDIATE", "ROLLBACK"
    try:
        for statement in begin.split("; "):
            conn.execute(statement)
        yield
    finally:
        conn.execute(end)
        conn.close()


def count_rows(data_dir, database_url):
    if database_url:
        import psycopg

        with psycopg.connect(database_url) as conn:
            return conn.execute('SELECT count(*) FROM "requests"').fetchone()[0]
    with contextlib.closing(sqlite3.connect(data_dir / "data.db", timeout=10)) as conn:
        return conn.execute('SELECT count(*) FROM "requests"').fetchone()[0]


def wait_for_rows(data_dir, database_url, expected, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_rows(data_dir, database_url) >= expected:
            return count_rows(data_dir, database_url)
        time.sleep(0.05)
    return count_rows(data_dir, database_url)


def worker_pids(master):
    path = Path(f"/proc/{master.pid}/task/{master.pid}/children")
    return [int(pid) for pid in path.read_text().split()]


@pytest.mark.slow
def test_rows_of_finished_calls_survive_a_killed_gunicorn_worker(gateway, served, data_dir, database_url):
    cmd = [("127.0.0.1:{port}" if arg.startswith("0.0.0.0:") else arg) for arg in dockerfile_cmd()]
    cmd[cmd.index("--workers") + 1] = "1"
    server = served(cmd)
    (worker,) = worker_pids(server.process)
    gateway.url = server.url
    client = gateway.client()
    # Hold the database so no batch can be committed: the rows exist only in the
    # worker's memory and its spool when it dies.
    with write_lock(data_dir, database_url):
        for i in range(5):
            assert client.chat.completions.create(model="gpt", messages=[
                {"role": "user", "content": f"call {i}"}]).choices[0].message.content == f"echo: call {i}"
        chunks = list(client.chat.completions.create(model="gpt", messages=MESSAGES, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello there"
        import os
        os.kill(worker, signal.SIGKILL)
    assert wait_for_rows(data_dir, database_url, 6) == 6, server.log()[-3000:]  # the new worker replays the spool
    rows = stored()
    assert sorted(row.user_message for row in rows) == sorted([f"call {i}" for i in range(5)] + ["hello there"])
    assert [row for row in rows if row.stream][0].total_tokens  # usage counted in the streamed row
    server.stop()
    assert count_rows(data_dir, database_url) == 6  # the graceful stop wrote nothing twice


@pytest.mark.slow
def test_a_locked_database_does_not_stall_streams_in_flight(gateway, served, data_dir, database_url):
    server = served()
    gateway.url = server.url
    limited = gateway.create("keys", user=gateway.user.id, label="limited", rpm=1000)
    streams, gap, words = 4, 0.05, [f"w{i} " for i in range(36)]  # ~1.75 s each
    arrivals = [[] for _ in range(streams)]
    for _ in range(streams):
        gateway.upstream.script(chunks=words, delay=gap)

    def stream(i):
        for _ in gateway.client().chat.completions.create(model="gpt", messages=MESSAGES, stream=True):
            arrivals[i].append(time.monotonic())

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while not all(arrivals) and time.monotonic() < deadline:
        time.sleep(0.01)
    limited_call = {}
    with write_lock(data_dir, database_url), write_lock(data_dir, database_url, "limits"):
        locked = time.monotonic()

        def call_with_a_limit():
            answer = gateway.client(limited).chat.completions.create(model="gpt", messages=MESSAGES)
            limited_call.update(answer=answer.choices[0].message.content, done=time.monotonic())

        waiting = threading.Thread(target=call_with_a_limit)
        waiting.start()
        for thread in threads:
            thread.join(10)  # the streams end while the lock is held
        ended = time.monotonic()
        assert count_rows(data_dir, database_url) == 0  # nothing could be committed yet
        time.sleep(max(0, 2 - (ended - locked)))  # hold the lock for 2 s in all
        released = time.monotonic()
    waiting.join(15)

    assert all(len(times) >= len(words) for times in arrivals)
    worst = max(b - a for times in arrivals for a, b in zip(times, times[1:]))
    assert worst <= gap + 0.05, f"a chunk gap of {worst * 1000:.0f} ms"
    assert ended < released
    assert limited_call["answer"] == "echo: hello there" and limited_call["done"] >= released  # it waited
    assert wait_for_rows(data_dir, database_url, streams + 1) == streams + 1, server.log()[-3000:]


def test_a_call_reporting_billions_of_tokens_is_stored_and_summed(gateway):
    """Upstream figures are untrusted: a count over 2**31 must not make the row's
    batch fail (PostgreSQL's 32-bit columns did), and the dashboard sums it."""
    from promptproxy.accounting import stats

    huge = 3 * 2**31
    gateway.upstream.script(usage={"prompt_tokens": huge, "completion_tokens": 5, "total_tokens": huge + 5})
    gateway.client().chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    (row,) = gateway.rows(1)
    assert (row.input_tokens, row.total_tokens) == (huge, huge + 5)
    with db.connection_context():
        assert stats.summary("24h")["totals"]["input_tokens"] == huge
