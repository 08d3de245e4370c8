"""Budgets: what a user, or a key with a budget of its own (which then counts on
its own, as its rate limits do), may spend per UTC day, week (from Monday) or
month, or in total, in nano-units of the instance's currency (see costs.py).

This module says which budget a call counts against and which period it is in;
the limiter (limits.py) keeps each budget's spend per period beside its rate-limit
windows, under the same locks: a call is admitted while the spend is under the
budget, and adds its cost when it ends.
"""

import datetime as dt
import math
from dataclasses import dataclass

from .costs import amount_text, nanos

PERIOD_NAMES = {"day": "today", "week": "this week", "month": "this month"}


def period_of(period, now):
    """(number, start, end) of the UTC day, week (from Monday) or month holding `now`,
    start and end in epoch seconds; (0, None, None) for `total`."""
    day = int(now // 86400)
    if period == "day":
        return day, day * 86400, (day + 1) * 86400
    if period == "week":  # 1970-01-01 was a Thursday
        week = (day + 3) // 7
        return week, (week * 7 - 3) * 86400, (week * 7 + 4) * 86400
    if period == "total":
        return 0, None, None
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    month = moment.year * 12 + moment.month - 1
    return month, month_start(month), month_start(month + 1)


def month_start(month):
    year, index = divmod(month, 12)
    return dt.datetime(year, index + 1, 1, tzinfo=dt.UTC).timestamp()


@dataclass
class Budget:
    """The budget a call counts against, in nano-units, and the period it counts now."""

    subject: str
    limit: int
    period: str
    window: int
    starts: float = None  # epoch seconds; None for a total budget
    ends: float = None
    seed: int = None  # the spend of the subject's rows, when the count starts from them

    @classmethod
    def of(cls, key, user, now):
        """The budget that applies to this caller, or None: the key's own, else its user's."""
        for holder, kind in ((key, "key"), (user, "user")):
            limit = getattr(holder, "budget", None)
            if limit is not None:
                period = getattr(holder, "budget_period", None) or "month"
                return cls(f"{kind}:{holder.id}", nanos(limit), period, *period_of(period, now))
        return None

    @property
    def kind(self):
        return "spend-" + self.period


class OverBudget(Exception):
    """At or over its budget: the 429 to send, with the headers of a budgeted call."""

    def __init__(self, budget, spent, headers, now):
        super().__init__(f"{budget.subject} has spent {spent} of {budget.limit} (nano-units)")
        self.budget, self.spent, self.headers = budget, spent, headers
        self.retry_after = None if budget.ends is None else max(1, math.ceil(budget.ends - now))

    def message(self, currency):
        budget = self.budget
        who = budget.subject.partition(":")[0]
        when = ("in total" if budget.ends is None else
                f"for {PERIOD_NAMES[budget.period]} (until "
                + dt.datetime.fromtimestamp(budget.ends, dt.UTC).strftime("%Y-%m-%d %H:%M UTC)"))
        return (f"Budget exceeded: this {who} has spent {amount_text(self.spent)} {currency} of its budget of "
                f"{amount_text(budget.limit)} {currency} {when}.")


class Unseeded(Exception):
    """A budget's spend is not counted yet for this period: start it from the rows first."""
