"""Error answers the HTTP server writes itself, for requests it could not read
(a request line or headers over its limits, broken HTTP) and so never handed to
the app. They are in the caller's format all the same, chosen by the path when
it was read: Anthropic's for /v1/messages, PocketBase's for /api/, OpenAI's
otherwise (a /v1 client is the likeliest caller of a gateway).

Used by gunicorn's worker (worker.py) and by `serve` (server.py). Only the
standard library is imported here: gunicorn's master imports this module before
gevent patches anything (see the package's docstring).
"""

import json
from http import HTTPStatus
from urllib.parse import urlsplit

MESSAGES = {
    400: "The request is not valid HTTP.",
    414: "The request line is too long: at most {line} bytes.",
    431: "The request's header fields are too large: at most {fields} header lines of "
         "{field} bytes each.",
}


def message(status, **limits):
    """A fixed message for a status (never the client's bytes echoed back)."""
    text = MESSAGES.get(status)
    if text is None:
        return phrase(status)
    return text.format(**limits)


def phrase(status):
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def request_path(target):
    """The path of a request target (origin or absolute form); "" if unreadable."""
    try:
        return urlsplit(target or "").path
    except ValueError:
        return ""


def error_document(path, status, text):
    """The error body a client of this path expects."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        kind = "request_too_large" if status in (413, 431) else (
            "invalid_request_error" if status < 500 else "api_error")
        return {"type": "error", "error": {"type": kind, "message": text}}
    if path.startswith("/api/"):
        return {"status": status, "message": text, "data": {}}
    kind = "invalid_request_error" if status < 500 else "api_error"
    return {"error": {"message": text, "type": kind, "param": None, "code": None}}


def error_response(path, status, text):
    """A complete HTTP/1.1 response that closes the connection (the rest of the
    request is unread, so the connection cannot be reused)."""
    body = json.dumps(error_document(path, status, text)).encode()
    head = (f"HTTP/1.1 {status} {phrase(status)}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body
