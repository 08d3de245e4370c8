"""Per-user rate limits, shared by every worker and instance of a deployment.

Four limits: requests per minute (rpm), tokens per minute (tpm), requests per day
(rpd) and concurrent requests. Each is set on the user, may be overridden on a key
(which then counts on its own), and otherwise falls back to the instance default
(PROMPTPROXY_DEFAULT_RPM and friends; 0 means none). A caller with no limit at all
costs nothing here.

And a budget: what a user (or a key with a budget of its own, which then counts
on its own) may spend per UTC day, week or month, or in total. A call is refused
while the spend of the period is at or over the budget; calls already admitted
finish, and each adds its cost (see costs.py) when it ends, as tpm adds tokens.
The spend is counted in nano-units beside the rate-limit windows, and the request
rows are its truth: each row carries the very cost that was added, and a spend not
counted yet (a new period, a budget just set, a lost limits.db) starts from the
sum of the subject's rows of the period.

Counts are kept in fixed windows (the current minute and the current UTC day)
where every process sees them: in their own SQLite file beside the data
(`limits.db`), or, with PostgreSQL, in the shared database, so that several
instances count together. Each check and count is one transaction that first
takes a lock: SQLite's write lock, or PostgreSQL advisory locks on the subjects
being counted, so two calls for one key are counted one after the other and a
limit admits exactly its number of calls. limits.db is written with
`synchronous=OFF`: after a power cut a window may forget some calls, which for
rate limits is harmless.

Concurrent calls are counted per process. A process that died without releasing
its calls must not hold their slots forever: with SQLite (one machine) a dead
pid is seen at once; with PostgreSQL each process stamps a heartbeat every few
seconds, and the calls of a process silent for DEAD_AFTER seconds are not counted.

Every read and write runs on the limiter's own writer thread (`writer.Writer`):
while another process holds a lock, the calls that need a limit checked or
released wait for it, and everything else the worker serves goes on.
"""

import logging
import math
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field

from ..data.db import UNREACHABLE
from ..data.storable import integer
from ..data.writer import Writer
from .budgets import Budget, OverBudget, Unseeded, period_of
from .costs import amount_text
from .counts import HEARTBEAT, PostgresCounts, counts_at

log = logging.getLogger(__name__)

KINDS = ("rpm", "tpm", "rpd", "concurrency")
RUNNING = ("concurrency", "instance")  # the kinds counted as calls in flight, not in windows


class LimitsUnavailable(Exception):
    """The counts' database cannot be reached (down, restarting, locked too long):
    the call cannot be admitted now, and fails cleanly."""

    @classmethod
    def of(cls, exc):
        return cls(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def driver_unavailable(exc):
    """True for the drivers' errors that mean the database, not the statement, failed."""
    if isinstance(exc, sqlite3.OperationalError):
        return True
    psycopg = sys.modules.get("psycopg")
    return bool(psycopg) and isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


class Limited(Exception):
    """Over a limit: the 429 to send, with when to retry and the limit headers."""

    def __init__(self, kind, limit, retry_after, headers):
        if kind == "instance":
            message = (f"This server is at its limit of {limit} calls in flight (PROMPTPROXY_MAX_CONCURRENCY). "
                       f"Try again in {retry_after} s.")
        else:
            what = {"rpm": "requests per minute", "tpm": "tokens per minute", "rpd": "requests per day",
                    "concurrency": "concurrent requests"}[kind]
            message = f"Rate limit reached: {limit} {what}. Try again in {retry_after} s."
        super().__init__(message)
        self.kind, self.retry_after, self.headers = kind, retry_after, headers


@dataclass
class Ticket:
    """What one admitted call holds: its subjects per kind, to release at the end,
    and the budget its cost counts against."""

    subjects: dict
    minute: int
    headers: dict = field(default_factory=dict)
    budget: Budget = None


def effective(key, user, defaults):
    """{kind: (subject, limit)} for the limits that apply to this caller."""
    applied = {}
    for kind in KINDS:
        if getattr(key, kind, None):
            applied[kind] = (f"key:{key.id}", getattr(key, kind))
        elif getattr(user, kind, None):
            applied[kind] = (f"user:{user.id}", getattr(user, kind))
        elif defaults.get(kind):
            applied[kind] = (f"user:{user.id}", defaults[kind])
    return applied


def reset_text(seconds):
    """OpenAI's reset format: '59s', '6m0s', '13h20m0s'."""
    seconds = max(0, math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def tokens_count(value):
    """A call's token count as an integer; 0 when the upstream's figure is not a number."""
    return integer(value) or 0


class Limiter:
    """Admits calls within their limits (`acquire`, `release`), and holds the other
    counts of calls in flight that every process must see: an upstream api's
    concurrency cap (`hold`), and with `max_concurrency` the instance's own cap,
    counted under `instance` (limits.db is one instance's; on PostgreSQL, the name
    of the instance's machine and data directory)."""

    def __init__(self, location, defaults=None, clock=time.time, writer=None, max_concurrency=0,
                 instance="instance", spent=None):
        self.defaults = {kind: value for kind, value in (defaults or {}).items() if value}
        # spent(subject, starts, ends): the cost of the subject's request rows of a period (None: ever),
        # in nano-units; where a budget's spend starts when it is not counted yet
        self.spent = spent or (lambda subject, starts, ends: 0)
        self.instance = (f"instance:{instance}", max_concurrency) if max_concurrency else None
        self.clock = clock
        self.counts = counts_at(location)
        self.writer = writer or Writer("limits", on_stop=self._close)
        self._calls = 0
        self._unreleased = []  # releases that failed while the database was down, tried again later
        self._stopped = threading.Event()
        self.writer.run(self.counts.open)
        self._heart = None
        if isinstance(self.counts, PostgresCounts):
            self._heart = threading.Thread(target=self._beat, name="promptproxy-limits", daemon=True)
            self._heart.start()

    def _beat(self):
        while not self._stopped.wait(HEARTBEAT):
            try:
                self.writer.run(self._beat_now)
            except Exception:  # noqa: BLE001 -- the database is down: the next beat tries again
                self.writer.run(self._reset)

    def _beat_now(self):
        self.counts.beat()
        self._release_late()

    def _release_late(self):
        """Releases that failed while the database was down: a call's slot must not
        stay taken because it ended at the wrong moment."""
        while self._unreleased:
            self._release(*self._unreleased[0])
            self._unreleased.pop(0)

    def _reset(self):
        """After a failure: roll back, and drop a connection that broke."""
        try:
            self.counts.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 -- the connection is gone; the next call opens one
            self.counts.close(forget=False)

    def _close(self):
        self.counts.close(forget=True)

    def stop(self):
        """Release this process's calls, close the database on the writer's thread
        and end the thread."""
        self._stopped.set()
        self.writer.stop()

    def acquire(self, key, user):
        """A Ticket for a call within its limits and budget, None when none apply;
        raises Limited or OverBudget."""
        applied = effective(key, user, self.defaults)
        if self.instance:
            applied["instance"] = self.instance
        budget = getattr(key, "budget", None) is not None or getattr(user, "budget", None) is not None
        if not (applied or budget):
            return None
        now = self.clock()
        budget = Budget.of(key, user, now) if budget else None
        minute, day = int(now // 60), int(now // 86400)
        to_minute, to_day = 60 - now % 60, 86400 - now % 86400
        windows = {"rpm": minute, "tpm": minute, "rpd": day}
        headers = self._counting(budget, self._admit, applied, windows, to_minute, to_day, budget, now)
        return Ticket({kind: subject for kind, (subject, _) in applied.items()}, minute, headers, budget)

    def _counting(self, budget, work, *args):
        """`work(*args)` on the writer's thread; when it finds the budget's spend not
        counted yet, the spend of the rows is read first (outside any lock)."""
        try:
            return self.writer.run(work, *args)
        except Unseeded:
            try:
                budget.seed = self.writer.run(self.spent, budget.subject, budget.starts, budget.ends)
            except UNREACHABLE as exc:
                raise LimitsUnavailable.of(exc) from exc
            return self.writer.run(work, *args)

    def _admit(self, applied, windows, to_minute, to_day, budget, now):
        """On the writer's thread: check and count the call in one transaction."""
        counts = self.counts
        try:
            self._release_late()
            counts.begin([subject for subject, _ in applied.values()] + ([budget.subject] if budget else []))
            used = dict.fromkeys(applied, 0)
            counted = [(subject, kind, windows[kind]) for kind, (subject, _) in applied.items()
                       if kind not in RUNNING]
            if counted:  # every window in one query
                values = ", ".join(["(?, ?, ?)"] * len(counted))
                for kind, count in counts.execute(
                        f'SELECT kind, used FROM {counts.WINDOWS} WHERE (subject, kind, "window") '
                        f"IN (VALUES {values})", [v for triple in counted for v in triple]):
                    used[kind] = count
            for kind in RUNNING:
                if kind in applied:
                    used[kind] = self._inflight(applied[kind][0])
            headers = self._headers(applied, used, to_minute, to_day)
            if budget is not None:
                spent = self._spent(budget)
                headers["x-promptproxy-budget-remaining"] = amount_text(max(0, budget.limit - spent))
                if spent >= budget.limit:
                    raise OverBudget(budget, spent, headers, now)
            for kind, (_subject, limit) in applied.items():
                if used[kind] >= limit:
                    retry = {"rpm": to_minute, "tpm": to_minute, "rpd": to_day}.get(kind, 1)
                    raise Limited(kind, limit, max(1, math.ceil(retry)), headers)
            for kind in ("rpm", "rpd"):
                if kind in applied:
                    self._add(applied[kind][0], kind, windows[kind], 1)
            for kind in RUNNING:
                if kind in applied:
                    self._take(applied[kind][0])
            self._calls += 1
            if self._calls % 1000 == 0:  # forget finished windows now and then
                self._forget_finished(now)
            counts.execute("COMMIT")
        except (Limited, OverBudget):
            self._reset()
            raise
        except BaseException as exc:
            self._reset()
            if driver_unavailable(exc):
                raise LimitsUnavailable.of(exc) from exc
            raise
        return headers

    def _forget_finished(self, now):
        """Forget the windows that are over: rate-limit windows before the last one,
        budget spends of periods before the last one (a total is never over)."""
        minute, day = int(now // 60), int(now // 86400)
        over = [("rpm", minute - 1), ("tpm", minute - 1), ("rpd", day - 1)]
        over += [("spend-" + period, period_of(period, now)[0] - 1) for period in ("day", "week", "month")]
        self.counts.execute(f"DELETE FROM {self.counts.WINDOWS} WHERE "
                            + " OR ".join(['(kind = ? AND "window" < ?)'] * len(over)),
                            [value for pair in over for value in pair])

    def _spent(self, budget):
        """Within a transaction holding the budget's subject: its spend in the current
        period. A spend not counted yet starts from the rows' (`budget.seed`), or
        raises Unseeded when they have not been read."""
        table = self.counts.WINDOWS
        where = (f'SELECT used FROM {table} WHERE subject = ? AND kind = ? AND "window" = ?',
                 (budget.subject, budget.kind, budget.window))
        row = self.counts.execute(*where).fetchone()
        if row is None:
            if budget.seed is None:
                raise Unseeded
            self.counts.execute(f'INSERT INTO {table} VALUES (?, ?, ?, ?) ON CONFLICT (subject, kind, "window") '
                                "DO NOTHING", (budget.subject, budget.kind, budget.window, budget.seed))
            row = self.counts.execute(*where).fetchone()
        return row[0]

    def spend(self, subject, period):
        """What `subject` ("user:<id>", "key:<id>") has spent in the current `period`,
        in nano-units, as its budget counts it: what the admin shows."""
        budget = Budget(subject, 0, period, *period_of(period, self.clock()))
        return self._counting(budget, self._spend, budget)

    def _spend(self, budget):
        try:
            self.counts.begin([budget.subject])
            spent = self._spent(budget)
            self.counts.execute("COMMIT")
        except BaseException:
            self._reset()
            raise
        return spent

    def release(self, ticket, tokens, cost=None):
        """The call ended: it no longer counts as running, and its tokens and its
        cost (nano-units) count."""
        if ticket is None:
            return
        tokens = tokens_count(tokens)
        running = any(kind in ticket.subjects for kind in RUNNING)
        counted = "tpm" in ticket.subjects and tokens
        cost = cost if ticket.budget is not None and isinstance(cost, int) and cost > 0 else 0
        if not (running or counted or cost):
            return
        try:
            self.writer.run(self._release, ticket, running, counted, tokens, cost)
        except Exception as exc:
            self._unreleased.append((ticket, running, counted, tokens, cost))  # the next admit or beat does it
            if not driver_unavailable(exc):
                raise
            log.warning("the database is unavailable: a call's rate-limit slot is given back once it is back "
                        "(%s)", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def _release(self, ticket, running, counted, tokens, cost):
        counts = self.counts
        try:
            counts.begin([ticket.subjects[kind] for kind in (*RUNNING, "tpm") if kind in ticket.subjects]
                         + ([ticket.budget.subject] if cost else []))
            if running:
                for kind in RUNNING:
                    if kind in ticket.subjects:
                        counts.execute(f"UPDATE {counts.INFLIGHT} SET used = used - 1 WHERE subject = ? AND pid = ?",
                                       (ticket.subjects[kind], counts.process))
            if counted:
                self._add(ticket.subjects["tpm"], "tpm", int(self.clock() // 60), tokens)
            if cost:  # in the period the call was admitted in, as its row's time says
                budget = ticket.budget
                self._add(budget.subject, budget.kind, budget.window, cost)
            counts.execute("COMMIT")
        except BaseException:
            self._reset()
            raise

    def hold(self, subject, cap):
        """One of `cap` slots of `subject` (an upstream api's) for a call, as a
        Ticket to `release` when the call ends; None when all are taken."""
        return self.writer.run(self._hold, subject, cap)

    def _hold(self, subject, cap):
        counts = self.counts
        try:
            self._release_late()
            counts.begin([subject])
            if self._inflight(subject) >= cap:
                counts.execute("ROLLBACK")
                return None
            self._take(subject)
            counts.execute("COMMIT")
        except BaseException as exc:
            self._reset()
            if driver_unavailable(exc):
                raise LimitsUnavailable.of(exc) from exc
            raise
        return Ticket({"concurrency": subject}, int(self.clock() // 60))

    def _take(self, subject):
        table = self.counts.INFLIGHT
        self.counts.execute(f"INSERT INTO {table} VALUES (?, ?, 1) ON CONFLICT (subject, pid) "
                            f"DO UPDATE SET used = {table}.used + 1", (subject, self.counts.process))

    def _add(self, subject, kind, window, amount):
        table = self.counts.WINDOWS
        self.counts.execute(f'INSERT INTO {table} VALUES (?, ?, ?, ?) ON CONFLICT (subject, kind, "window") '
                            f"DO UPDATE SET used = {table}.used + excluded.used", (subject, kind, window, amount))

    def _inflight(self, subject):
        rows = self.counts.execute(f"SELECT pid, used FROM {self.counts.INFLIGHT} WHERE subject = ? AND used > 0",
                                   (subject,)).fetchall()
        return sum(used for _, used in self.counts.running(rows))

    @staticmethod
    def _headers(applied, used, to_minute, to_day):
        """OpenAI's x-ratelimit-* headers, counting the call being admitted."""
        headers = {}
        requests = "rpm" if "rpm" in applied else "rpd" if "rpd" in applied else None
        if requests:
            limit = applied[requests][1]
            headers["x-ratelimit-limit-requests"] = str(limit)
            headers["x-ratelimit-remaining-requests"] = str(max(0, limit - used[requests] - 1))
            headers["x-ratelimit-reset-requests"] = reset_text(to_minute if requests == "rpm" else to_day)
        if "tpm" in applied:
            limit = applied["tpm"][1]
            headers["x-ratelimit-limit-tokens"] = str(limit)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, limit - used["tpm"]))
            headers["x-ratelimit-reset-tokens"] = reset_text(to_minute)
        return headers
