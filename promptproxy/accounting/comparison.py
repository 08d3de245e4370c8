"""A prompt's versions side by side: for each, what its calls did (calls, errors,
tokens, the median latency) and what their callers thought of them (the average
feedback score and how many scores there are), read from the request rows and
the feedback on them. For the admin's comparison of versions, and an A/B split's
outcome.
"""

import peewee

from ..collections import BY_NAME


def compare_versions(prompt_id, since=None):
    """One dict per version of the prompt, oldest first, and one for version None
    when some calls were served before the prompt had versions:

        {"version", "labels", "weight", "calls", "errors" (status >= 400),
         "input_tokens", "output_tokens", "tokens" (total), "p50_latency_ms",
         "average_score" (None without feedback), "scores"}

    `since` (a naive UTC datetime) counts only calls made from then on. The
    median is the nearest rank: the middle latency, the lower one of two."""
    requests, feedback = BY_NAME["requests"].model, BY_NAME["feedback"].model
    versions = BY_NAME["prompt_versions"].model
    calls = requests.prompt == prompt_id
    if since is not None:
        calls &= requests.created >= since
    figures = {v.version: empty(v.version, v.labels or [], v.weight)
               for v in versions.select().where(versions.prompt == prompt_id).order_by(versions.version)}
    totals = (requests
              .select(requests.prompt_version, peewee.fn.COUNT(requests.id),
                      peewee.fn.SUM(peewee.Case(None, [(requests.status >= 400, 1)], 0)),
                      peewee.fn.SUM(requests.input_tokens), peewee.fn.SUM(requests.output_tokens),
                      peewee.fn.SUM(requests.total_tokens))
              .where(calls).group_by(requests.prompt_version).tuples())
    for version, count, errors, input_tokens, output_tokens, tokens in totals:
        row = figures.setdefault(version, empty(version))
        row.update(calls=count, errors=int(errors or 0), input_tokens=int(input_tokens or 0),
                   output_tokens=int(output_tokens or 0), tokens=int(tokens or 0))
        row["p50_latency_ms"] = median_latency(requests, calls, version)
    scores = (feedback
              .select(requests.prompt_version, peewee.fn.AVG(feedback.score), peewee.fn.COUNT(feedback.id))
              .join(requests, on=(feedback.request == requests.id))
              .where(calls).group_by(requests.prompt_version).tuples())
    for version, average, count in scores:
        figures.setdefault(version, empty(version)).update(average_score=float(average), scores=count)
    return sorted(figures.values(), key=lambda row: (row["version"] is not None, row["version"] or 0))


def empty(version, labels=(), weight=None):
    return {"version": version, "labels": list(labels), "weight": weight, "calls": 0, "errors": 0,
            "input_tokens": 0, "output_tokens": 0, "tokens": 0, "p50_latency_ms": None,
            "average_score": None, "scores": 0}


def median_latency(requests, calls, version):
    same = requests.prompt_version.is_null() if version is None else requests.prompt_version == version
    timed = requests.select(requests.latency_ms).where(calls & same & requests.latency_ms.is_null(False))
    count = timed.count()
    if not count:
        return None
    return timed.order_by(requests.latency_ms).limit(1).offset((count - 1) // 2).scalar()
