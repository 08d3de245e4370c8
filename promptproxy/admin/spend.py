"""What users and keys spent, on their pages: against their budget, as the limiter
counts it (the spend that admits or refuses their calls, see accounting/limits.py),
or, without a budget, what their request rows of this month cost."""

import logging

from markupsafe import Markup

from ..accounting.budgets import period_of
from ..accounting.costs import amount_text, nanos, spent_in_rows
from ..services import services
from .views import CollectionView

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
