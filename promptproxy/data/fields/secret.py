"""A secret PromptProxy must send on (an upstream API key): encrypted at rest with
Fernet, never in JSON (only whether one is set), left unchanged when an edit
leaves it blank."""

from .. import crypto
from .base import KEEP, Field, Invalid


class Secret(Field):
    sortable = False
    secret = True

    def clean(self, value):
        if value is None or value == "":
            return KEEP
        if not isinstance(value, str):
            raise Invalid("validation_invalid_type", "Must be text.")
        return value.strip() or KEEP

    def store(self, value):
        return {self.name: crypto.encrypt(value) if value else None}

    def json_items(self, row):
        return {self.name + "_set": bool(getattr(row, self.name))}  # write-only
