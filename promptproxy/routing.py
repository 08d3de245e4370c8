"""Which models serve a call, and in which order: groups, weights, fallbacks,
cooldowns, and when a failed try is worth another.

A model reference names a group: the models sharing that public name (a model's
id names just that model). The order of candidates for a call is

    the group's members, drawn one after the other by weight,
    then each model in their `fallbacks`, each followed by the rest of its group,

without repeats, and without the members whose api cools down, unless all of
them do: then those are tried in the order their cooldowns end, rather than
refusing the call. The proxy (proxy.py) tries each candidate up to 1 + its api's
`retries` times, until one answers. These are plain functions over the catalog's
snapshot; the shared state (cooldowns, concurrency caps) is the accounting's.
"""

import random
from email.utils import parsedate_to_datetime

from .data.fields import utcnow

# What a retry may cure: a busy, overloaded or broken upstream, or a timeout.
# Any other 4xx is about the request itself and goes straight back to the client.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})
RETRYABLE_FAILURES = frozenset({"connection", "timeout", "broken"})  # ProxyError.upstream_error
LONGEST_WAIT = 5  # seconds of Retry-After worth waiting for on the same api; longer: move on
MAX_ATTEMPTS = 12  # tries of one call at most, whatever the retries and fallbacks add up to


def members(snap, model):
    """The usable models of `model`'s group: its own when called by id or unnamed."""
    return snap.groups.get(model.name, [model]) if model.name else [model]


def weight(model):
    return model.weight if model.weight is not None else 1


def by_weight(models, rng=random):
    """`models` in a random order where each comes first in proportion to its weight
    (weight 0: only after all the others)."""
    if len(models) == 1:
        return list(models)
    pool = [m for m in models if weight(m) > 0]
    ordered = []
    while pool:
        pick = pool[0] if len(pool) == 1 else rng.choices(pool, weights=[weight(m) for m in pool])[0]
        ordered.append(pick)
        pool.remove(pick)
    return ordered + [m for m in models if weight(m) <= 0]


def candidates(snap, group, usable, rng=random):
    """Every model that may serve a call to `group` (a list of models), in order:
    the group by weight, then the fallbacks of its members with their groups.
    `usable(model)` says whether the caller may use a model (its access rules)."""
    ordered = [m for m in by_weight(group, rng) if usable(m)]
    seen = {m.id for m in ordered}
    for member in list(ordered):
        for fallback_id in member.fallbacks or ():
            fallback = snap.models.get(fallback_id)
            if fallback is None or fallback.id in seen or fallback not in snap.model_list:
                continue  # gone, inactive, its api inactive, or already in the list
            rest = [m for m in members(snap, fallback) if m is not fallback]
            for model in [fallback, *by_weight(rest, rng)]:
                if model.id not in seen and usable(model):
                    seen.add(model.id)
                    ordered.append(model)
    return ordered


def without_cooling(models, cooling):
    """`models` but those whose api cools down ({api id: until}); when that leaves
    none, all of them, the soonest to end its cooldown first."""
    ready = [m for m in models if m.api not in cooling]
    return ready or sorted(models, key=lambda m: cooling[m.api])


def retry_after(value):
    """Seconds from an upstream's Retry-After header (seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is not None:
            when = when.replace(tzinfo=None) - when.utcoffset()
        seconds = (when - utcnow()).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), 86400.0)


def backoff(retry_number, told=None):
    """Seconds to wait before trying the same api again: what it said in Retry-After,
    else 0.25 s doubling each time, at most 2 s."""
    if told is not None:
        return told
    return min(0.25 * 2 ** retry_number, 2.0)
