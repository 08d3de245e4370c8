"""Error answers, translated both ways: an Anthropic error as OpenAI's error shape
and an OpenAI-style one (in any of the shapes OpenAI-compatible servers use) as
Anthropic's, keeping the message word for word and the status a client acts on."""

import json

from ..base import Refused, error_message
from ..openai import error_body


class TranslationError(Refused):
    """Input that cannot be translated; str(e) is a client-facing message."""


# Anthropic error type -> (HTTP status, OpenAI error type).  The status is used
# only when the answer's own status is not an error (an `error` event inside a
# 200 stream); 529, which no OpenAI client knows, becomes 503.
ANTHROPIC_ERRORS = {
    "invalid_request_error": (400, "invalid_request_error"),
    "authentication_error": (401, "authentication_error"),
    "billing_error": (402, "insufficient_quota"),
    "permission_error": (403, "permission_error"),
    "not_found_error": (404, "not_found_error"),
    "request_too_large": (413, "invalid_request_error"),
    "rate_limit_error": (429, "rate_limit_error"),
    "api_error": (500, "api_error"),
    "timeout_error": (504, "api_error"),
    "overloaded_error": (503, "overloaded_error"),
}
# HTTP status -> Anthropic error type, as Anthropic's own API documents them.
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                   402: "billing_error", 403: "permission_error", 404: "not_found_error",
                   413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                   503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}


def error_to_openai(status, body):
    """An Anthropic error answer as (status, OpenAI error body).

    ``body`` may be the parsed JSON, raw bytes or text, or None.  The message is
    kept word for word; the Anthropic error type goes in ``code`` so a client
    can still tell an overload from an ordinary server error.
    """
    data, text = _parse(body)
    error = data.get("error") if isinstance(data, dict) else None
    kind = error.get("type") if isinstance(error, dict) and isinstance(error.get("type"), str) else None
    if kind is None and status == 529:
        kind = "overloaded_error"
    known = ANTHROPIC_ERRORS.get(kind)
    if status == 529:
        status = 503
    elif not isinstance(status, int) or status < 400:
        status = known[0] if known else 500
    message = error_message(data, text) or f"The upstream answered HTTP {status}."
    return status, error_body(status, message, known[1] if known else None, kind)


def error_to_anthropic(status, body):
    """An OpenAI-style error answer as (status, Anthropic error body).

    OpenAI-compatible servers vary: ``{"error": {...}}``, ``{"error": "text"}``,
    FastAPI's ``{"detail": ...}``, or plain text; the message is found in any of
    them.  The Anthropic type follows the status, as Anthropic's API documents.
    """
    data, text = _parse(body)
    error = data.get("error") if isinstance(data, dict) else None
    openai_type = error.get("type") if isinstance(error, dict) else None
    if not isinstance(status, int) or status < 400:
        if openai_type in ANTHROPIC_ERRORS:
            kind = openai_type
            status = 529 if kind == "overloaded_error" else ANTHROPIC_ERRORS[kind][0]
        else:
            kind, status = "api_error", 500
    else:
        kind = ANTHROPIC_TYPES.get(status) or (
            "invalid_request_error" if status < 500 else "api_error")
    message = error_message(data, text) or f"The upstream answered HTTP {status}."
    return status, {"type": "error", "error": {"type": kind, "message": message}}


def _parse(body):
    """(parsed JSON or None, raw text or None) of an error body in any form."""
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            return json.loads(body), body
        except ValueError:
            return None, body
    return body, None
