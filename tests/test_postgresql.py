"""PostgreSQL under gevent: the driver never blocks the event loop, a lock held in
the database stalls no stream, a restart of the database is survived, and the
server refuses to start without the secrets every instance must share."""

import json
import subprocess
import sys

import pytest

from .servers import ROOT

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
