"""Known list prices of a few well-known models, which Test connection suggests
for the upstream models it finds. Only suggestions: the admin ticks the ones to
use (and should check them against the provider's price list), nothing is ever
fetched, and a model's prices stay the admin's to change.

USD per million tokens, as OpenAI and Anthropic listed them in 2025: (input,
cached input, output). Anthropic's cached input is a cache read; what a cache
write costs follows from the input price (see accounting/costs.py). Only exact
model ids match: a dated snapshot may have had other prices than its alias, so
the snapshots listed are those known to share them.
"""

CURRENCY = "USD"

KNOWN = {
    # OpenAI
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "gpt-4.1": (2.00, 0.50, 8.00),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "o4-mini": (1.10, 0.275, 4.40),
    "gpt-3.5-turbo-instruct": (1.50, None, 2.00),
    "text-embedding-3-small": (0.02, None, None),
    "text-embedding-3-large": (0.13, None, None),
    # Anthropic
    "claude-opus-4-1": (15.00, 1.50, 75.00),
    "claude-sonnet-4-5": (3.00, 0.30, 15.00),
    "claude-sonnet-4-0": (3.00, 0.30, 15.00),
    "claude-haiku-4-5": (1.00, 0.10, 5.00),
    "claude-3-5-haiku-latest": (0.80, 0.08, 4.00),
}

SNAPSHOTS = {
    "gpt-4o-2024-08-06": "gpt-4o", "gpt-4o-2024-11-20": "gpt-4o", "gpt-4o-mini-2024-07-18": "gpt-4o-mini",
    "gpt-4.1-2025-04-14": "gpt-4.1", "gpt-4.1-mini-2025-04-14": "gpt-4.1-mini",
    "gpt-4.1-nano-2025-04-14": "gpt-4.1-nano", "o4-mini-2025-04-16": "o4-mini",
    "claude-opus-4-1-20250805": "claude-opus-4-1", "claude-sonnet-4-5-20250929": "claude-sonnet-4-5",
    "claude-sonnet-4-20250514": "claude-sonnet-4-0", "claude-haiku-4-5-20251001": "claude-haiku-4-5",
    "claude-3-5-haiku-20241022": "claude-3-5-haiku-latest",
}


def suggested(model_id, currency):
    """{input_price, cached_input_price, output_price} known for an upstream model
    id, or None (also when the instance counts in another currency)."""
    known = KNOWN.get(SNAPSHOTS.get(model_id, model_id)) if currency == CURRENCY else None
    if known is None:
        return None
    return dict(zip(("input_price", "cached_input_price", "output_price"), known))


def priced(model):
    """Whether a model record has a price of its own already."""
    return any(getattr(model, name) is not None for name in ("input_price", "cached_input_price", "output_price"))
