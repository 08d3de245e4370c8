"""Usage statistics for the dashboard: an hourly rollup of the requests table.

Every batch of request rows the recorder writes is also added, in the same
transaction, to `_request_stats`: one row per (hour, user, model, prompt, api,
end user) with the number of requests, of errors (status >= 400), input and output
tokens, their cost in nano-units of the currency (an integer: the sum of the rows'
costs, each a whole number of nano-units, see costs.py, so every sum is exact), and
a latency histogram over fixed, log-spaced bins. The dashboard reads
only this table, so its cost does not grow with the number of requests.

Besides those detail rows the table keeps roll-up rows, in which the dimensions
not named are "all". Every hour has one for the hour as a whole, one per user, per
model, per prompt and per api (their end user is "all"), and one per end user (all
four others "all"); every UTC day also has one per end user, whose api is `DAY`
and whose hour is the day's first. They are written by the same statement as the
detail rows and let `summary` read a few rows per hour instead of every
combination that occurred, and, for the end users, of whom there can be
thousands, a row per day for the days a range covers whole. Sum detail rows
(`DETAIL`) or one kind of roll-up, never the whole table.

"All" must be a value no request can have. For the records' ids it is `ALL` ("*",
which no record id can be). An end user is whatever text a client sent, "*"
included, so theirs is `ALL_END_USERS`, a control character, which end users never
hold (accounting/end_users.py removes them). Every roll-up row has `ALL` as its
user or its model, and detail rows never do: that is how the two are told apart.
Each of the two families of roll-ups has its own partial index.

Times are UTC; `hour` is hours since the Unix epoch. Ids are kept as they are,
so deleting a user or a model leaves its history (it shows as its id); "" means
the request had none (no prompt, no end user, or a model that could not be
resolved).
"""

import datetime as dt
import math
from bisect import bisect_right
from contextlib import nullcontext
from operator import add as _add

import peewee

from ..collections import BY_NAME
from ..data.db import BaseModel, db, is_postgresql
from .costs import NANOS, amount_text

ALL = "*"
ALL_END_USERS = "\x1f"
DAY = "**"  # the api of a per-end-user roll-up of a whole day
RECORDS = {"user": "users", "model": "models", "prompt": "prompts", "api": "apis"}  # dimension -> collection
DIMENSIONS = (*RECORDS, "end_user")
COUNTS = ("requests", "errors", "input_tokens", "output_tokens", "cost")

# Latency histogram: bin 0 is [0, 10 ms), bin i is [EDGES[i-1], EDGES[i]), the last
# bin is [300 s, inf). Log-spaced, so each bin is about 60% wider than the one before.
BINS = 24
EDGES = tuple(round(10 * (300_000 / 10) ** (i / (BINS - 2))) for i in range(BINS - 1))
LATENCY = tuple(f"lat{i}" for i in range(BINS))
VALUES = COUNTS + LATENCY  # the summed columns, in this order everywhere below
_N = len(COUNTS)  # values[:_N] are the counts, values[_N:] the latency histogram
WIDTH = len(VALUES)

RANGES = {  # range -> (bucket size in hours, number of buckets; None: the days of this month so far)
    "24h": (1, 24),
    "7d": (6, 28),
    "30d": (24, 30),
    "month": (24, None),
}
TOP = 10
_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()


class RequestStats(BaseModel):
    hour = peewee.IntegerField()
    user = peewee.TextField(default="")
    model = peewee.TextField(default="")
    prompt = peewee.TextField(default="")
    api = peewee.TextField(default="")
    end_user = peewee.TextField(default="")
    requests = peewee.BigIntegerField(default=0)
    errors = peewee.BigIntegerField(default=0)
    input_tokens = peewee.BigIntegerField(default=0)
    output_tokens = peewee.BigIntegerField(default=0)
    cost = peewee.BigIntegerField(default=0)  # nano-units

    class Meta:
        table_name = "_request_stats"
        primary_key = peewee.CompositeKey("hour", *DIMENSIONS)
        without_rowid = True


for _name in LATENCY:
    RequestStats._meta.add_field(_name, peewee.BigIntegerField(default=0))
del _name

TABLE = RequestStats._meta.table_name
# Every roll-up row has ALL as its user or its model; detail rows never do.
IS_ROLLUP = "(\"user\" = '*' OR \"model\" = '*')"
DETAIL = "(\"user\" != '*' AND \"model\" != '*')"
# The two families of roll-ups, each with its partial index (a query names the same terms, so that it is used)
ROLLUPS_INDEX = TABLE + "_rollups"  # the whole hour's, and per user, model, prompt and api
ROLLUPS = f"(\"user\" = '*' OR \"model\" = '*') AND \"end_user\" = '{ALL_END_USERS}'"
END_USERS_INDEX = TABLE + "_end_users"  # per end user, by the hour (api ALL) and by the day (api DAY)
END_USERS = f"\"user\" = '*' AND \"model\" = '*' AND \"prompt\" = '*' AND \"end_user\" != '{ALL_END_USERS}'"
RequestStats.add_index(RequestStats.index(RequestStats.hour, name=ROLLUPS_INDEX).where(
    ((RequestStats.user == ALL) | (RequestStats.model == ALL)) & (RequestStats.end_user == ALL_END_USERS)))
RequestStats.add_index(RequestStats.index(RequestStats.api, RequestStats.hour, name=END_USERS_INDEX).where(
    (RequestStats.user == ALL) & (RequestStats.model == ALL) & (RequestStats.prompt == ALL)
    & (RequestStats.end_user != ALL_END_USERS)))


def _quoted(names):
    return ", ".join(f'"{n}"' for n in names)


KEY = ("hour",) + DIMENSIONS


def upsert_sql():
    """The statement that adds one group's figures to its rollup row."""
    return (f'INSERT INTO "{TABLE}" ({_quoted(KEY + VALUES)}) '
            f'VALUES ({", ".join([db.param] * (len(KEY) + WIDTH))}) '
            f'ON CONFLICT ({_quoted(KEY)}) DO UPDATE SET '
            + ", ".join(f'"{c}" = "{TABLE}"."{c}" + excluded."{c}"' for c in VALUES))


# -- writing --------------------------------------------------------------------

def _hour(created):
    """Hours since the epoch of a naive UTC datetime (or its ISO text)."""
    try:
        return (created.toordinal() - _EPOCH_DAY) * 24 + created.hour
    except AttributeError:
        created = dt.datetime.fromisoformat(str(created).rstrip("Z"))
        return (created.toordinal() - _EPOCH_DAY) * 24 + created.hour


def _keys(hour, user, model, prompt, api, end_user):
    """The rows one request is counted in: its detail row, then its roll-ups."""
    return ((hour, user, model, prompt, api, end_user), (hour, ALL, ALL, ALL, ALL, ALL_END_USERS),
            (hour, user, ALL, ALL, ALL, ALL_END_USERS), (hour, ALL, model, ALL, ALL, ALL_END_USERS),
            (hour, ALL, ALL, prompt, ALL, ALL_END_USERS), (hour, ALL, ALL, ALL, api, ALL_END_USERS),
            (hour, ALL, ALL, ALL, ALL, end_user), (hour - hour % 24, ALL, ALL, ALL, DAY, end_user))


def add(rows):
    """Add a batch of request rows (dicts as the recorder builds them) to the rollup:
    aggregated here, then one prepared UPSERT run with executemany. Runs inside the
    caller's transaction when there is one (the recorder's), else in its own."""
    groups = {}
    get = groups.get
    for row in rows:
        error = 1 if (row.get("status") or 0) >= 400 else 0
        input_tokens, output_tokens = row.get("input_tokens") or 0, row.get("output_tokens") or 0
        cost = row.get("cost")
        cost = round(cost * NANOS) if cost else 0  # the row keeps nano-units / NANOS (see costs.amount)
        latency = row.get("latency_ms")
        slot = None if latency is None else _N + bisect_right(EDGES, latency)
        for key in _keys(_hour(row["created"]), row.get("user") or "", row.get("model") or "",
                         row.get("prompt") or "", row.get("api") or "", row.get("end_user") or ""):
            values = get(key)
            if values is None:
                values = groups[key] = [0] * WIDTH
            values[0] += 1
            values[1] += error
            values[2] += input_tokens
            values[3] += output_tokens
            values[4] += cost
            if slot is not None:
                values[slot] += 1
    if not groups:
        return
    params = [(*key, *values) for key, values in groups.items()]
    if db.in_transaction():
        db.cursor().executemany(upsert_sql(), params)
    else:
        with db.atomic():
            db.cursor().executemany(upsert_sql(), params)


def _with_rollups(groups):
    """Rows for detail groups {key: values}, followed by their roll-ups."""
    parts = {}
    for key, values in groups.items():
        for rollup in _keys(*key)[1:]:
            parts.setdefault(rollup, []).append(values)
    return [(*key, *values) for key, values in groups.items()] + \
           [(*key, *map(sum, zip(*many))) for key, many in parts.items()]


def _rebuild_query():
    requests = BY_NAME["requests"].model._meta.table_name
    bins = []
    for i in range(BINS):
        low = f'"latency_ms" >= {EDGES[i - 1]}' if i else None
        high = f'"latency_ms" < {EDGES[i]}' if i < BINS - 1 else None
        bins.append(f"COUNT(CASE WHEN {' AND '.join(c for c in (low, high) if c)} THEN 1 END)")
    if is_postgresql():
        hour = "CAST(EXTRACT(EPOCH FROM date_trunc('hour', \"created\")) AS BIGINT) / 3600"
    else:  # the hour is cut from the text: strftime() rounds to the millisecond, which
        # would move 12:59:59.9999 into the next hour
        hour = "CAST(strftime('%s', substr(\"created\", 1, 13) || ':00:00') AS INTEGER) / 3600"
    return (f"SELECT {hour} AS h, "
            + ", ".join(f'COALESCE("{d}", \'\')' for d in DIMENSIONS) + ", "
            "COUNT(*), COUNT(CASE WHEN \"status\" >= 400 THEN 1 END), "
            "COALESCE(SUM(\"input_tokens\"), 0), COALESCE(SUM(\"output_tokens\"), 0), "
            f"COALESCE(SUM(CAST(ROUND(\"cost\" * {NANOS}) AS BIGINT)), 0), "
            + ", ".join(bins)
            + f' FROM "{requests}" WHERE "created" IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1')


def rebuild():
    """Recompute the whole rollup from the requests table (one GROUP BY query),
    replacing what was there. Returns the number of request rows counted."""
    counted = 0
    with db.atomic():
        db.execute_sql(f'DELETE FROM "{TABLE}"')
        hour, groups = None, {}
        for row in db.execute_sql(_rebuild_query()):
            if row[0] != hour and groups:
                db.cursor().executemany(upsert_sql(), _with_rollups(groups))  # one hour at a time
                groups = {}
            hour = row[0]
            groups[row[:6]] = list(row[6:])
            counted += row[6]
        if groups:
            db.cursor().executemany(upsert_sql(), _with_rollups(groups))
    return counted


def backfill():
    """At start-up: fill an empty rollup from requests recorded before it existed.
    The write lock is taken first, so of several workers starting at once only one
    rebuilds, and no batch is counted twice."""
    from ..data.migrations import schema_lock

    requests = BY_NAME["requests"].model
    with db.connection_context(), schema_lock():
        if RequestStats.select().exists() or not requests.select().exists():
            return 0
        return rebuild()


# -- reading --------------------------------------------------------------------

def percentile(histogram, q):
    """Estimate the q-quantile (0 < q < 1) in ms from a latency histogram: find the
    bin holding the nearest-rank value and interpolate inside it (geometrically, as
    the bins are), so the estimate is always within that bin's width of the truth."""
    total = sum(histogram)
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            if i == BINS - 1:
                return float(EDGES[-1])  # open-ended: at least this
            low, high = (EDGES[i - 1] if i else 0), EDGES[i]
            fraction = (rank - seen - 0.5) / count
            value = low + (high - low) * fraction if low == 0 else low * (high / low) ** fraction
            return round(value, 1)
        seen += count
    return None  # unreachable


def _window(range_, now):
    try:
        size, count = RANGES[range_]
    except KeyError:
        raise ValueError(f"range must be one of {', '.join(RANGES)}") from None
    now = now or utcnow()
    current = _hour(now)
    if count is None:  # this UTC month: its days until today's
        count = now.day
    last = current - current % size
    first = last - (count - 1) * size
    return size, count, first, last + size


def utcnow():
    """The time ranges end at: now, UTC, without a zone (as the rows keep times)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _iso(hour):
    return dt.datetime.fromtimestamp(hour * 3600, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _counts(requests, errors, input_tokens, output_tokens, cost):
    """The summed figures as the dashboard shows them; the cost as the exact decimal text
    of its nano-units (a JSON number could not hold every sum exactly)."""
    return {"requests": requests, "errors": errors, "input_tokens": input_tokens,
            "output_tokens": output_tokens, "tokens": input_tokens + output_tokens, "cost": amount_text(cost)}


def _latency(histogram):
    return {"p50_ms": percentile(histogram, 0.50), "p95_ms": percentile(histogram, 0.95)}


def _names(dimension, ids):
    """Record titles for ids; ids of deleted records map to None. An end user is
    their own name."""
    wanted = [i for i in ids if i]
    if dimension not in RECORDS:
        return {i: i for i in wanted}
    if not wanted:
        return {}
    collection = BY_NAME[RECORDS[dimension]]
    model = collection.model
    return {row.id: collection.title(row) for row in model.select().where(model.id.in_(wanted))}


def _sums(columns):
    return ", ".join(f'CAST(SUM("{c}") AS BIGINT)' for c in columns)  # PostgreSQL sums a bigint as a numeric


_SUMS = _sums(VALUES)
_WHOLE_HOUR = " AND ".join(f'"{d}" = \'{ALL}\'' for d in RECORDS)


def _in_range(family, index):
    # SQLite's planner is told which index to use; PostgreSQL's finds it alone
    hint = "" if is_postgresql() else f' INDEXED BY "{index}"'
    return f'FROM "{TABLE}"{hint} WHERE {family} AND "hour" >= {db.param} AND "hour" < {db.param}'


def _series_sql():
    """(hour - start) / size numbers the buckets from 0; the hour's own roll-up rows only."""
    p = db.param
    return (f'SELECT ("hour" - {p}) / {p}, {_SUMS} {_in_range(ROLLUPS, ROLLUPS_INDEX)} AND {_WHOLE_HOUR} '
            "GROUP BY 1")


def _by_record_sql():
    """Every per-user, per-model, per-prompt and per-api roll-up, summed over the range."""
    return (f'SELECT {_quoted(RECORDS)}, {_SUMS} {_in_range(ROLLUPS, ROLLUPS_INDEX)} AND NOT ({_WHOLE_HOUR}) '
            "GROUP BY 1, 2, 3, 4")


def _by_end_user_sql():
    """The per-end-user roll-ups of one kind (api ALL: hours, DAY: days), summed over a range."""
    return (f'SELECT "end_user", {_SUMS} {_in_range(END_USERS, END_USERS_INDEX)} AND "api" = {db.param} '
            "GROUP BY 1")


def _end_user_spans(start, end):
    """(kind, start, end) of the per-end-user roll-ups that cover hours [start, end)
    once: the days it holds whole, and the hours before and after them."""
    first_day, last_day = -(-start // 24) * 24, end // 24 * 24
    if first_day >= last_day:
        return [(ALL, start, end)]
    spans = [(DAY, first_day, last_day), (ALL, start, first_day), (ALL, last_day, end)]
    return [span for span in spans if span[1] < span[2]]


def summary(range_="24h", now=None):
    """The dashboard's figures for the last 24 hours, 7 days or 30 days, or this UTC
    month (UTC buckets of 1, 6, 24 or 24 hours ending with the current one; the month's
    are its days until today), as a JSON-able dict."""
    size, count, start, end = _window(range_, now)
    with db.connection_context() if db.is_closed() else nullcontext(), db.atomic():  # one snapshot
        buckets = {row[0]: row[1:] for row in db.execute_sql(_series_sql(), (start, size, start, end))}
        by = {d: [] for d in RECORDS}
        for row in db.execute_sql(_by_record_sql(), (start, end)):
            for i, dimension in enumerate(RECORDS):
                if row[i] != ALL:
                    by[dimension].append((row[i], row[len(RECORDS):]))
                    break
        end_users = {}
        for kind, low, high in _end_user_spans(start, end):
            for end_user, *values in db.execute_sql(_by_end_user_sql(), (low, high, kind)):
                before = end_users.get(end_user)
                end_users[end_user] = values if before is None else list(map(_add, before, values))
        by["end_user"] = list(end_users.items())
        any_ever = bool(db.execute_sql(f'SELECT 1 FROM "{TABLE}" LIMIT 1').fetchone())
        breakdowns = {d: _breakdown(d, by[d]) for d in DIMENSIONS}

    series, totals = [], [0] * WIDTH
    for i in range(count):
        row = buckets.get(i) or (0,) * WIDTH
        totals = list(map(_add, totals, row))
        series.append({"start": _iso(start + i * size), **_counts(*row[:_N]), **_latency(row[_N:])})
    error_rate = totals[1] / totals[0] if totals[0] else 0.0
    return {
        "range": range_, "bucket_hours": size, "start": _iso(start), "end": _iso(end),
        "has_requests": any_ever,
        "totals": {**_counts(*totals[:_N]), "error_rate": round(error_rate, 4), **_latency(totals[_N:])},
        "series": series,
        "breakdowns": breakdowns,
    }


def _by_user_and_day_sql():
    """The per-user roll-ups, summed per UTC day (hour // 24)."""
    return (f'SELECT "hour" / 24, "user", {_sums(COUNTS)} '
            f'{_in_range(ROLLUPS, ROLLUPS_INDEX)} AND "user" != \'{ALL}\' GROUP BY 1, 2 ORDER BY 1, 2')


def spend_by_user_and_day(range_="month", now=None):
    """What each user spent on each UTC day of a range (the summary's window, whose
    first day may start after midnight): dicts of the user's id and name (None once
    deleted), the date, requests, input and output tokens and the cost in nano-units,
    by day and then user id; only users who made calls."""
    _size, _count, start, end = _window(range_, now)
    with db.connection_context() if db.is_closed() else nullcontext(), db.atomic():
        rows = db.execute_sql(_by_user_and_day_sql(), (start, end)).fetchall()
        names = _names("user", {row[1] for row in rows})
    return [{"user": user, "name": names.get(user), "date": dt.date.fromordinal(_EPOCH_DAY + day),
             **dict(zip(COUNTS, values))} for day, user, *values in rows]


def _breakdown(dimension, rows):
    """Top TOP ids by requests (ties by id) with their names, and the rest summed."""
    rows.sort(key=lambda item: (-item[1][0], item[0]))
    top, rest = rows[:TOP], rows[TOP:]
    names = _names(dimension, [record_id for record_id, _ in top])
    entries = []
    for record_id, values in top:
        name = names.get(record_id)
        entries.append({"id": record_id, "name": name if name is not None else (record_id or "(none)"),
                        "deleted": bool(record_id) and name is None,
                        **_counts(*values[:_N]), **_latency(values[_N:])})
    others = [0] * WIDTH
    for _, values in rest:
        others = list(map(_add, others, values))
    return {"top": entries, "others": {"count": len(rest), **_counts(*others[:_N])}}
