"""Slows down password guessing: after a few failures from one address for one
account, each further try must wait, doubling up to five minutes."""

import time

FREE_TRIES = 5
FORGET_AFTER = 15 * 60
MAX_WAIT = 300


class LoginThrottle:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.failures = {}  # key -> (count, time of last failure)

    def wait(self, key):
        """Seconds until `key` may try again; 0 when it may now."""
        count, last = self.failures.get(key, (0, 0.0))
        now = self.clock()
        if now - last > FORGET_AFTER:
            self.failures.pop(key, None)
            return 0
        if count < FREE_TRIES:
            return 0
        delay = min(MAX_WAIT, 2 ** (count - FREE_TRIES + 1))
        return max(0, int(last + delay - now + 0.999))

    def failed(self, key):
        count, last = self.failures.get(key, (0, 0.0))
        if self.clock() - last > FORGET_AFTER:
            count = 0
        self.failures[key] = (count + 1, self.clock())
        if len(self.failures) > 10_000:  # bound memory under a spray of addresses
            oldest = sorted(self.failures, key=lambda k: self.failures[k][1])[:5_000]
            for k in oldest:
                del self.failures[k]

    def succeeded(self, key):
        self.failures.pop(key, None)
