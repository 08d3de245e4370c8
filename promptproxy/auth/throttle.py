"""Slows down password guessing: after a few failures from one address for one
account, each further try must wait, doubling up to five minutes.

Failures are kept in data.db, so every worker and every instance on the same data
directory sees the same count. The address is the client's own: with
PROMPTPROXY_TRUSTED_PROXIES set, the one its reverse proxies report (see
`create_app`), so one attacker behind the proxy locks out only their own address
for that account, never the admin's.
"""

import hashlib
import time

import peewee
from flask import request

from ..data.db import BaseModel, write

FREE_TRIES = 5
FORGET_AFTER = 15 * 60
MAX_WAIT = 300


class LoginFailure(BaseModel):
    key = peewee.CharField(primary_key=True, max_length=64)  # SHA-256 of address and account
    count = peewee.IntegerField(default=0)
    last = peewee.DoubleField(index=True)  # Unix time of the latest failure

    class Meta:
        table_name = "_login_failures"


def attempt(account):
    """The throttle key of a login to `account` from the current request's client."""
    return (request.remote_addr or "", str(account).strip().lower())


def _digest(key):
    text = "\0".join(key) if isinstance(key, tuple) else key
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class LoginThrottle:
    def __init__(self, clock=time.time):
        self.clock = clock  # wall-clock time: shared with other processes through the table

    def wait(self, key):
        """Seconds until `key` may try again; 0 when it may now."""
        row = LoginFailure.get_or_none(LoginFailure.key == _digest(key))
        now = self.clock()
        if row is None or now - row.last > FORGET_AFTER or row.count < FREE_TRIES:
            return 0
        delay = min(MAX_WAIT, 2 ** (row.count - FREE_TRIES + 1))
        return max(0, int(row.last + delay - now + 0.999))

    def failed(self, key):
        write(self._count_failure, _digest(key), self.clock())

    @staticmethod
    def _count_failure(digest, now):
        forgotten = LoginFailure.last < now - FORGET_AFTER
        LoginFailure.insert(key=digest, count=1, last=now).on_conflict(
            conflict_target=[LoginFailure.key],
            update={LoginFailure.count: peewee.Case(None, [(forgotten, 1)], LoginFailure.count + 1),
                    LoginFailure.last: now}).execute()
        LoginFailure.delete().where(forgotten).execute()  # bounded under a spray of addresses

    def succeeded(self, key):
        write(LoginFailure.delete().where(LoginFailure.key == _digest(key)).execute)
