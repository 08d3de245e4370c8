"""An http(s) URL with a host, stored without its trailing slash (an upstream's base URL)."""

from urllib.parse import urlsplit

from .base import Invalid
from .text import Text


class Url(Text):
    def __init__(self, name, *, max_length=2048, **kw):
        super().__init__(name, max_length=max_length, **kw)

    def parse(self, value):
        value = super().parse(value)
        try:
            parts = urlsplit(value)
        except ValueError:  # e.g. an unclosed IPv6 bracket: "http://[::1"
            raise Invalid("validation_invalid_url", "The host is not a valid name or address.") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid("validation_invalid_url",
                          "Must be an http:// or https:// URL, like http://localhost:11434/v1.")
        try:
            parts.port  # noqa: B018 -- reading the port is what checks it
        except ValueError:
            raise Invalid("validation_invalid_url", "The port is not a number.") from None
        return value.rstrip("/")
