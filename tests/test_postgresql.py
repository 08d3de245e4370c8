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

import openai
import psycopg
import pytest

from .servers import ROOT, start_instance

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
