"""The usage dashboard: the hourly rollup written with every batch of request rows,
its rebuild from the requests table, the figures the dashboard shows, and the pages."""

import csv
import datetime as dt
import io
import itertools
import math
import random
import re
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import openai
import pytest

import promptproxy
from promptproxy import create_app
from promptproxy.accounting import stats
from promptproxy.accounting.costs import NANOS, amount_text
from promptproxy.collections import BY_NAME
from promptproxy.data import records
from promptproxy.data.db import db
from promptproxy.services import services

from .conftest import make_admin

NOW = dt.datetime(2026, 3, 15, 13, 25, 7)  # mid-hour, mid-day: every bucket edge is exercised
CHART = Path(promptproxy.__file__).parent / "admin" / "static" / "chart.umd.min.js"


# -- a realistic mix of request rows -------------------------------------------------

@pytest.fixture
def records_(app):
    """Users (more than the top 10), apis, models and prompts, made as the admin makes them."""
    def save(collection, **data):
        return records.save(BY_NAME[collection], data)[0]

    with db.connection_context():
        users = [save("users", name=f"User {i:02d}", email=f"user{i:02d}@example.com") for i in range(13)]
        apis = [save("apis", name=name, base_url="http://127.0.0.1:9/v1") for name in ("openai", "local")]
        models = [save("models", api=apis[i % 2].id, model=f"m-{i}", name=f"model {i}") for i in range(4)]
        prompts = [save("prompts", name=f"prompt {i}", instructions="Be brief.") for i in range(3)]
    return {"users": users, "apis": apis, "models": models, "prompts": prompts}


# End users are whatever clients send: more than the top 10, and "*", which is how the
# rollup marks "all" of the other dimensions
END_USERS = [None] * 8 + ["*", "alice@example.com", "bob", "Zoë Ünïcode", "**", "all"] + \
    [f"user-{i}" for i in range(12)]


def mix(records_, count=1500, seed=7, now=NOW):
    """Request rows as the proxy builds them: uneven users, models with their api or
    none (an unknown model), prompts or none, end users or none, errors of several
    kinds, missing usage, latencies from 0 ms to past the last bin edge, and times
    over 40 days plus a few on the edges of the dashboard's windows."""
    rng, costs = random.Random(seed), random.Random(-seed)  # costs apart: the other figures stay as they were
    users = records_["users"]
    weights = [1 / (i + 1) for i in range(len(users))]
    rows = []
    times = [now - dt.timedelta(seconds=rng.uniform(0, 40 * 86400)) for _ in range(count)]
    hour_start = now.replace(minute=0, second=0, microsecond=0)
    times += [hour_start, hour_start - dt.timedelta(hours=23), hour_start - dt.timedelta(hours=23, microseconds=1),
              now + dt.timedelta(hours=2)]  # clocks drift: a row from the future is kept but not shown
    for created in times:
        model = rng.choice(records_["models"] + [None])
        status = rng.choice([200] * 12 + [400, 404, 429, 499, 500, 502])
        latency = rng.choice([None, 0, 3, 10, 11, 299_999, 300_000, 1_000_000] +
                             [round(rng.lognormvariate(6.5, 1.2)) for _ in range(20)])
        rows.append({
            "created": created, "user": rng.choices(users, weights)[0].id, "key": None,
            "api": model.api if model else None, "model": model.id if model else None,
            "prompt": (rng.choice(records_["prompts"]).id if rng.random() < 0.6 else None),
            "model_ref": "x", "end_user": rng.choice(END_USERS),
            "endpoint": "/v1/chat/completions", "stream": rng.random() < 0.5,
            "status": status, "input_tokens": rng.choice([None, rng.randrange(1, 5000)]),
            "output_tokens": rng.choice([None, rng.randrange(0, 2000)]),
            # as the proxy writes it: nano-units / NANOS; up to 0.05 a call, so an hour's sum passes 2 ** 31 nanos
            "cost": costs.choice([None, 0, costs.randrange(1, 1000) / NANOS, costs.randrange(1, 5 * 10 ** 7) / NANOS]),
            "latency_ms": latency,
        })
    rng.shuffle(rows)  # batches need not be in time order
    return rows


def record(app, rows):
    """Through the recorder, as the proxy does: batches of up to 500 rows."""
    recorder = services(app).recorder
    for row in rows:
        recorder.record(dict(row))
    recorder.flush()


def stored_requests():
    model = BY_NAME["requests"].model
    with db.connection_context():
        return list(model.select().dicts())


def table():
    with db.connection_context():
        cursor = db.execute_sql(f'SELECT * FROM "{stats.TABLE}" ORDER BY "hour", {stats._quoted(stats.DIMENSIONS)}')
        columns = [c[0] for c in cursor.description]
        return [dict(zip(columns, row)) for row in cursor]


# -- the expected figures, computed the slow, obvious way ----------------------------

def nanos(row):
    """A row's cost in nano-units: what the proxy worked out before writing it as currency."""
    return round((row["cost"] or 0) * NANOS)


def epoch_hour(created):
    return int(created.replace(tzinfo=dt.UTC).timestamp()) // 3600


def bin_index(latency):
    for i, edge in enumerate(stats.EDGES):
        if latency < edge:
            return i
    return stats.BINS - 1


def bin_edges(latency):
    """The (low, high) edges in ms of the bin that holds this latency."""
    i = bin_index(latency)
    return (stats.EDGES[i - 1] if i else 0), (stats.EDGES[i] if i < stats.BINS - 1 else math.inf)


def expected_detail(rows):
    groups = defaultdict(lambda: dict.fromkeys(stats.VALUES, 0))
    for row in rows:
        key = (epoch_hour(row["created"]),) + tuple(row[d] or "" for d in stats.DIMENSIONS)
        g = groups[key]
        g["requests"] += 1
        g["errors"] += (row["status"] or 0) >= 400
        g["input_tokens"] += row["input_tokens"] or 0
        g["output_tokens"] += row["output_tokens"] or 0
        g["cost"] += nanos(row)
        if row["latency_ms"] is not None:
            g[f"lat{bin_index(row['latency_ms'])}"] += 1
    return {key: dict(values) for key, values in groups.items()}


def split(rollup):
    """Detail rows and roll-ups: every roll-up has "*" as its user or its model."""
    detail, rollups = {}, {}
    for row in rollup:
        key = (row["hour"],) + tuple(row[d] for d in stats.DIMENSIONS)
        values = {c: row[c] for c in stats.VALUES}
        (rollups if "*" in (row["user"], row["model"]) else detail)[key] = values
    return detail, rollups


def true_percentile(latencies, q):
    ordered = sorted(latencies)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_close_to(estimate, latencies, q):
    """The histogram estimate is within the width of the bin holding the true value."""
    if not latencies:
        assert estimate is None
        return
    truth = true_percentile(latencies, q)
    low, high = bin_edges(truth)
    if math.isinf(high):
        assert estimate == low
    else:
        assert abs(estimate - truth) <= high - low, (q, estimate, truth, (low, high))
        assert low <= estimate <= high


def in_window(rows, range_, now=NOW):
    size, count = stats.RANGES[range_]
    count = count or now.day  # this month: its days so far
    current = epoch_hour(now)
    first = current - current % size - (count - 1) * size
    chosen = defaultdict(list)
    for row in rows:
        index = (epoch_hour(row["created"]) - first) // size
        if 0 <= index < count:
            chosen[index].append(row)
    return first, size, count, chosen


def figures(rows):
    latencies = [r["latency_ms"] for r in rows if r["latency_ms"] is not None]
    inp = sum(r["input_tokens"] or 0 for r in rows)
    out = sum(r["output_tokens"] or 0 for r in rows)
    return {"requests": len(rows), "errors": sum((r["status"] or 0) >= 400 for r in rows),
            "input_tokens": inp, "output_tokens": out, "tokens": inp + out,
            "cost": amount_text(sum(nanos(r) for r in rows))}, latencies


# -- the rollup ----------------------------------------------------------------

def test_rollup_matches_the_request_rows(app, records_):
    record(app, mix(records_))
    raw = stored_requests()
    assert len(raw) == 1504
    detail, rollups = split(table())
    assert detail == expected_detail(raw)

    # Each roll-up is the sum of its detail rows: the hour, and per user, model, prompt,
    # api and end user ("all" end users is a control character: an end user can be "*"),
    # and per end user and day (api "**", the day's first hour).
    sums = defaultdict(lambda: dict.fromkeys(stats.VALUES, 0))
    every = stats.ALL_END_USERS
    for (hour, user, model, prompt, api, end_user), values in detail.items():
        for key in ((hour, "*", "*", "*", "*", every), (hour, user, "*", "*", "*", every),
                    (hour, "*", model, "*", "*", every), (hour, "*", "*", prompt, "*", every),
                    (hour, "*", "*", "*", api, every), (hour, "*", "*", "*", "*", end_user),
                    (hour - hour % 24, "*", "*", "*", "**", end_user)):
            for column, value in values.items():
                sums[key][column] += value
    assert rollups == {key: dict(values) for key, values in sums.items()}


def test_history_keeps_a_deleted_users_id(app, records_):
    record(app, mix(records_, count=400))
    gone = records_["users"][0]
    before = table()
    with db.connection_context():
        records.delete(BY_NAME["users"], gone)
    assert table() == before  # deleting a record leaves its history alone
    record(app, mix(records_, count=100, seed=8))  # calls of the user that were under way

    raw = stored_requests()
    detail, _ = split(table())
    assert detail == expected_detail(raw)
    assert any(key[1] == gone.id for key in detail)

    summary = stats.summary("30d", now=NOW)
    top = {e["id"]: e for e in summary["breakdowns"]["user"]["top"]}
    assert top[gone.id]["name"] == gone.id and top[gone.id]["deleted"] is True
    _, _, _, chosen = in_window(raw, "30d")
    assert top[gone.id]["requests"] == sum(r["user"] == gone.id for rows in chosen.values() for r in rows)
    kept = records_["users"][1]
    assert top[kept.id]["name"] == "User 01" and top[kept.id]["deleted"] is False


def test_rebuild_equals_the_incremental_rollup(app, records_):
    record(app, mix(records_))
    incremental = table()
    with db.connection_context():
        assert stats.rebuild() == 1504
    assert table() == incremental


def test_an_existing_database_is_backfilled_at_start(app, records_, data_dir):
    record(app, mix(records_, count=600))
    incremental = table()
    services(app).recorder.stop()
    with db.connection_context():  # as before the rollup
        db.execute_sql(f'DROP TABLE "{stats.TABLE}"')

    again = create_app({"DATA_DIR": str(data_dir), "CATALOG_TTL": 0})
    try:
        assert table() == incremental
        with db.connection_context():
            assert stats.backfill() == 0  # not empty any more: left alone
        assert table() == incremental
    finally:
        services(again).recorder.stop()


def test_upgrading_rebuilds_the_rollup_with_end_users(app, records_, data_dir):
    """Migration 6 gives the rollup its end-user dimension: a database whose rollup
    has the old key (no end user) gets it rebuilt from its request rows at start."""
    record(app, mix(records_, count=600))
    incremental = table()
    services(app).recorder.stop()
    columns = ", ".join(f'"{c}" INTEGER NOT NULL DEFAULT 0' for c in stats.VALUES)
    with db.connection_context(), db.atomic():  # as migration 5 left it
        db.execute_sql(f'DROP TABLE "{stats.TABLE}"')
        db.execute_sql(f'CREATE TABLE "{stats.TABLE}" ("hour" INTEGER NOT NULL, "user" TEXT NOT NULL, '
                       '"model" TEXT NOT NULL, "prompt" TEXT NOT NULL, "api" TEXT NOT NULL, '
                       f'{columns}, PRIMARY KEY ("hour", "user", "model", "prompt", "api"))')
        db.execute_sql(f'INSERT INTO "{stats.TABLE}" ("hour", "user", "model", "prompt", "api", "requests") '
                       "VALUES (1, '*', '*', '*', '*', 99)")
        db.execute_sql('DELETE FROM "_migrations" WHERE "version" = 6')

    again = create_app({"DATA_DIR": str(data_dir), "CATALOG_TTL": 0})
    try:
        assert table() == incremental
        with db.connection_context():
            applied = db.execute_sql('SELECT "name" FROM "_migrations" WHERE "version" = 6').fetchone()
        assert applied == ("request_stats_by_end_user",)
    finally:
        services(again).recorder.stop()


def test_upgrading_adds_the_cost_to_the_rollup(app, records_, data_dir):
    """A migration gives the rollup its cost: a database whose rollup has none gets it
    rebuilt from its request rows at start, with the cost of the calls made before."""
    from promptproxy.data.migrations import MIGRATIONS, request_stats_cost

    version = MIGRATIONS.index(request_stats_cost) + 1
    rows = mix(records_, count=600)
    record(app, rows)
    incremental = table()
    assert sum(r["cost"] for r in incremental) > 0
    services(app).recorder.stop()
    key = ", ".join(f'"{d}" TEXT NOT NULL' for d in stats.DIMENSIONS)
    columns = ", ".join(f'"{c}" INTEGER NOT NULL DEFAULT 0' for c in stats.VALUES if c != "cost")
    with db.connection_context(), db.atomic():  # as the migration before left it
        db.execute_sql(f'DROP TABLE "{stats.TABLE}"')
        db.execute_sql(f'CREATE TABLE "{stats.TABLE}" ("hour" INTEGER NOT NULL, {key}, {columns}, '
                       f'PRIMARY KEY ("hour", {stats._quoted(stats.DIMENSIONS)}))')
        db.execute_sql(f'INSERT INTO "{stats.TABLE}" ("hour", {stats._quoted(stats.DIMENSIONS)}, "requests") '
                       "VALUES (1, '*', '*', '*', '*', '', 99)")
        db.execute_sql(f'DELETE FROM "_migrations" WHERE "version" = {version}')

    again = create_app({"DATA_DIR": str(data_dir), "CATALOG_TTL": 0})
    try:
        assert table() == incremental
        with db.connection_context():
            applied = db.execute_sql(f'SELECT "name" FROM "_migrations" WHERE "version" = {version}').fetchone()
        assert applied == ("request_stats_cost",)
    finally:
        services(again).recorder.stop()


def test_add_runs_in_its_own_transaction_when_called_alone(app):
    with db.connection_context():
        stats.add([{"created": NOW, "user": "u1", "status": 500, "latency_ms": 12, "input_tokens": 5}])
        stats.add([])
    detail, rollups = split(table())
    hour = epoch_hour(NOW)
    assert detail == {(hour, "u1", "", "", "", ""): {**dict.fromkeys(stats.VALUES, 0), "requests": 1,
                                                     "errors": 1, "input_tokens": 5, "lat1": 1}}
    assert len(rollups) == 7


# -- the summary ----------------------------------------------------------------

@pytest.mark.parametrize("range_", list(stats.RANGES))
def test_summary_totals_buckets_and_breakdowns(app, records_, range_):
    rows = mix(records_, count=2500)
    record(app, rows)
    summary = stats.summary(range_, now=NOW)
    first, size, count, chosen = in_window(rows, range_)
    assert summary["range"] == range_ and summary["bucket_hours"] == size and summary["has_requests"]
    assert summary["start"] == dt.datetime.fromtimestamp(first * 3600, dt.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    window = [row for bucket in chosen.values() for row in bucket]
    assert window and len(window) < len(rows)

    counts, latencies = figures(window)
    totals = summary["totals"]
    assert {k: totals[k] for k in counts} == counts
    assert totals["error_rate"] == round(counts["errors"] / counts["requests"], 4)
    assert_close_to(totals["p50_ms"], latencies, 0.50)
    assert_close_to(totals["p95_ms"], latencies, 0.95)

    assert len(summary["series"]) == count
    for index, bucket in enumerate(summary["series"]):
        start = dt.datetime.fromtimestamp((first + index * size) * 3600, dt.UTC)
        assert bucket["start"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
        counts, latencies = figures(chosen.get(index, []))
        assert {k: bucket[k] for k in counts} == counts, index
        assert_close_to(bucket["p50_ms"], latencies, 0.50)
        assert_close_to(bucket["p95_ms"], latencies, 0.95)

    names = {"user": {u.id: u.name for u in records_["users"]},
             "model": {m.id: m.name for m in records_["models"]},
             "prompt": {p.id: p.name for p in records_["prompts"]},
             "api": {a.id: a.name for a in records_["apis"]},
             "end_user": {e: e for e in END_USERS if e}}
    for dimension in stats.DIMENSIONS:
        assert_breakdown(summary["breakdowns"][dimension], dimension, window, names[dimension])
    assert summary["breakdowns"]["user"]["others"]["count"] > 0  # 13 users: the top 10 and the rest
    assert summary["breakdowns"]["end_user"]["others"]["count"] > 0


def assert_breakdown(block, dimension, window, names):
    """The top 10 of `dimension` over the rows in the window, and the others summed."""
    groups = defaultdict(list)
    for row in window:
        groups[row[dimension] or ""].append(row)
    ranked = sorted(groups, key=lambda i: (-len(groups[i]), i))
    assert [e["id"] for e in block["top"]] == ranked[:10]
    for entry in block["top"]:
        counts, latencies = figures(groups[entry["id"]])
        assert {k: entry[k] for k in counts} == counts
        assert entry["name"] == (names[entry["id"]] if entry["id"] else "(none)")
        assert entry["deleted"] is False
        assert_close_to(entry["p50_ms"], latencies, 0.50)
    rest = [row for i in ranked[10:] for row in groups[i]]
    counts, _ = figures(rest)
    assert block["others"] == {"count": len(ranked[10:]), **counts}


@pytest.mark.parametrize("now", [NOW.replace(hour=23, minute=59), NOW.replace(hour=0, minute=0), NOW],
                         ids=["a-whole-day", "midnight", "mid-day"])
def test_end_users_are_summed_from_days_and_hours(app, records_, now):
    """End users are read from whole days' roll-ups where the range covers days whole,
    and from the hours' at its edges: whatever the time, each hour is counted once."""
    rows = mix(records_, count=1200, now=now)
    record(app, rows)
    for range_ in stats.RANGES:
        _, _, _, chosen = in_window(rows, range_, now)
        window = [row for bucket in chosen.values() for row in bucket]
        block = stats.summary(range_, now=now)["breakdowns"]["end_user"]
        assert_breakdown(block, "end_user", window, {e: e for e in END_USERS if e})


@pytest.mark.parametrize("now", [NOW, dt.datetime(2026, 4, 1, 0, 10), dt.datetime(2026, 3, 31, 23, 59, 59)],
                         ids=["mid-month", "first-hour", "last-second"])
def test_this_month_is_its_utc_days_until_today(app, records_, now):
    """The month's figures are those of the rows made since its first midnight (UTC),
    one bucket a day until today's, whatever the time of the month."""
    rows = mix(records_, count=1500, now=now)
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    edges = [first, first - dt.timedelta(microseconds=1), first + dt.timedelta(days=1, microseconds=-1)]
    rows += [dict(rows[i], created=created) for i, created in enumerate(edges)]
    record(app, rows)
    summary = stats.summary("month", now=now)

    tomorrow = dt.datetime.combine(now.date() + dt.timedelta(days=1), dt.time())
    month = [row for row in rows if first <= row["created"] < tomorrow]
    assert month and len(month) < len(rows)
    counts, _ = figures(month)
    assert {k: summary["totals"][k] for k in counts} == counts
    assert summary["start"] == first.strftime("%Y-%m-%dT%H:%M:%SZ") and summary["bucket_hours"] == 24
    assert [bucket["start"][:10] for bucket in summary["series"]] == [
        f"{now:%Y-%m}-{day:02d}" for day in range(1, now.day + 1)]
    for day, bucket in enumerate(summary["series"], start=1):
        counts, _ = figures([row for row in month if row["created"].day == day])
        assert {k: bucket[k] for k in counts} == counts, day


# -- the spend export ----------------------------------------------------------------

def expected_spend(rows, range_, names, currency="USD"):
    """The CSV's lines, worked out from the rows in the range: per user and UTC day."""
    _, _, _, chosen = in_window(rows, range_)
    groups = defaultdict(list)
    for row in (row for bucket in chosen.values() for row in bucket):
        groups[row["created"].date().isoformat(), row["user"]].append(row)
    lines = [["user_id", "user", "date", "requests", "input_tokens", "output_tokens", "cost", "currency"]]
    for (day, user), group in sorted(groups.items()):
        counts, _ = figures(group)
        lines.append([user, names.get(user, ""), day, str(counts["requests"]), str(counts["input_tokens"]),
                      str(counts["output_tokens"]), counts["cost"], currency])
    return lines


@pytest.mark.parametrize("range_", list(stats.RANGES))
def test_spend_per_user_and_day_as_csv(app, admin, records_, range_, monkeypatch):
    monkeypatch.setattr(stats, "utcnow", lambda: NOW)
    users = records_["users"]
    with db.connection_context():  # a name a spreadsheet would run, and a user deleted since
        records.save(BY_NAME["users"], {"name": "=HYPERLINK(\"http://x.example\")"}, users[1])
        records.delete(BY_NAME["users"], users[2])
    rows = mix(records_, count=2500)
    record(app, rows)

    response = admin.get(f"/_/spend.csv?range={range_}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == f'attachment; filename="spend-{range_}.csv"'
    lines = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    names = {u.id: u.name for u in users if u is not users[2]}
    names[users[1].id] = "'=HYPERLINK(\"http://x.example\")"
    assert lines == expected_spend(rows, range_, names)
    assert len(lines) > 10


def test_the_spend_export_defaults_to_this_month_and_needs_a_login(app, admin, records_, monkeypatch):
    monkeypatch.setattr(stats, "utcnow", lambda: NOW)
    rows = mix(records_, count=300)
    record(app, rows)
    response = app.test_client().get("/_/spend.csv")  # no session
    assert response.status_code == 302 and "/_/login" in response.headers["Location"]
    names = {u.id: u.name for u in records_["users"]}
    lines = list(csv.reader(io.StringIO(admin.get("/_/spend.csv").get_data(as_text=True))))
    assert lines == expected_spend(rows, "month", names)
    response = admin.get("/_/spend.csv?range=1y")
    assert response.status_code == 302 and response.headers["Location"].endswith("/_/")


def test_summary_with_no_requests(app):
    for range_, (_size, count) in stats.RANGES.items():
        summary = stats.summary(range_, now=NOW)
        assert summary["has_requests"] is False
        assert summary["totals"] == {"requests": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0,
                                     "tokens": 0, "cost": "0", "error_rate": 0.0, "p50_ms": None, "p95_ms": None}
        assert len(summary["series"]) == (count or NOW.day)
        assert all(b["requests"] == 0 and b["p95_ms"] is None for b in summary["series"])
        assert all(block == {"top": [], "others": {"count": 0, "requests": 0, "errors": 0, "input_tokens": 0,
                                                   "output_tokens": 0, "tokens": 0, "cost": "0"}}
                   for block in summary["breakdowns"].values())


def test_summary_rejects_an_unknown_range(app):
    with pytest.raises(ValueError):
        stats.summary("1y")


def test_percentile_estimates_stay_within_a_bin(app):
    rng = random.Random(3)
    for _ in range(200):
        latencies = [round(rng.lognormvariate(rng.uniform(2, 11), rng.uniform(0.1, 2)))
                     for _ in range(rng.randrange(1, 60))]
        histogram = [0] * stats.BINS
        for latency in latencies:
            histogram[bin_index(latency)] += 1
        for q in (0.5, 0.95, 0.99):
            assert_close_to(stats.percentile(histogram, q), latencies, q)


def test_bin_edges_are_log_spaced(app):
    edges = stats.EDGES
    assert len(edges) == stats.BINS - 1 and len(stats.LATENCY) == stats.BINS
    assert edges[0] == 10 and edges[-1] == 300_000
    ratios = [b / a for a, b in itertools.pairwise(edges)]
    assert max(ratios) / min(ratios) < 1.1


# -- calls through the proxy show up ------------------------------------------------

def test_calls_through_the_proxy_are_counted(gateway, admin):
    gateway.model = gateway.update("models", gateway.model, input_price=2.5, output_price=10)
    client = gateway.client()
    client.chat.completions.create(model="gpt:pirate", messages=[{"role": "user", "content": "hi"}])
    client.chat.completions.create(model="llama3:8b", messages=[{"role": "user", "content": "hello you"}])
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    rows = gateway.rows(3)

    data = admin.get("/_/stats.json?range=24h").json
    totals = data["totals"]
    assert totals["requests"] == 3 and totals["errors"] == 1
    assert totals["input_tokens"] == sum(r.input_tokens or 0 for r in rows)
    assert totals["output_tokens"] == sum(r.output_tokens or 0 for r in rows) > 0
    assert totals["cost"] == amount_text(sum(round((r.cost or 0) * NANOS) for r in rows)) != "0"
    assert totals["p50_ms"] is not None
    assert data["series"][-1]["requests"] == 3
    by = data["breakdowns"]
    assert [(e["name"], e["requests"]) for e in by["user"]["top"]] == [("Tom", 3)]
    assert sorted((e["name"], e["requests"], e["errors"]) for e in by["model"]["top"]) == [
        ("(none)", 1, 1), ("gpt", 1, 0), ("llama3:8b", 1, 0)]
    assert sorted((e["name"], e["requests"]) for e in by["prompt"]["top"]) == [("(none)", 2), ("pirate", 1)]


# -- the pages ----------------------------------------------------------------------

def test_the_dashboard_and_its_figures_need_a_login(client, app):
    assert client.get("/_/stats.json").status_code == 401
    make_admin()
    response = client.get("/_/")
    assert response.status_code == 302 and "/_/login" in response.headers["Location"]
    assert client.get("/_/stats.json?range=7d").status_code == 401


def test_the_dashboard_renders(admin):
    html = admin.get("/_/").get_data(as_text=True)
    assert 'id="pp-sidebar"' in html and 'id="dashboard"' in html
    for element in ("total-requests", "total-errors", "total-tokens", "total-cost", "total-p50", "total-p95",
                    "chart-requests", "chart-tokens", "chart-cost", "chart-latency", "spend-csv",
                    "top-user", "top-model", "top-prompt", "top-api", "top-end_user", "dash-empty"):
        assert f'id="{element}"' in html, element
    assert re.findall(r'data-range="([^"]+)"', html) == ["24h", "7d", "30d", "month"]
    for table in ("users", "keys", "apis", "models", "prompts", "requests"):
        assert f'href="/_/{table}/"' in html
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', html)
    assert scripts and all(src.startswith("/") for src in scripts)  # nothing from elsewhere
    assert re.search(r'<script[^>]*src="/_/assets/chart\.umd\.min\.js\?v=[0-9a-f]+"', html)


@pytest.mark.parametrize("range_", list(stats.RANGES))
def test_stats_json(admin, range_):
    response = admin.get(f"/_/stats.json?range={range_}")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    data = response.json
    assert data["range"] == range_ and data["totals"]["requests"] == 0
    assert len(data["series"]) == (stats.RANGES[range_][1] or dt.datetime.now(dt.UTC).day)
    assert set(data["breakdowns"]) == {"user", "model", "prompt", "api", "end_user"}


def test_stats_json_defaults_to_a_day_and_refuses_other_ranges(admin):
    assert admin.get("/_/stats.json").json["range"] == "24h"
    response = admin.get("/_/stats.json?range=1y")
    assert response.status_code == 400 and "24h" in response.json["error"]


def test_chart_js_is_served_from_promptproxy(client):
    response = client.get("/_/assets/chart.umd.min.js?v=1")
    assert response.status_code == 200
    assert response.mimetype in ("text/javascript", "application/javascript")
    body = response.data
    assert body == CHART.read_bytes()
    header = body[:200].decode()
    assert header.startswith("/*!\n * Chart.js v4.") and "Released under the MIT License" in header
    cache = response.headers["Cache-Control"]
    assert "max-age=31536000" in cache and "public" in cache
    assert client.get("/_/assets/chart.umd.min.js.map").status_code == 404
    assert client.get("/_/assets/..%2Fhome.py").status_code == 404


def test_a_fresh_install_shows_the_setup_steps_still_missing(admin):
    from promptproxy.collections import BY_NAME
    from promptproxy.data import records
    from promptproxy.data.db import db

    page = admin.get("/_/").get_data(as_text=True)
    assert 'id="setup-steps"' in page
    for table in ("users", "keys", "apis", "models", "prompts"):
        assert f'data-step="{table}" data-done="no"' in page
        assert f'href="/_/{table}/new/' in page
    with db.connection_context():
        records.save(BY_NAME["users"], {"name": "Tom"})
    page = admin.get("/_/").get_data(as_text=True)
    assert 'data-step="users" data-done="yes"' in page and 'data-step="keys" data-done="no"' in page
    with db.connection_context():
        tom = BY_NAME["users"].model.get()
        records.save(BY_NAME["keys"], {"user": tom.id})
        api, _ = records.save(BY_NAME["apis"], {"name": "Local", "base_url": "http://127.0.0.1:9/v1"})
        records.save(BY_NAME["models"], {"api": api.id, "model": "m"})
        records.save(BY_NAME["prompts"], {"instructions": "Be brief."})
    assert 'id="setup-steps"' not in admin.get("/_/").get_data(as_text=True)


# -- a million rows -----------------------------------------------------------------

MILLION = 1_000_000


def insert_rows_in_bulk(records_, count, now=NOW, seed=11):
    """`count` request rows over 40 days before `now` (and a few hours after it),
    written straight into the requests table in large batches, as a busy instance
    would have them; returns what each range should show, summed here in Python from
    the rows as they are written: per range, the totals [requests, input tokens,
    output tokens, cost] and, per dimension, {id: [requests, cost]}."""
    rng = random.Random(seed)
    requests = BY_NAME["requests"].model
    columns = ("id", "created", "updated", "user", "api", "model", "prompt", "end_user",
               "status", "input_tokens", "output_tokens", "total_tokens", "cost", "latency_ms")
    insert = (f'INSERT INTO "{requests._meta.table_name}" ({stats._quoted(columns)}) '
              f'VALUES ({", ".join([db.param] * len(columns))})')
    as_time = (lambda t: t) if db.param == "%s" else (lambda t: t.isoformat(" "))  # as sqlite3 would adapt it
    users = [u.id for u in records_["users"]]
    models = [(m.id, m.api) for m in records_["models"]]
    prompts = [p.id for p in records_["prompts"]] + [None]
    people = [f"person{i}@example.com" for i in range(40)] + [None] * 20
    by_hour = defaultdict(lambda: [0, 0, 0, 0])  # hour -> totals
    by_ident = [defaultdict(lambda: [0, 0]) for _ in stats.DIMENSIONS]  # (hour, id) -> [requests, cost]
    first, step = now - dt.timedelta(days=40) + dt.timedelta(hours=3), dt.timedelta(days=40) / count
    batch = []
    with db.connection_context():
        for i in range(count):
            created = first + i * step  # oldest first
            user, (model, api), prompt, end_user = (rng.choice(users), rng.choice(models), rng.choice(prompts),
                                                   rng.choice(people))
            inp, out = rng.randrange(1, 4000), rng.randrange(0, 1500)
            cost = rng.choice((0, rng.randrange(1, 6 * 10 ** 7)))  # nano-units; half the calls are free
            text = as_time(created)
            batch.append((f"r{i:014d}", text, text, user, api, model, prompt, end_user,
                          200 if rng.random() > 0.05 else 500, inp, out, inp + out, cost / NANOS, 100 + i % 5000))
            if len(batch) == 50_000 or i == count - 1:
                with db.atomic():
                    db.cursor().executemany(insert, batch)
                batch.clear()
            hour = epoch_hour(created)
            totals = by_hour[hour]
            totals[0] += 1
            totals[1] += inp
            totals[2] += out
            totals[3] += cost
            for sums, ident in zip(by_ident, (user, model, prompt, api, end_user)):
                entry = sums[hour, ident or ""]
                entry[0] += 1
                entry[1] += cost
    expected = {}
    for range_ in stats.RANGES:
        start, size, buckets, _ = in_window([], range_, now)
        inside = range(start, start + size * buckets)
        want = expected[range_] = {"totals": [sum(v[i] for h, v in by_hour.items() if h in inside)
                                              for i in range(4)]}
        for dimension, sums in zip(stats.DIMENSIONS, by_ident):
            per = want[dimension] = defaultdict(lambda: [0, 0])
            for (hour, ident), (calls, cost) in sums.items():
                if hour in inside:
                    per[ident][0] += calls
                    per[ident][1] += cost
    return expected


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_costs_over_a_million_rows_equal_the_rows_sums(app, records_):
    """The issue's scale: a million request rows, the rollup built from them as an
    upgrade builds it, and every range's cost (total, per user, model, prompt, api
    and end user) equal to the sum of its rows' costs, at the dashboard's speed."""
    started = time.perf_counter()
    expected = insert_rows_in_bulk(records_, MILLION)
    inserted = time.perf_counter()
    with db.connection_context():
        assert stats.rebuild() == MILLION
    rebuilt = time.perf_counter()
    timings = {}
    for range_ in stats.RANGES:
        times = []
        for _ in range(3):
            began = time.perf_counter()
            summary = stats.summary(range_, now=NOW)
            times.append(time.perf_counter() - began)
        timings[range_] = sorted(times)[1]
        want = expected[range_]
        requests, inp, out, cost = want["totals"]
        totals = summary["totals"]
        assert (totals["requests"], totals["input_tokens"], totals["output_tokens"]) == (requests, inp, out)
        assert totals["cost"] == amount_text(cost) and cost > 2 ** 31  # past a 32-bit integer
        assert sum(int(Fraction(bucket["cost"]) * NANOS) for bucket in summary["series"]) == cost
        for dimension in stats.DIMENSIONS:
            block = summary["breakdowns"][dimension]
            for entry in block["top"]:
                assert [entry["requests"], entry["cost"]] == [want[dimension][entry["id"]][0],
                                                              amount_text(want[dimension][entry["id"]][1])]
            shown = {entry["id"] for entry in block["top"]}
            rest = [values for ident, values in want[dimension].items() if ident not in shown]
            assert block["others"]["count"] == len(rest)
            assert block["others"]["cost"] == amount_text(sum(values[1] for values in rest))
    print(f"\n{MILLION:,} rows: inserted in {inserted - started:.1f} s, rollup rebuilt in {rebuilt - inserted:.1f} s; "
          "summary() median of 3: " + ", ".join(f"{r} {t * 1000:.0f} ms" for r, t in timings.items()))
    assert max(timings.values()) < 2.0  # a loaded machine's margin over bench/dashboard.py's figures
