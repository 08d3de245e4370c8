"""What users and keys spent, on their pages: against their budget, as the limiter
counts it (the spend that admits or refuses their calls, see accounting/limits.py),
or, without a budget, what their request rows of this month cost. And the spend of
every user per UTC day, as CSV, from the usage rollup (see accounting/stats.py)."""

import csv
import io
import logging

from flask import Response
from markupsafe import Markup

from ..accounting import stats
from ..accounting.budgets import period_of
from ..accounting.costs import amount_text, nanos, spent_in_rows
from ..services import services
from .views import CollectionView, defuse_formula

log = logging.getLogger(__name__)

PERIOD_TEXT = {"day": "today", "week": "this week", "month": "this month", "total": "in total"}


def spend(kind, row):
    """(spent, budget or None, period) of a user or key (kind "user" or "key"), in nano-units."""
    parts = services()
    subject = f"{kind}:{row.id}"
    if row.budget is not None:
        period = row.budget_period or "month"
        return parts.limiter.spend(subject, period), nanos(row.budget), period
    _, starts, ends = period_of("month", parts.limiter.clock())
    return spent_in_rows(subject, starts, ends, own_budgets=False), None, "month"


def spend_cell(kind):
    def format_spend(view, context, row, name):
        try:
            spent, budget, period = spend(kind, row)
        except Exception:  # noqa: BLE001 -- the counts' database is down: the page still shows
            log.warning("the spend of %s %s cannot be read now", kind, row.id, exc_info=True)
            return Markup('<span class="text-muted">unknown</span>')
        currency = services().settings["CURRENCY"]
        if budget is None:
            return f"{amount_text(spent)} {currency} {PERIOD_TEXT[period]}"
        text = Markup('<span class="pp-spend">{} of {} {} {}</span>').format(
            amount_text(spent), amount_text(budget), currency, PERIOD_TEXT[period])
        if spent >= budget:
            text += Markup(' <span class="badge badge-danger">budget reached</span>')
        return text
    return format_spend


class SpendView(CollectionView):
    """Users and keys, with what each spent in its list and on its page."""

    def __init__(self, collection, **kwargs):
        super().__init__(collection, **kwargs)
        kind = collection.singular
        self.column_list.insert(self.column_list.index("active"), "spend")
        self.column_details_list.insert(self.column_details_list.index("budget_period") + 1, "spend")
        self.column_labels["spend"] = "Spent"
        self.column_descriptions["spend"] = (f"What this {kind}'s calls cost: against its budget in the budget's "
                                             "period, or else this month (UTC).")
        self.column_formatters["spend"] = self.column_formatters_detail["spend"] = spend_cell(kind)
        self._refresh_cache()  # Flask-Admin works out its columns in __init__


CSV_HEADER = ("user_id", "user", "date", "requests", "input_tokens", "output_tokens", "cost", "currency")


def spend_csv(range_):
    """Spend per user per UTC day over a dashboard range, as a CSV download: the cost
    as the exact decimal text of its nano-units, names defused for spreadsheets (a
    deleted user's name is empty; their id stays)."""
    currency = services().settings["CURRENCY"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for row in stats.spend_by_user_and_day(range_):
        writer.writerow((row["user"], defuse_formula(row["name"] or ""), row["date"].isoformat(), row["requests"],
                         row["input_tokens"], row["output_tokens"], amount_text(row["cost"]), currency))
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="spend-{range_}.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response
