"""The long-lived parts of one PromptProxy app, built once by `create_app`.

Each request finds them through `services()`: one typed object, so a reader sees
what exists and who builds it, instead of string keys scattered over modules.
Stored in `app.extensions` under one name, as Flask extensions keep their state;
nothing else reads that key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:  # the types only: importing this module stays cheap
    from urllib3 import HTTPConnectionPool

    from .accounting.limits import Limiter
    from .accounting.metrics import Metrics
    from .accounting.recorder import Recorder
    from .accounting.upstreams import Upstreams
    from .auth.throttle import LoginThrottle
    from .data.catalog import Catalog
    from .data.db import ChangeListener
    from .data.writer import Writer

KEY = "promptproxy"


@dataclass(eq=False)
class Services:
    settings: dict  # config.from_environ's values; the same dict as app.config["PROMPTPROXY"]
    catalog: Catalog  # keys, models, prompts and apis as the proxy sees them
    writer: Writer  # data.db's single writer thread
    recorder: Recorder  # request rows, written in batches through the writer
    limiter: Limiter  # rate and concurrency limits, in limits.db
    upstreams: Upstreams  # upstream apis' cooldowns, beside the limits
    throttle: LoginThrottle  # failed logins, shared by the admin's login and the REST API's
    metrics: Metrics  # the figures of GET /metrics
    # PostgreSQL: tells the catalog of every change an instance commits (None on SQLite)
    listener: ChangeListener | None = None
    # base URL -> its keep-alive connection pool to that upstream; per app, so that
    # an app's connections end with it
    pools: dict[str, HTTPConnectionPool] = field(default_factory=dict)

    def install(self, app):
        app.extensions[KEY] = self
        return self

    def stop(self):
        """Stop listening for changes, write every pending request row, end the
        writer threads and close the upstream connections. Idempotent, never raises."""
        if self.listener is not None:
            self.listener.stop()
        self.recorder.stop()  # stops the data writer after the last rows
        self.limiter.stop()
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()


def services(app=None) -> Services:
    """The services of `app`, by default the app handling the current request."""
    return (current_app if app is None else app).extensions[KEY]
