"""What a call cost: its tokens at the prices of the model that answered it.

Amounts are counted in whole nano-units of the instance's currency (NANOS to the
unit). A call's cost is rounded once, to a nano-unit, and that one number is both
written on its request row (as currency, nanos / NANOS) and added to the budget
it counts against (see limits.py), so a budget's spend is the sum of its rows.

Prices are per million tokens, so a price p costs p * 1000 nano-units a token. A
price is read as the decimal the admin typed (the shortest text of the stored
double), so 0.15 costs exactly 150 a token, whatever its binary rounding; the sum
is worked out exactly, in integers, and rounded once.

Usage comes in OpenAI's shape, which every route fills (Anthropic's is turned
into it by providers/anthropic/responses.openai_usage):

    prompt_tokens                                every input token, cached or not
    prompt_tokens_details.cached_tokens          of those, read from the upstream's prompt cache:
                                                 the cached input price (or the input price)
    prompt_tokens_details.cache_creation_tokens  of those, written to it (Anthropic): 1.25 times the
                                                 input price, what Anthropic charges for a cache write
    completion_tokens                            the output price

Upstream figures are untrusted: one that is text is read as the number it holds
(as the row's token columns read it), and anything else that is not a whole
number of at least 0 counts as none.
"""

import datetime as dt
from decimal import ROUND_HALF_UP
from decimal import Decimal as Exact
from functools import lru_cache

from peewee import fn

from ..collections import BY_NAME
from ..data.db import connection
from ..data.storable import integer

NANOS = 10 ** 9  # nano-units in one unit of the currency
MAX_NANOS = 2 ** 53  # a call costs at most this (an upstream's absurd figures are not a bill)
MAX_TOKENS = 2 ** 62
# Worked out in whole atto-units (10 ** -18 of the currency), so a call costs a few
# integer products: a price p per million tokens costs p * ATTO_PER_TOKEN of them a token.
ATTO_PER_TOKEN = 10 ** 12
ATTO_PER_NANO = 10 ** 9
CACHE_WRITE = (5, 4)  # a token written to Anthropic's cache costs 1.25 input tokens


def tokens(value):
    """An upstream's token count: its whole number, 0 when it is none or below 0."""
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # what upstreams send, read at once
        return value
    return 0 if value is None else max(0, integer(value) or 0)


@lru_cache(maxsize=1024)  # a few prices serve every call
def per_token(price):
    """Atto-units a token costs at `price` per million tokens (None: free), read as typed."""
    if not price:
        return 0
    return int((Exact(repr(price)) * ATTO_PER_TOKEN).to_integral_value(ROUND_HALF_UP))


def cost(usage, model):
    """What a call with `usage` cost at `model`'s prices, in nano-units (rounded half
    up); None when the upstream reported no usage (or no model answered)."""
    if not isinstance(usage, dict) or model is None:
        return None
    input_price = getattr(model, "input_price", None)
    cached_price = getattr(model, "cached_input_price", None)
    output_price = getattr(model, "output_price", None)
    if not (input_price or cached_price or output_price):
        return 0  # a free model: nothing to work out
    prompt = tokens(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    read = min(tokens(details.get("cached_tokens")), prompt)
    written = min(tokens(details.get("cache_creation_tokens")), prompt - read)
    per_input = per_token(input_price)
    per_cached = per_input if cached_price is None else per_token(cached_price)
    times, per = CACHE_WRITE
    total = per * ((prompt - read - written) * per_input + read * per_cached
                   + tokens(usage.get("completion_tokens")) * per_token(output_price)) + times * written * per_input
    unit = per * ATTO_PER_NANO
    return min(MAX_NANOS, (total + unit // 2) // unit)


def nanos(amount):
    """An amount of the currency (a budget) in nano-units, read as typed."""
    return int((Exact(repr(amount)) * NANOS).to_integral_value(ROUND_HALF_UP))


def amount(nanos_):
    """Nano-units as the currency amount a row or a page shows (a float)."""
    return None if nanos_ is None else nanos_ / NANOS


def amount_text(nanos_):
    """Nano-units as text, the decimal point where the currency has it: 0.004, 12, 0.000000001."""
    sign = "-" if nanos_ < 0 else ""
    whole, fraction = divmod(abs(nanos_), NANOS)
    return sign + (f"{whole}.{fraction:09d}".rstrip("0").rstrip("."))


def spent_in_rows(subject, starts, ends, own_budgets=True):
    """The cost of the request rows of `subject` ("user:<id>" or "key:<id>") made
    from `starts` until `ends` (epoch seconds; None: ever), in nano-units: where a
    budget's spend starts when it is not counted yet. A user's calls with a key of
    its own budget count on that key, not on the user (unless `own_budgets` is
    False: then all of them). Each row's cost is a whole number of nano-units, so
    the sum is exact."""
    requests, keys = BY_NAME["requests"].model, BY_NAME["keys"].model
    kind, _, ident = subject.partition(":")
    if kind == "key":
        mine = requests.key == ident
    elif not own_budgets:
        mine = requests.user == ident
    else:
        budgeted = keys.select(keys.id).where(keys.user == ident, keys.budget.is_null(False))
        mine = (requests.user == ident) & requests.key.not_in(budgeted)
    if starts is not None:
        mine &= (requests.created >= utc(starts)) & (requests.created < utc(ends))
    with connection():
        total = requests.select(fn.SUM(fn.ROUND(requests.cost * NANOS))).where(mine).scalar()
    return int(total or 0)


def utc(seconds):
    """Epoch seconds as the rows keep times: UTC, without a zone."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).replace(tzinfo=None)
