"""Dashboard benchmark: `python bench/dashboard.py [--rows N]`.

Creates a fresh PromptProxy on a temporary data directory, provisions 20 users (one
key each), 2 apis, 6 models and 5 prompts through the same code the admin uses, then
records 1,000,000 request rows spread over the last 30 days (the calls to
the models on the "openai" api priced), two thirds of them for
one of --end-users end users (a chat UI's people, a few of them heavy), through the recorder
(the proxy's own write path: the requests insert and the hourly rollup, in batches
of 500), oldest first, as they would arrive. Then it times:

  - the recorder's writes, and the share of that spent on the rollup (stats.add);
  - stats.summary() for 24h, 7d, 30d and this month (first call and median of 5);
  - GET /_/stats.json through Flask's test client, logged in as an admin;
  - stats.rebuild() from the requests table (the upgrade path), and checks that it
    gives back exactly the table the incremental writes built.

Prints the figures; writes nothing outside its temporary directory.
"""

import argparse
import datetime as dt
import hashlib
import logging
import os
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from promptproxy import create_app
from promptproxy.accounting import stats
from promptproxy.accounting.recorder import Recorder
from promptproxy.auth import superusers
from promptproxy.collections import BY_NAME
from promptproxy.data import records
from promptproxy.data.db import db
from promptproxy.services import services

ADMIN = ("bench@example.com", "benchmark-password")
DAYS = 30
CHUNK = 20_000  # rows queued before each flush (the recorder writes them 500 at a time)


def provision():
    def save(collection, **data):
        return records.save(BY_NAME[collection], data)[0]

    with db.connection_context():
        users = [save("users", name=f"user {i:02d}", email=f"user{i:02d}@example.com") for i in range(20)]
        keys = {u.id: save("keys", user=u.id, label="bench").id for u in users}
        apis = [save("apis", name=name, base_url=f"http://127.0.0.1:{9000 + i}/v1")
                for i, name in enumerate(["openai", "local"])]
        models = [save("models", api=apis[i % 2].id, model=f"model-{i}", name=f"model-{i}",
                       **({"input_price": 2.5, "output_price": 10} if i % 2 == 0 else {})) for i in range(6)]
        prompts = [save("prompts", name=f"prompt-{i}", instructions="Be brief.") for i in range(5)]
    return users, keys, models, prompts


def rows(count, users, keys, models, prompts, rng, end_users=500):
    """Request rows as the proxy builds them, oldest first, over the last DAYS days.
    Users and end users are uneven (a few heavy ones); models, prompts and apis are
    mixed freely; a third of the calls name no end user."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    start = now - dt.timedelta(days=DAYS)
    span = (now - start).total_seconds()
    user_weights = [1 / (i + 1) ** 0.7 for i in range(len(users))]
    prompt_choices = [p.id for p in prompts] + [None]
    people = [f"person{i}@example.com" for i in range(end_users)]
    people_weights = [1 / (i + 1) ** 0.8 for i in range(end_users)]
    step = span / count
    for i in range(count):
        user = rng.choices(users, user_weights)[0]
        model = rng.choice(models)
        status = 200 if rng.random() > 0.04 else rng.choice((400, 429, 500, 502))
        inp, out = rng.randrange(20, 4000), (rng.randrange(1, 1200) if status == 200 else 0)
        yield {
            "created": start + dt.timedelta(seconds=i * step + rng.random() * step),
            "user": user.id, "key": keys[user.id], "api": model.api, "model": model.id,
            "prompt": rng.choice(prompt_choices), "model_ref": model.name,
            "end_user": rng.choices(people, people_weights)[0] if people and rng.random() < 2 / 3 else None,
            "endpoint": "/v1/chat/completions", "stream": rng.random() < 0.5, "status": status,
            "error": None if status == 200 else "upstream error",
            "input_tokens": inp, "output_tokens": out, "total_tokens": inp + out,
            "cost": (inp * 2_500 + out * 10_000) / 10 ** 9 if model.input_price else 0,  # as costs.amount writes it
            "latency_ms": max(1, round(rng.lognormvariate(6.6, 0.9))),
            "ttfb_ms": max(1, round(rng.lognormvariate(5.5, 0.6))),
        }


def table_digest():
    digest = hashlib.sha256()
    for row in db.execute_sql(f'SELECT * FROM "{stats.TABLE}" ORDER BY "hour", {stats._quoted(stats.DIMENSIONS)}'):
        digest.update(repr(row).encode())
    return digest.hexdigest()


def login(client):
    html = client.get("/_/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    response = client.post("/_/login", data={"csrf_token": token, "email": ADMIN[0], "password": ADMIN[1]})
    assert response.status_code == 302, response.status_code


def timed(fn, repeat=5):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return times[0], statistics.median(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--end-users", type=int, default=500, help="how many end users call (0: none)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    logging.basicConfig(level=logging.ERROR)  # no set-up link or request logs in the figures

    with tempfile.TemporaryDirectory(prefix="promptproxy-dashboard-") as data_dir:
        app = create_app({"DATA_DIR": data_dir, "CATALOG_TTL": 0})
        services(app).recorder.stop()  # this run writes through its own recorder
        with db.connection_context():
            superusers.upsert(*ADMIN)
        users, keys, models, prompts = provision()

        # -- write ------------------------------------------------------------------
        recorder = Recorder(interval=0)  # not started: flushed here, in batches of 500
        rollup_seconds = 0.0
        add = stats.add

        def timed_add(batch):
            nonlocal rollup_seconds
            started = time.perf_counter()
            add(batch)
            rollup_seconds += time.perf_counter() - started

        stats.add = timed_add
        write_seconds = generate_seconds = 0.0
        try:
            pending = 0
            started = time.perf_counter()
            for row in rows(args.rows, users, keys, models, prompts, rng, args.end_users):
                recorder.record(row)
                pending += 1
                if pending == CHUNK:
                    generated = time.perf_counter()
                    generate_seconds += generated - started
                    recorder.flush()
                    started = time.perf_counter()
                    write_seconds += started - generated
                    pending = 0
            generated = time.perf_counter()
            generate_seconds += generated - started
            recorder.flush()
            write_seconds += time.perf_counter() - generated
        finally:
            stats.add = add
        recorder.stop()  # closes its writer thread's connection

        with db.connection_context():
            stored = BY_NAME["requests"].model.select().count()
            detail = db.execute_sql(f'SELECT count(*) FROM "{stats.TABLE}" WHERE {stats.DETAIL}').fetchone()[0]
            rollups = db.execute_sql(f'SELECT count(*) FROM "{stats.TABLE}" WHERE {stats.IS_ROLLUP}').fetchone()[0]
        size = sum(f.stat().st_size for f in Path(data_dir).glob("data.db*"))

        print(f"PromptProxy dashboard benchmark: {stored:,} request rows over {DAYS} days, "
              f"{len(users)} users, {args.end_users} end users, {len(models)} models, {len(prompts)} prompts, 2 apis; "
              f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}")
        print(f"  database: {size / 2**20:,.0f} MiB; rollup rows: {detail:,} detail + {rollups:,} roll-ups")
        print(f"  recorder writes: {write_seconds:.1f} s for {stored:,} rows "
              f"({write_seconds / stored * 1e6:.1f} us/row, batches of 500); "
              f"of which rollup (stats.add): {rollup_seconds:.1f} s "
              f"({rollup_seconds / write_seconds:.0%}, {rollup_seconds / stored * 1e6:.1f} us/row)")
        print(f"  (generating the rows took {generate_seconds:.1f} s, not counted)")

        # -- read -------------------------------------------------------------------
        print("  summary(), in-process (first call / median of 5):")
        for range_ in stats.RANGES:
            with db.connection_context():
                first, median, result = timed(lambda range_=range_: stats.summary(range_))
            print(f"    {range_:>4}: {first * 1000:7.1f} ms / {median * 1000:7.1f} ms   "
                  f"({result['totals']['requests']:,} requests, {len(result['series'])} buckets)")

        client = app.test_client()
        login(client)
        print("  GET /_/stats.json, Flask test client, logged in (first / median of 5):")
        for range_ in stats.RANGES:
            def get(range_=range_):
                response = client.get(f"/_/stats.json?range={range_}")
                assert response.status_code == 200, response.status_code
                return response
            first, median, response = timed(get)
            print(f"    {range_:>4}: {first * 1000:7.1f} ms / {median * 1000:7.1f} ms   "
                  f"({len(response.data):,} bytes)")
        first, median, response = timed(lambda: client.get("/_/"))
        print(f"  GET /_/ (dashboard page): {first * 1000:.1f} ms / {median * 1000:.1f} ms")

        # -- rebuild ----------------------------------------------------------------
        with db.connection_context():
            before = table_digest()
            started = time.perf_counter()
            counted = stats.rebuild()
            rebuild_seconds = time.perf_counter() - started
            same = table_digest() == before
        print(f"  rebuild() from the requests table: {rebuild_seconds:.1f} s for {counted:,} rows; "
              f"identical to the incremental rollup: {same}")
        if not same:
            sys.exit("rebuild() and the incremental rollup differ")


if __name__ == "__main__":
    main()
