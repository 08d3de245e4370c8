"""What every provider's code shares: the refusal of a call it cannot make as
asked, and reading what clients and upstreams send (JSON that may not be, token
counts, the message of an error answer in whichever shape the server chose, the
user's last message in either format)."""

import json

MAX_ERROR_TEXT = 1000  # a non-JSON error page is quoted to the client, but not all of it


class Refused(ValueError):
    """A call this provider cannot make as asked; str(e) is a client-facing message
    and `param` the request field at fault, if one is."""

    def __init__(self, message, param=None):
        super().__init__(message)
        self.param = param


def parsed_json(data):
    try:
        return json.loads(data)
    except ValueError:
        return None


def error_message(data, raw=None):
    """The message of an upstream's error answer: from OpenAI's and Anthropic's
    `{"error": {"message"}}`, `{"error": "text"}`, `{"message"}` or FastAPI's
    `{"detail"}`; else the start of its raw text (a proxy's HTML page, say); else
    None. Upstream answers are untrusted: a message that is not a string comes
    back as its JSON."""
    message = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        elif isinstance(error, str):
            message = error
        else:
            message = data.get("message") or data.get("detail")
    if message not in (None, ""):
        return message if isinstance(message, str) else json.dumps(message)
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("utf-8", "replace")
    text = raw.strip() if isinstance(raw, str) else ""
    return text[:MAX_ERROR_TEXT] or None


def error_text(data, raw):
    """An upstream's error message as its request row notes it: never more than 500
    characters."""
    return (error_message(data, raw) or "")[:500]


def token_count(value):
    """A token count from an upstream, if it is one: upstreams are untrusted input."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 62:
        return value
    return None


def last_user_message(body):
    """What the user said last, for a tracked key's row: the last user message of a
    chat or Messages request (its content as JSON when it is not plain text), or a
    completion's prompt."""
    messages = (body or {}).get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    prompt = (body or {}).get("prompt")
    return prompt if isinstance(prompt, str) else None
