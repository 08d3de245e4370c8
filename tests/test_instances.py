"""Several instances on one PostgreSQL database, each as the Docker image runs it
(gunicorn, two gevent workers): one set of rate limits, one catalog, one table of
request rows, and the slots of an instance that died freed without it."""

import concurrent.futures
import contextlib
import re
import threading
import time

import openai
import psycopg
import pytest

from promptproxy.collections import BY_NAME
from promptproxy.data.db import db
from promptproxy.data.migrations import MIGRATIONS

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_admin
from .servers import rest, start_instance

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

APPLIED = re.compile(r"applying migration (\d+): (\w+)")


def say(text):
    return [{"role": "user", "content": text}]


def sdk(server, key, keep_alive=True):
    """The official SDK pointed at one instance. Without keep-alive, each call opens a
    new connection, which either of the instance's workers may accept."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=20,
                         default_headers=None if keep_alive else {"Connection": "close"})


def rest_token(server):
    status, auth = rest(server.url, "POST", "/api/collections/_superusers/auth-with-password",
                        {"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert status == 200, auth
    return auth["token"]


def request_rows(server, token, expected, timeout=15):
    """Every request row as `server` lists them over the REST API, once it lists
    `expected` of them (rows are written in batches, a moment after each call)."""
    deadline = time.monotonic() + timeout
    while True:
        rows, page = [], 1
        while True:
            status, listed = rest(server.url, "GET", f"/api/collections/requests/records?perPage=500&page={page}",
                                  token=token)
            assert status == 200, listed
            rows += listed["items"]
            if page >= listed["totalPages"]:
                break
            page += 1
        if len(rows) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


@contextlib.contextmanager
def instances(tmp_path, count=2, **env):
    """`count` instances started together, each over its own data directory."""
    with contextlib.ExitStack() as stack:
        servers = [start_instance(stack, tmp_path / f"instance-{n}", tmp_path / f"instance-{n}.log", **env)
                   for n in range(count)]
        for server in servers:
            server.wait_healthy(server.url)
        yield servers


def test_two_instances_count_limits_revoke_keys_and_record_rows_as_one(gateway, tmp_path):
    upstream = gateway.upstream
    per_minute = gateway.create("keys", user=gateway.user.id, label="rpm", track=True, rpm=20)
    two_at_once = gateway.create("keys", user=gateway.user.id, label="concurrency", track=True, concurrency=2)
    revoked = gateway.create("keys", user=gateway.user.id, label="revoked", track=True)
    with db.connection_context():
        revoked_id = BY_NAME["keys"].model.get(label="revoked").id
    make_admin()
    expected_rows = []  # the user message of every call that must leave one row

    with instances(tmp_path) as (one, other):
        # -- rpm 20: exactly 20 of 50 calls, alternately sent to each instance
        left = 60 - time.time() % 60
        if left < 10:  # a new minute would start a new window half-way through
            time.sleep(left)
        clients = [sdk(one, per_minute), sdk(other, per_minute)]

        def call(number):
            text = f"rpm call {number}"
            expected_rows.append(text)
            try:
                response = clients[number % 2].chat.completions.with_raw_response.create(
                    model="gpt", messages=say(text))
            except openai.RateLimitError:
                return number % 2, None
            return number % 2, int(response.headers["x-ratelimit-remaining-requests"])

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(call, range(50)))
        admitted = [remaining for _, remaining in results if remaining is not None]
        assert sorted(admitted) == list(range(20))  # each told a different count: one window, not two
        assert {side for side, remaining in results if remaining is not None} == {0, 1}

        # -- concurrency 2: exactly 2 of 6 held streams, alternately sent to each instance
        hold = threading.Event()
        for _ in range(6):
            upstream.script(chunks=["first ", "last"], gate=hold)
        clients = [sdk(one, two_at_once), sdk(other, two_at_once)]

        def stream(number):
            text = f"stream {number}"
            expected_rows.append(text)
            try:
                parts = iter(clients[number % 2].chat.completions.create(model="gpt", messages=say(text),
                                                                         stream=True))
            except openai.RateLimitError as refused:
                assert "2 concurrent requests" in refused.message
                return None
            assert next(parts).choices[0].delta.content == "first "  # running, held by the upstream
            return parts

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            running = [parts for parts in pool.map(stream, range(6)) if parts is not None]
        assert len(running) == 2
        hold.set()
        for parts in running:
            assert "".join(chunk.choices[0].delta.content or "" for chunk in parts if chunk.choices) == "last"
        upstream.reset()
        expected_rows.append("after the streams")  # their slots are free again, on either instance
        clients[1].chat.completions.create(model="gpt", messages=say("after the streams"))

        # -- a key revoked on one instance is refused on the other within 1 s
        checking = [sdk(other, revoked, keep_alive=False) for _ in range(4)]
        for number, client in enumerate(checking):
            expected_rows.append(f"before revoking {number}")
            client.chat.completions.create(model="gpt", messages=say(f"before revoking {number}"))
        token = rest_token(one)
        status, changed = rest(one.url, "PATCH", f"/api/collections/keys/records/{revoked_id}", {"active": False},
                               token)
        assert status == 200, changed
        revoked_at = time.monotonic()
        outcomes = []

        def check(client):
            number = 0
            while time.monotonic() < revoked_at + 1.5:
                number += 1
                text = f"after revoking {id(client)} {number}"
                started = time.monotonic() - revoked_at
                try:
                    client.chat.completions.create(model="gpt", messages=say(text))
                    outcomes.append((started, 200))
                    expected_rows.append(text)  # still admitted: a row like any call
                except openai.AuthenticationError:
                    outcomes.append((started, 401))  # no user to account it to: no row

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(check, checking))
        late = [status for started, status in outcomes if started >= 1.0]
        assert late and set(late) == {401}, sorted(outcomes)

        # -- one row per call, the same rows seen from either instance
        seen = [request_rows(server, rest_token(server), len(expected_rows)) for server in (one, other)]
        for rows in seen:
            assert sorted(row["user_message"] for row in rows) == sorted(expected_rows)
        assert [row["id"] for row in seen[0]] == [row["id"] for row in seen[1]]
        statuses = {}
        for row in seen[0]:
            if row["user_message"].startswith("rpm call"):
                statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        assert statuses == {200: 20, 429: 30}
        logs = one.stop() + other.stop()
    assert "Traceback" not in logs, logs[-3000:]


def test_the_slots_of_a_killed_instance_are_freed_within_30_s(gateway, tmp_path):
    limited = gateway.create("keys", user=gateway.user.id, label="two at once", concurrency=2)
    hold = threading.Event()
    for _ in range(2):
        gateway.upstream.script(chunks=["first ", "last"], gate=hold)

    with instances(tmp_path) as (doomed, survivor):
        streams = [iter(sdk(doomed, limited).chat.completions.create(model="gpt", messages=say("held"),
                                                                     stream=True)) for _ in range(2)]
        for parts in streams:
            next(parts)  # both slots taken, on the instance about to die
        client = sdk(survivor, limited)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt", messages=say("refused while they run"))

        doomed.kill()
        killed_at = time.monotonic()
        refused = 0
        while True:
            try:
                client.chat.completions.create(model="gpt", messages=say("after the kill"))
                break
            except openai.RateLimitError:
                refused += 1
                assert time.monotonic() - killed_at < 30, "the dead instance's slots are still counted"
                time.sleep(0.5)
        freed_after = time.monotonic() - killed_at
        hold.set()
    assert refused, "the slots were free at once: the kill did not leave them taken"
    assert freed_after < 30


def test_instances_starting_together_on_an_empty_database_migrate_once(postgres_cluster, tmp_path):
    url = postgres_cluster.new_database()
    try:
        with instances(tmp_path, count=3, PROMPTPROXY_DATABASE_URL=url) as servers:
            logs = "".join(server.stop() for server in servers)
        with psycopg.connect(url) as conn:
            applied = conn.execute("SELECT version, name FROM _migrations ORDER BY version").fetchall()
    finally:
        postgres_cluster.drop_database(url)
    assert "Traceback" not in logs, logs[-3000:]
    expected = [(number, migration.__name__) for number, migration in enumerate(MIGRATIONS, start=1)]
    assert applied == expected
    announced = sorted((int(m[1]), m[2]) for m in APPLIED.finditer(logs))
    assert announced == expected  # each migration ran in exactly one of the six workers
