"""PostgreSQL under gevent: the driver never blocks the event loop, a lock held in
the database stalls no stream, a restart of the database is survived, and the
server refuses to start without the secrets every instance must share."""

import concurrent.futures
import contextlib
import json
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import anthropic
import openai
import psycopg
import pytest

from promptproxy.accounting.limits import Limited
from promptproxy.data.db import bump_version, db, read_version, write
from promptproxy.services import services

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_admin
from .servers import ROOT, free_port, instance_command, rest, server_env, start_instance

# One greenlet sleeps in PostgreSQL while another ticks every 10 ms: the gaps between
# ticks say whether the event loop went on meanwhile. argv: database URL, and
# "psycopg-first" to import the driver before gevent patches the standard library.
GREENLETS = r"""
import json, sys, time
if sys.argv[2] == "psycopg-first":
    import psycopg  # picks its blocking C wait function: select is not patched yet
from gevent import monkey
monkey.patch_all()
import gevent
from promptproxy.data.db import db, open_database

open_database({"DATABASE_URL": sys.argv[1]})
ticks, slept = [], []

def tick():
    while not slept:
        ticks.append(time.monotonic())
        gevent.sleep(0.01)

def sleep_in_postgresql():
    with db.connection_context():
        db.execute_sql("SELECT 1")
        started = time.monotonic()
        db.execute_sql("SELECT pg_sleep(1)")
        slept.append((started, time.monotonic()))

gevent.joinall([gevent.spawn(tick), gevent.spawn(sleep_in_postgresql)])
(started, ended), = slept
during = [started] + [t for t in ticks if started < t < ended] + [ended]
print(json.dumps({"slept": ended - started, "ticks": len(during) - 2,
                  "longest_gap": max(b - a for a, b in zip(during, during[1:]))}))
"""


def greenlets_while_postgresql_sleeps(url, mode):
    done = subprocess.run([sys.executable, "-c", GREENLETS, url, mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.postgresql
def test_a_slow_query_holds_up_only_the_greenlet_that_made_it(postgres_cluster):
    """The evidence for psycopg 3 under gevent: imported after the monkey-patching (as
    gunicorn's gevent worker and `app.py serve` import it), its waits yield to the
    event loop. Imported before, it picks its C wait function and the loop stalls for
    the whole query: the check below would see it."""
    cooperative = greenlets_while_postgresql_sleeps(postgres_cluster.url(), "patched-first")
    assert cooperative["slept"] >= 1
    assert cooperative["longest_gap"] < 0.05, cooperative
    assert cooperative["ticks"] >= 50, cooperative

    blocking = greenlets_while_postgresql_sleeps(postgres_cluster.url(), "psycopg-first")
    assert blocking["longest_gap"] >= 0.9, blocking


def say(text):
    return [{"role": "user", "content": text}]


@pytest.mark.postgresql
@pytest.mark.slow
def test_a_lock_held_in_postgresql_for_2_s_stalls_no_stream(gateway, tmp_path, database_url):
    """Streams relayed by one worker while the database makes that worker's other
    calls wait 2 s (the catalog's change counter, the limiter's lock on the user, the
    request rows' table all held): each chunk reaches the client when the upstream
    sent it, give or take 50 ms."""
    streams, chunks, delay = 4, 30, 0.1
    gateway.update("users", gateway.user, rpm=100_000)  # every call takes the limiter's lock on the user
    for _ in range(streams):
        gateway.upstream.script(chunks=[f"c{i} " for i in range(chunks)], delay=delay)
    running, held, lock_taken = [threading.Event() for _ in range(streams)], [], threading.Event()

    def stream(number, client):
        arrived = []
        parts = client.chat.completions.create(model="gpt", messages=say(f"stream {number}"), stream=True)
        for part in parts:
            if part.choices and part.choices[0].delta.content:
                arrived.append(time.monotonic())
                running[number].set()
        return arrived

    def hold_locks(conn):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"user:{gateway.user.id}",))
            conn.execute("LOCK TABLE _meta, requests IN ACCESS EXCLUSIVE MODE")
            held.append(time.monotonic())
            lock_taken.set()
            conn.execute("SELECT pg_sleep(2)")
        held.append(time.monotonic())

    def blocked_call(client, key):
        lock_taken.wait()
        client.with_options(api_key=key).chat.completions.create(model="gpt", messages=say("made meanwhile"))
        return time.monotonic()

    with contextlib.ExitStack() as stack:
        server = start_instance(stack, tmp_path / "instance", tmp_path / "instance.log", workers=1)
        server.wait_healthy(server.url)  # one worker: every call below shares one event loop
        # Made now, not while the streams are timed: an SDK client and a connection
        # take some CPU of this process to make.
        clients = [openai.OpenAI(base_url=server.url + "/v1", api_key=gateway.key, max_retries=0, timeout=20)
                   for _ in range(streams + 1)]
        locker = stack.enter_context(psycopg.connect(database_url, autocommit=True))
        with concurrent.futures.ThreadPoolExecutor(streams + 2) as pool:
            relayed = [pool.submit(stream, number, clients[number]) for number in range(streams)]
            for event in running:  # every stream is under way
                assert event.wait(10)
            # A key the worker has not seen: its call reads the change counter at once
            # (on the worker's event loop), and waits for the lock on it.
            new_key = gateway.create("keys", user=gateway.user.id, label="new")
            locking = pool.submit(hold_locks, locker)
            blocked = pool.submit(blocked_call, clients[-1], new_key)
            arrivals = [future.result() for future in relayed]
            locking.result()
            answered = blocked.result()
        log = server.stop()
    assert "Traceback" not in log, log[-3000:]

    assert answered > held[0] + 1.9  # the worker did wait on the database meanwhile
    sent = {request.json["messages"][-1]["content"]: request.sent for request in gateway.upstream.requests}
    for number, arrived in enumerate(arrivals):
        upstream_times = sent[f"stream {number}"][:chunks]
        assert len(arrived) == len(upstream_times) == chunks
        during = [t for t in upstream_times if held[0] < t < held[1]]
        assert len(during) >= 2 / delay - 3, "the lock was not held while this stream ran"
        drift = [abs((arrived[i] - arrived[i - 1]) - (upstream_times[i] - upstream_times[i - 1]))
                 for i in range(1, chunks)]
        assert max(drift) <= 0.05, (number, max(drift))


@pytest.mark.postgresql
def test_connections_kept_open_are_replaced_after_a_restart_of_postgresql(app, postgres_cluster):
    """The limiter and the writer thread keep their connections open between uses;
    after a restart nothing noticed, the next use replaces a dropped one instead of
    failing. A slot released while the database is down is given back once it is up."""
    parts = services(app)
    key, user = SimpleNamespace(id="k", concurrency=1), SimpleNamespace(id="u")
    ticket = parts.limiter.acquire(key, user)
    write(bump_version)
    with db.connection_context():
        version = read_version()

    postgres_cluster.restart()
    parts.limiter.release(ticket, 0)
    ticket = parts.limiter.acquire(key, user)  # admitted: the slot was given back
    write(bump_version)
    with db.connection_context():
        assert read_version() == version + 1

    postgres_cluster.restart(down=lambda: parts.limiter.release(ticket, 0))  # waits for the database
    assert parts.limiter.acquire(key, user)
    with pytest.raises(Limited):
        parts.limiter.acquire(key, user)


def rows_of(server, token, count, timeout=10):
    """(user message, status) of every request row, once there are `count` of them
    (rows are written in batches, a moment after each call)."""
    deadline = time.monotonic() + timeout
    while True:
        status, rows = rest(server.url, "GET", "/api/collections/requests/records?perPage=100", token=token)
        assert status == 200, rows
        if rows["totalItems"] >= count or time.monotonic() > deadline:
            return sorted((row["user_message"], row["status"]) for row in rows["items"])
        time.sleep(0.1)


@pytest.mark.postgresql
@pytest.mark.slow
def test_the_server_survives_a_restart_of_postgresql(gateway, tmp_path, postgres_cluster):
    """While the database is down, what needs it fails at once with a 503 in the
    caller's format, and what the last catalog can answer is answered; once it is
    back, everything works again in the same worker, and every call's row is there,
    those that ended during the outage too."""
    one_at_a_time = gateway.create("keys", user=gateway.user.id, label="limited", track=True, concurrency=1)
    make_admin()
    hold = threading.Event()
    with contextlib.ExitStack() as stack:
        server = start_instance(stack, tmp_path / "instance", tmp_path / "instance.log", workers=1)
        server.wait_healthy(server.url)  # one worker: the one whose catalog the calls below fill
        status, auth = rest(server.url, "POST", "/api/collections/_superusers/auth-with-password",
                            {"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert status == 200, auth
        unlimited = openai.OpenAI(base_url=server.url + "/v1", api_key=gateway.key, max_retries=0, timeout=20)
        limited = unlimited.with_options(api_key=one_at_a_time)
        messages = anthropic.Anthropic(base_url=server.url, api_key=one_at_a_time, max_retries=0, timeout=20)
        unlimited.chat.completions.create(model="gpt", messages=say("unlimited, before"))
        gateway.upstream.script(chunks=["before ", "after"], gate=hold)
        held = iter(limited.chat.completions.create(model="gpt", messages=say("held across"), stream=True))
        assert next(held).choices[0].delta.content == "before "
        down = {}

        def while_down():
            hold.set()  # the held stream ends now: its row and its slot wait for the database
            down["held"] = "".join(part.choices[0].delta.content or "" for part in held if part.choices)
            started = time.monotonic()
            with pytest.raises(openai.InternalServerError) as refused:  # its limit cannot be checked
                limited.chat.completions.create(model="gpt", messages=say("limited, while down"))
            down["openai"] = refused.value
            with pytest.raises(anthropic.APIStatusError) as refused:
                messages.messages.create(model="gpt", max_tokens=10,
                                         messages=[{"role": "user", "content": "anthropic, while down"}])
            down["anthropic"] = refused.value
            down["rest"] = rest(server.url, "GET", "/api/collections/users/records", token=auth["token"])
            # no limit to check: the last catalog answers
            down["unlimited"] = unlimited.chat.completions.create(model="gpt", messages=say("unlimited, while down"))
            down["took"] = time.monotonic() - started

        postgres_cluster.restart(down=while_down)
        assert down["held"] == "after"
        assert down["took"] < 5  # no call waited for the database to come back
        assert down["openai"].status_code == 503
        assert down["openai"].body["code"] == "database_unavailable"
        assert down["openai"].response.headers["Retry-After"] == "1"
        assert down["anthropic"].status_code == 503
        assert down["anthropic"].body["type"] == "error" and down["anthropic"].body["error"]["message"]
        status, body = down["rest"]
        assert status == 503 and body == {"status": 503, "message": body["message"], "data": {}}
        assert down["unlimited"].choices[0].message.content == "echo: unlimited, while down"

        # Back: the same worker serves every kind of call again, the slot of the stream
        # that ended meanwhile is free, and every call has its one row.
        limited.chat.completions.create(model="gpt", messages=say("limited, after"))
        unlimited.chat.completions.create(model="gpt", messages=say("unlimited, after"))
        status, users = rest(server.url, "GET", "/api/collections/users/records", token=auth["token"])
        assert status == 200 and users["totalItems"] == 1
        expected = {"unlimited, before": 200, "held across": 200, "limited, while down": 503,
                    "anthropic, while down": 503, "unlimited, while down": 200,
                    "limited, after": 200, "unlimited, after": 200}
        assert rows_of(server, auth["token"], len(expected)) == sorted(expected.items())

        # A restart no call noticed: the connections the worker keeps open (its writer's,
        # its limiter's) are found dropped when next used, and replaced, instead of
        # failing the write or the call.
        postgres_cluster.restart()
        status, created = rest(server.url, "POST", "/api/collections/prompts/records",
                               {"name": "brief", "instructions": "Be brief."}, auth["token"])
        assert status == 200, created
        limited.chat.completions.create(model="gpt", messages=say("limited, after a quiet restart"))
        expected["limited, after a quiet restart"] = 200
        assert rows_of(server, auth["token"], len(expected)) == sorted(expected.items())
        log = server.stop()
    assert log.count("Booting worker") == 1, log  # the worker that lived through it
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("missing", ["PROMPTPROXY_SECRET_KEY", "PROMPTPROXY_ENCRYPTION_KEY"])
@pytest.mark.parametrize("command", ["app.py serve", "the Dockerfile's CMD"])
def test_with_postgresql_a_missing_shared_secret_stops_the_start_in_one_line(tmp_path, shared_secrets, missing,
                                                                              command):
    """Every instance on one database must have the same secrets, so none may make
    its own: the server names the missing one in one line and exits, before it even
    tries the database (nothing listens at this URL)."""
    port = free_port()
    argv = ([sys.executable, "app.py", "serve", "--http", f"127.0.0.1:{port}"] if command == "app.py serve"
            else instance_command(port))
    env = server_env(tmp_path / "pb_data", PROMPTPROXY_DATABASE_URL=f"postgresql://promptproxy@127.0.0.1:{port}/none",
                     **shared_secrets)
    del env[missing]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    (line,) = [line for line in output.splitlines() if "cannot start" in line]
    assert line.endswith(f"PromptProxy cannot start: {missing} must be set when PROMPTPROXY_DATABASE_URL is "
                         "(every instance needs the same one)"), output
    assert "Traceback" not in output, output
    assert not (tmp_path / "pb_data").exists()  # nothing made: no secret of its own, no data
