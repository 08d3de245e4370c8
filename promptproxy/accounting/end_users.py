"""Who a call is for: the end user behind the key's owner, such as the person using
a chat UI that calls PromptProxy with one key for everyone.

Clients say it in one of three ways, taken in this order (the first that holds a
usable value wins):

1. OpenAI's `user` field in the request body;
2. Anthropic's `metadata.user_id`;
3. Open WebUI's forwarded user headers (its ENABLE_FORWARD_USER_INFO_HEADERS):
   `X-OpenWebUI-User-Email`, else `-Id`, else `-Name`. The email first, because it
   names one person and reads well; the id names one person too but is opaque;
   names need not be unique. Open WebUI percent-encodes the name, so it is decoded.

The value is recorded as it was sent, once made harmless: it is untrusted input,
so anything but a string is ignored, at most MAX_LENGTH characters are kept,
control and other invisible characters are removed (whitespace becomes a plain
space), and a value left empty counts as absent. No end user is ever one of those
characters, which the usage rollup relies on (see stats.ALL_END_USERS).

This runs on every call: when a client says nothing it costs a few dict lookups.
"""

from urllib.parse import unquote

MAX_LENGTH = 200

# WSGI environ keys of Open WebUI's headers, in order, and whether the value is percent-encoded
OPEN_WEBUI_HEADERS = (("HTTP_X_OPENWEBUI_USER_EMAIL", False), ("HTTP_X_OPENWEBUI_USER_ID", False),
                      ("HTTP_X_OPENWEBUI_USER_NAME", True))


def end_user(body, environ):
    """The end user a call names, from its JSON body (a dict) and its WSGI environ; None if none."""
    value = cleaned(body.get("user"))
    if value:
        return value
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        value = cleaned(metadata.get("user_id"))
        if value:
            return value
    for name, quoted in OPEN_WEBUI_HEADERS:
        raw = environ.get(name)
        if raw:
            value = cleaned(header_text(raw, quoted))
            if value:
                return value
    return None


def header_text(raw, quoted=False):
    """A header's text: WSGI servers hand over its bytes as Latin-1, but clients send UTF-8."""
    try:
        text = raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        text = raw
    return unquote(text) if quoted and "%" in text else text


def cleaned(value):
    """`value` made fit to record as an end user, or None when it is not a string
    or nothing is left of it."""
    if not isinstance(value, str):
        return None
    value = value[:MAX_LENGTH]
    if not value.isprintable():  # the rare case: look at each character
        value = "".join(c if c.isprintable() else " " if c.isspace() else "" for c in value)
    return value.strip() or None
