"""A key clients present to PromptProxy, stored as its HMAC only."""

import hashlib
import re
import secrets

import peewee

from .. import crypto
from .base import Field, Invalid


class GeneratedKey(str):
    """A gateway key PromptProxy made: its first characters may be shown."""


class GatewayKey(Field):
    """Only the key's HMAC (see `crypto.digest`) is stored, with a short prefix in
    clear for keys PromptProxy generated; a key of one's own keeps no character in
    clear. Left blank on creation, a random key is generated; either way the full
    key is revealed once, right after creation.

    Keys stored before the HMAC (a plain SHA-256, `<name>_legacy` set) still work
    and are rehashed on first use (see `catalog.Snapshot.find_key`)."""

    PREFIX = "pp-"
    SHOWN = 10  # "pp-" and 7 of the 40 random characters
    sortable = False
    secret = True
    immutable = True
    reveal_once = True

    def __init__(self, name, **kw):
        super().__init__(name, unique=True, **kw)

    def columns(self):
        return {
            self.name: peewee.CharField(max_length=64, null=True, unique=True),
            self.name + "_prefix": peewee.CharField(max_length=16, null=True),
            self.name + "_legacy": peewee.BooleanField(default=False),
        }

    @classmethod
    def generate(cls):
        return GeneratedKey(cls.PREFIX + secrets.token_urlsafe(30))

    @classmethod
    def generated(cls, key):
        """Whether `key` has the shape of a key PromptProxy generates."""
        return key.startswith(cls.PREFIX) and re.fullmatch(r"[\w-]{40}", key[len(cls.PREFIX):]) is not None

    @staticmethod
    def digest(key):
        return crypto.digest(key)

    @staticmethod
    def legacy_digest(key):
        return hashlib.sha256(key.encode()).hexdigest()

    def clean(self, value):
        if value is None or value == "":
            return self.generate()
        if not isinstance(value, str):
            raise Invalid("validation_invalid_type", "Must be text.")
        value = value.strip()
        if len(value) < 16 or any(c.isspace() for c in value):
            raise Invalid("validation_invalid_key",
                          "A key of your own must be at least 16 characters with no spaces.")
        return value

    def store(self, value):
        prefix = value[:self.SHOWN] if isinstance(value, GeneratedKey) else None
        return {self.name: self.digest(value), self.name + "_prefix": prefix, self.name + "_legacy": False}

    def json_items(self, row):
        # never the key itself; "" for a key of one's own
        return {self.name + "_prefix": getattr(row, self.name + "_prefix") or ""}
