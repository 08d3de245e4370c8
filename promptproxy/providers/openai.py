"""OpenAI's format, for OpenAI-format clients (/v1/chat/completions, /v1/completions)
and OpenAI-compatible upstreams: the stored prompt's rewrite of a request, the
pass-through route and its stream events, OpenAI's error shape and the
`Authorization: Bearer` authentication.

A route holds what one (client, upstream) pairing needs, the same for every
pairing: `path` (the upstream endpoint, None when the route answers itself),
`prepare(body)`, `answer(call, parsed)`, `error(status, parsed, raw)` and
`events(call, hide_usage)`, whose object turns each upstream stream event into
what the client gets (`event`, `ended`, `failed`). The pairings with Anthropic on
either side are in anthropic/.
"""

import json
import re

from . import sse
from .base import Refused, error_text, parsed_json

NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')
NULL_FINISH = re.compile(rb'"finish_reason"\s*:\s*null')
EMPTY = (None, "", {}, [])

# HTTP status -> OpenAI error type, for errors that name no type of their own. OpenAI
# has no overload type (it answers an overload with 503 and `server_error`), so 503
# is the default `api_error`; an Anthropic `overloaded_error` keeps its own type.
OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "invalid_request_error",
                429: "rate_limit_error"}


def error_body(status, message, type_=None, code=None, param=None):
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": type_ or OPENAI_TYPES.get(status, "api_error"),
                      "param": param, "code": code}}


def error_event(message, code):
    """An error ending an OpenAI stream, as OpenAI sends one."""
    return b"data: " + json.dumps(error_body(None, message, "api_error", code)).encode() + b"\n\n"


def authenticate(headers, secret):
    """An OpenAI-compatible api's key, as OpenAI's SDKs send it."""
    if secret:
        headers["Authorization"] = "Bearer " + secret


# -- the stored prompt, put in the request -------------------------------------------

def rewrite_chat(body, model, prompt):
    """Chat: the stored instructions become the first system message."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise Refused("'messages' must be an array of messages.", param="messages")
    if prompt is not None:
        if prompt.replace_system:
            messages = [m for m in messages if not (isinstance(m, dict) and m.get("role") == "system")]
        body["messages"] = [{"role": "system", "content": prompt.instructions}, *messages]
        if prompt.tools and not body.get("tools"):
            body["tools"] = prompt.tools
    body["model"] = model.model
    return body


def rewrite_completion(body, model, prompt):
    """Completions: the instructions and a blank line go before the prompt text."""
    if prompt is not None:
        text = body.get("prompt")
        prefix = prompt.instructions + "\n\n"
        if isinstance(text, str):
            body["prompt"] = prefix + text
        elif isinstance(text, list) and text and all(isinstance(t, str) for t in text):
            body["prompt"] = [prefix + t for t in text]
        else:
            raise Refused("With a stored prompt, 'prompt' must be a string or an array of "
                          "strings (token arrays cannot be combined with it).", param="prompt")
    body["model"] = model.model
    return body


# -- OpenAI client, OpenAI upstream: passed through -------------------------------------

def wants_usage(body):
    """Ask a streaming upstream for its final usage chunk; True if the client did not
    ask for it itself, so that chunk must be kept from the client."""
    if not body.get("stream"):
        return False
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return False
    body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return True


class OpenAIRoute:
    def __init__(self, endpoint):
        self.path = endpoint

    def prepare(self, body):
        """(body for the upstream, hide its usage chunk from the client?)"""
        hide_usage = wants_usage(body)
        return body, hide_usage

    def answer(self, call, parsed):
        call.usage = parsed.get("usage") if isinstance(parsed.get("usage"), dict) else None
        call.reply_parts.append(reply(parsed))
        return parsed

    def error(self, status, parsed, raw):
        return status, None  # the upstream's own error answer, passed back as it is

    def events(self, call, hide_usage):
        return OpenAIEvents(call, hide_usage)


def reply(parsed):
    """The first choice's text, for tracked keys; '' when the answer has none of
    the expected shape (upstream answers are untrusted)."""
    choices = parsed.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, dict):
        return ""
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


class OpenAIEvents:
    """An OpenAI-format stream passed on to an OpenAI client: usage is noted (and
    kept from a client that did not ask for it), the reply kept for tracked keys,
    and a stream that stops short ends with an error event."""

    def __init__(self, call, hide_usage):
        self.call, self.hide_usage = call, hide_usage
        self.done = self.finished = False

    def event(self, event):
        """What the client gets for one upstream event (sse.Event): its own bytes,
        most of the time, or the chunk without the usage the client did not ask for."""
        data = event.data
        if not data:  # a keep-alive comment, or an empty event
            return event.raw
        if data == b"[DONE]":
            self.done = True
            return event.raw
        if b'"finish_reason"' in data and not NULL_FINISH.search(data):
            self.finished = True
        call = self.call
        if not (call.track or b'"error"' in data or (b'"usage"' in data and not NULL_USAGE.search(data))):
            return event.raw  # recognised from its bytes: passed on unparsed
        chunk = parsed_json(data)
        if not isinstance(chunk, dict):
            return event.raw
        if "error" in chunk:
            call.fail(502, error_text(chunk, data), "stream_error")
        choices = chunk.get("choices")
        if choices and call.track and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta") or {}
            call.reply_parts.append(delta.get("content") or choice.get("text") or "")
        usage = chunk.get("usage")
        if not isinstance(usage, dict):
            return event.raw
        call.usage = usage
        if not self.hide_usage:
            return event.raw
        del chunk["usage"]
        if not any(says_something(choice) for choice in choices or []):
            return b""
        return sse.encode(json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode(), event.name)

    def ended(self):
        if self.done or self.finished:
            return b""
        self.call.fail(502, "The upstream stream ended before it was complete.", "incomplete")
        return error_event(self.call.error, "upstream_error")

    def failed(self, message, code):
        return error_event(message, code)


def says_something(choice):
    """Whether a streamed choice carries anything for the client (text, content,
    tool calls, a role, a finish reason, logprobs...). LiteLLM's final usage chunk
    has `{"index": 0, "delta": {}}`, which says nothing."""
    if not isinstance(choice, dict):
        return True
    for name, value in choice.items():
        if name == "delta" and isinstance(value, dict):
            if any(v not in EMPTY for v in value.values()):
                return True
        elif name != "index" and value not in EMPTY:
            return True
    return False
