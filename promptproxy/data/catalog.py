"""An in-memory copy of what the proxy looks up on every call: keys, users, apis,
models, and prompts with their versions.

Reading five tables per request would cost more than the rest of the request.
Instead each worker keeps a snapshot and, at most every `ttl` seconds, reads one
number: the change counter that every admin or API write bumps (see
`db.bump_version`). When it moved, the snapshot is rebuilt. So an admin's edit
(a revoked key, a new prompt) reaches every worker within `ttl` seconds.

With PostgreSQL, every instance also hears of each change as it commits (see
`db.ChangeListener`) and calls `changed()`, so the next call reads the counter at
once, whatever the TTL: the TTL is then only the fallback for a notification
that was lost.

A miss is different: a key, model or prompt that the snapshot does not know may
have been created a moment ago, by a script that now calls with it. So a miss
asks for `fresh()`, which checks the counter at once, and the call sees its own
writes, on any worker.
"""

import logging
import threading
import time
from dataclasses import dataclass, field

from ..collections import BY_NAME
from . import crypto
from .db import UNREACHABLE, bump_version, connection, read_version, write
from .fields import GatewayKey

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    version: int = -1
    keys: dict = field(default_factory=dict)  # stored digest -> key row
    users: dict = field(default_factory=dict)  # id -> user row
    # id -> api row, its api_key decrypted into .secret; when that fails, .secret is
    # None and .secret_error says why (the call must be refused, not sent without a key)
    apis: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)  # id and public name -> model row
    # public name -> the usable models sharing it (a group), in listing order
    groups: dict = field(default_factory=dict)
    prompts: dict = field(default_factory=dict)  # id and public name -> prompt row, with its versions
    model_list: list = field(default_factory=list)  # active models, in listing order
    prompt_list: list = field(default_factory=list)

    def find_key(self, token):
        """The key row for a presented gateway key, or None. Keys stored before the
        HMAC are found by their plain SHA-256, but only when the HMAC misses."""
        row = self.keys.get(GatewayKey.digest(token))
        if row is None:
            row = self.keys.get(GatewayKey.legacy_digest(token))
            if row is not None and not row.key_legacy:
                return None
        return row


def load(version):
    """Read the six tables into a new Snapshot."""
    snap = Snapshot(version=version)
    for row in BY_NAME["keys"].model.select():
        if row.key:
            snap.keys[row.key] = allow_sets(row)
    snap.users = {row.id: allow_sets(row) for row in BY_NAME["users"].model.select()}
    for row in BY_NAME["apis"].model.select():
        row.secret, row.secret_error = "", None
        if row.api_key:
            try:
                row.secret = crypto.decrypt_stored(row.api_key)
            except crypto.CannotDecrypt:
                row.secret = None
                row.secret_error = (f"The API key stored for the api '{row.name}' cannot be decrypted "
                                    "with the server's encryption key; an admin must enter it again.")
        snap.apis[row.id] = row
    models = BY_NAME["models"].model
    for row in models.select().order_by(models.name, models.model):
        snap.models[row.id] = row
        api = snap.apis.get(row.api)
        if row.active and api is not None and api.active:
            snap.model_list.append(row)
    for row in snap.model_list:  # names second, so an id always wins over a name
        if row.name:
            snap.models.setdefault(row.name, row)
            snap.groups.setdefault(row.name, []).append(row)
    prompts = BY_NAME["prompts"].model
    versions = versions_by_prompt()
    for row in prompts.select().order_by(prompts.name, prompts.created):
        with_versions(row, versions.get(row.id, []))
        snap.prompts[row.id] = row
        if row.active:
            snap.prompt_list.append(row)
    for row in snap.prompt_list:
        if row.name:
            snap.prompts.setdefault(row.name, row)
    return snap


def versions_by_prompt():
    model = BY_NAME["prompt_versions"].model
    versions = {}
    for row in model.select().order_by(model.version):
        versions.setdefault(row.prompt, []).append(row)
    return versions


def with_versions(prompt, versions):
    """A prompt row with its versions, for choosing one on each call without a query
    (see promptproxy/prompting.py): `versions` by number, `labels` by label, the
    `latest` (None only for a prompt written before versions, outside PromptProxy)
    and the `weighted` ones, those an A/B split draws from."""
    prompt.versions = {version.version: version for version in versions}
    prompt.labels = {label: version for version in versions for label in version.labels or []}
    prompt.latest = versions[-1] if versions else None
    prompt.weighted = [version for version in versions if version.weight]
    return prompt


def allow_sets(row):
    """Allow-lists as sets, for a cheap check on every call (empty: everything)."""
    for name in ("apis", "models", "prompts"):
        setattr(row, name, frozenset(getattr(row, name) or ()))
    return row


class Catalog:
    def __init__(self, ttl=0.5, clock=time.monotonic):
        self.ttl = ttl
        self.clock = clock
        self._snapshot = Snapshot()
        self._checked = float("-inf")  # when the counter was last read
        self._announced = 0  # changes announced so far (see `changed`)
        self._read = 0  # of which the last read of the counter began after this many
        self._reconnected = self._reloaded = 0  # the same for reconnections and full reloads
        self._lock = threading.Lock()

    def changed(self, reconnected=False):
        """The data changed (a notification said so): the next call reads the
        counter. A read that began before now does not count, as it may have read
        the counter before the change was committed.

        `reconnected`: the listener lost the database and is back, and changes made
        meanwhile went unheard. The next call then reloads everything whatever the
        counter says: a server that crashed may have lost its last commits (with
        synchronous_commit=off) and its counter may since have come back to a
        number this snapshot holds for other data."""
        if reconnected:
            self._reconnected += 1
        self._announced += 1

    def _stale(self):
        return self.clock() - self._checked >= self.ttl or self._read != self._announced

    def current(self):
        """The snapshot, refreshed first if the data may have changed."""
        if not self._stale():
            return self._snapshot
        with self._lock:
            if self._stale():
                self._refresh()
        return self._snapshot

    def fresh(self):
        """The snapshot as of now: the change counter is read whatever the TTL.
        Callers that arrive while another one refreshes share its result."""
        asked = self.clock()
        with self._lock:
            if self._checked <= asked:
                self._refresh()
        return self._snapshot

    def _refresh(self):
        now, announced, reconnected = self.clock(), self._announced, self._reconnected
        try:
            with connection():
                version = read_version()
                if version != self._snapshot.version or reconnected != self._reloaded:
                    self._snapshot = load(version)
        except UNREACHABLE:
            if self._snapshot.version < 0:
                raise
            # The database is down: go on with what was read last (nobody can
            # change it meanwhile), and look again on the next call.
            log.warning("the database is unavailable; calls are checked against the last known data")
            return
        self._checked, self._read, self._reloaded = now, announced, reconnected


def rehash_key(row, token):
    """Store a key found by its legacy SHA-256 as an HMAC, the first time it is used,
    and drop the clear prefix unless PromptProxy generated the key. The update only
    matches while the legacy digest is there, so concurrent first uses write once."""
    keys = BY_NAME["keys"].model

    def rehash():
        changed = (keys.update(key=GatewayKey.digest(token), key_legacy=False,
                               key_prefix=token[:GatewayKey.SHOWN] if GatewayKey.generated(token) else None)
                   .where(keys.id == row.id, keys.key == GatewayKey.legacy_digest(token))
                   .execute())
        if changed:
            bump_version()
    write(rehash)
