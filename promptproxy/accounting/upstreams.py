"""Upstream apis' health as every worker and instance sees it: cooldowns.

An api that failed retryably FAILURES times within WINDOW seconds, or answered 429
with a Retry-After, cools down: the proxy skips it for the longer of the api's
`cooldown` and that Retry-After, while other members of a group or fallbacks
serve. The state lives beside the rate-limit counts (limits.db, or the shared
PostgreSQL database), so a cooldown started by one worker holds for all of them,
and every read and write runs on the limiter's writer thread, off the event loop.

A call reads the state only when it has a choice to make (more than one
candidate): a lone model is tried whatever its state, so the common call pays
nothing here. Each api also keeps its last few errors, which the admin shows.
"""

import json
import logging
import time

from .limits import driver_unavailable

log = logging.getLogger(__name__)

FAILURES = 3  # retryable failures ...
WINDOW = 60  # ... within this many seconds start a cooldown
DEFAULT_COOLDOWN = 30
KEPT_ERRORS = 5  # recent errors kept per api, for the admin


class Upstreams:
    def __init__(self, limiter, clock=time.time):
        self.counts = limiter.counts
        self.writer = limiter.writer
        self.clock = clock

    def cooling(self, api_ids):
        """{api id: when its cooldown ends (epoch seconds)} for those of `api_ids`
        cooling down now. When the state cannot be read, none is: the call goes on."""
        ids = sorted(set(api_ids))
        if not ids:
            return {}
        try:
            return self.writer.run(self._cooling, ids, self.clock())
        except Exception as exc:
            if not driver_unavailable(exc):
                raise
            log.warning("upstream cooldowns cannot be read now; every api is tried (%s)", exc)
            return {}

    def _cooling(self, ids, now):
        marks = ", ".join("?" * len(ids))
        return dict(self.counts.execute(f"SELECT api, until FROM {self.counts.COOLDOWNS} "
                                        f"WHERE api IN ({marks}) AND until > ?", (*ids, now)).fetchall())

    def failed(self, api, error, retry_after=None):
        """Count a retryable failure of `api` (a 429 with `retry_after` seconds
        starts a cooldown at once). Returns when the api cools down until, or None."""
        try:
            return self.writer.run(self._failed, api.id, api.cooldown, error, retry_after, self.clock())
        except Exception as exc:
            if not driver_unavailable(exc):
                raise
            log.warning("a failure of the api '%s' could not be counted (%s)", api.name, exc)
            return None

    def _failed(self, api_id, cooldown, error, retry_after, now):
        counts, table = self.counts, self.counts.COOLDOWNS
        try:
            counts.begin([f"cooldown:{api_id}"])
            row = counts.execute(f"SELECT failures, since, until, errors FROM {table} WHERE api = ?",
                                 (api_id,)).fetchone()
            failures, since, until, errors = row if row else (0, now, 0.0, "[]")
            if since < now - WINDOW:
                failures, since = 0, now
            failures += 1
            errors = ([{"at": now, "error": error}] + json.loads(errors or "[]"))[:KEPT_ERRORS]
            started = None
            if failures >= FAILURES or retry_after:
                cooldown = DEFAULT_COOLDOWN if cooldown is None else cooldown
                started = max(until or 0.0, now + max(cooldown, retry_after or 0))
                until, failures, since = started, 0, now
            counts.execute(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?) ON CONFLICT (api) DO UPDATE SET "
                           "failures = excluded.failures, since = excluded.since, until = excluded.until, "
                           "errors = excluded.errors", (api_id, failures, since, until, json.dumps(errors)))
            counts.execute("COMMIT")
        except BaseException:
            try:
                counts.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 -- the connection is gone; the next use opens one
                counts.close(forget=False)
            raise
        return started

    def state(self):
        """{api id: {"until": epoch seconds or None, "failures": n, "errors": [{at, error}]}}
        for every api with a recorded failure: what the admin shows."""
        rows = self.writer.run(lambda: self.counts.execute(
            f"SELECT api, failures, since, until, errors FROM {self.counts.COOLDOWNS}").fetchall())
        now = self.clock()
        return {api: {"until": until if until and until > now else None,
                      "failures": failures if since >= now - WINDOW else 0,
                      "errors": json.loads(errors or "[]")}
                for api, failures, since, until, errors in rows}

    def clear(self, api_id):
        """End an api's cooldown and forget its failures (the admin's "Try it now")."""
        self.writer.run(lambda: self.counts.execute(f"DELETE FROM {self.counts.COOLDOWNS} WHERE api = ?",
                                                    (api_id,)))
