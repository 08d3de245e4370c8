"""How each kind of client is spoken to through each kind of upstream.

The proxy's path (proxy.py) is the same for every call; what differs is the shape
of the data. A client speaks OpenAI (/v1/chat/completions, /v1/completions) or
Anthropic (/v1/messages); an api's protocol is `openai` or `anthropic`. A Route
holds what one (client, upstream) pair needs: where to send the call, how to
authenticate, how to translate the request, the answer, the errors and the
stream. Translation itself is in anthropic.py.
"""

import json
import re

from . import anthropic as claude
from . import sse

NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')
NULL_FINISH = re.compile(rb'"finish_reason"\s*:\s*null')
EMPTY = (None, "", {}, [])


class Unsupported(ValueError):
    """A call this pairing cannot make (e.g. legacy completions on a Claude api)."""


def openai_error_event(message, code):
    body = {"error": {"message": message, "type": "api_error", "param": None, "code": code}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def anthropic_error_event(message, kind="api_error"):
    return claude.sse("error", {"type": "error", "error": {"type": kind, "message": message}})


def parsed_json(data):
    try:
        return json.loads(data)
    except ValueError:
        return None


def error_text(parsed, raw):
    """The message of an error answer in any of the shapes servers use."""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:500]
    if isinstance(error, str):
        return error[:500]
    return raw[:500].decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)[:500]


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
    protocol = "openai"

    def __init__(self, endpoint):
        self.path = endpoint

    def prepare(self, body):
        """(body for the upstream, hide its usage chunk from the client?)"""
        hide_usage = wants_usage(body)
        return body, hide_usage

    def answer(self, call, parsed):
        call.usage = parsed.get("usage") if isinstance(parsed.get("usage"), dict) else None
        call.reply_parts.append(openai_reply(parsed))
        return parsed

    def error(self, status, parsed, raw):
        return status, None  # the upstream's own error answer, passed back as it is

    def events(self, call, hide_usage):
        return OpenAIEvents(call, hide_usage)


def openai_reply(parsed):
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
            call.status, call.error = 502, error_text(chunk, data)
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
        self.call.status, self.call.error = 502, "The upstream stream ended before it was complete."
        return openai_error_event(self.call.error, "upstream_error")

    def failed(self, message, code):
        return openai_error_event(message, code)


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


# -- OpenAI client, Anthropic upstream: translated both ways ------------------------------

class ChatToAnthropicRoute:
    protocol = "anthropic"
    path = "messages"

    def prepare(self, body):
        self.model = body.get("model")
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return claude.chat_to_messages(body), False

    def answer(self, call, parsed):
        chat = claude.message_to_chat(parsed, self.model)
        call.usage = chat.get("usage")
        call.reply_parts.append(openai_reply(chat))
        return chat

    def error(self, status, parsed, raw):
        return claude.error_to_openai(status, parsed if parsed is not None else raw)

    def events(self, call, hide_usage):
        return AnthropicToOpenAIEvents(call, claude.MessagesStreamToChat(self.model, self.include_usage))


class AnthropicToOpenAIEvents:
    def __init__(self, call, translator):
        self.call, self.translator = call, translator
        self.stopped = False

    def event(self, event):
        data = parsed_json(event.data) if event.data else None
        data = data if isinstance(data, dict) else None
        name = event.name or (data or {}).get("type")
        self.stopped = self.stopped or name == "message_stop"
        chunks = self.translator.feed(name, data)
        self.call.usage = self.translator.usage
        if self.call.track:
            for chunk in chunks:
                for choice in chunk.get("choices") or []:
                    self.call.reply_parts.append((choice.get("delta") or {}).get("content") or "")
        return b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks)

    def ended(self):
        error = self.translator.error
        if error:
            self.call.status, self.call.error = 502, error["message"]
            return openai_error_event(error["message"], error.get("code") or error.get("type"))
        if not self.stopped:
            self.call.status, self.call.error = 502, "The upstream stream ended before it was complete."
            return openai_error_event(self.call.error, "upstream_error")
        return b"data: [DONE]\n\n"

    def failed(self, message, code):
        return openai_error_event(message, code)


# -- Anthropic client, Anthropic upstream: passed through -------------------------------

class MessagesRoute:
    protocol = "anthropic"
    path = "messages"

    def prepare(self, body):
        return body, False

    def answer(self, call, parsed):
        call.usage = claude._openai_usage(parsed.get("usage"))
        call.reply_parts.extend(block.get("text", "") for block in parsed.get("content") or []
                                if isinstance(block, dict) and block.get("type") == "text")
        return parsed

    def error(self, status, parsed, raw):
        return status, None

    def events(self, call, hide_usage):
        return AnthropicEvents(call)


class AnthropicEvents:
    """An Anthropic stream passed on as it is, with its usage and reply noted."""

    def __init__(self, call):
        self.call = call
        self.usage = {}
        self.stopped = False

    def event(self, event):
        name = event.name
        if name in ("message_start", "message_delta", "error") or (self.call.track and name == "content_block_delta"):
            data = parsed_json(event.data or b"null")
            data = data if isinstance(data, dict) else {}
            usage = (data.get("message") or {}).get("usage") if name == "message_start" else data.get("usage")
            if isinstance(usage, dict):
                self.usage.update({k: v for k, v in usage.items() if isinstance(v, int)})
                self.call.usage = claude._openai_usage(self.usage)
            if name == "error":
                self.call.status, self.call.error = 502, error_text(data, event.data)
            if name == "content_block_delta":
                self.call.reply_parts.append((data.get("delta") or {}).get("text") or "")
        self.stopped = self.stopped or name == "message_stop"
        return event.raw

    def ended(self):
        if self.stopped or self.call.error:
            return b""
        self.call.status, self.call.error = 502, "The upstream stream ended before it was complete."
        return anthropic_error_event(self.call.error)

    def failed(self, message, code):
        return anthropic_error_event(message, "timeout_error" if code == "upstream_timeout" else "api_error")


# -- Anthropic client, OpenAI upstream: translated both ways ------------------------------

class MessagesToOpenAIRoute:
    protocol = "openai"
    path = "chat/completions"

    def prepare(self, body):
        self.model = body.get("model")
        return claude.messages_to_chat(body), False

    def answer(self, call, parsed):
        call.usage = parsed.get("usage") if isinstance(parsed.get("usage"), dict) else None
        call.reply_parts.append(openai_reply(parsed))
        return claude.chat_to_message(parsed, self.model)

    def error(self, status, parsed, raw):
        return claude.error_to_anthropic(status, parsed if parsed is not None else raw)

    def events(self, call, hide_usage):
        return OpenAIToAnthropicEvents(call, claude.ChatStreamToMessages(self.model))


class OpenAIToAnthropicEvents:
    def __init__(self, call, translator):
        self.call, self.translator = call, translator

    def event(self, event):
        data = event.data
        chunk = parsed_json(data) if data and data != b"[DONE]" else None
        if not isinstance(chunk, dict):
            return b""
        if self.call.track:
            for choice in chunk.get("choices") or []:
                self.call.reply_parts.append((choice.get("delta") or {}).get("content") or "")
        events = self.translator.feed(chunk)
        self.call.usage = self.translator.usage
        return b"".join(claude.sse(name, body) for name, body in events)

    def ended(self):
        return b"".join(claude.sse(name, body) for name, body in self.translator.finish())

    def failed(self, message, code):
        return anthropic_error_event(message, "timeout_error" if code == "upstream_timeout" else "api_error")


# -- Anthropic client counting tokens: asked of Anthropic, estimated for others ----------

class CountTokensRoute(MessagesRoute):
    """count_tokens passed through to an Anthropic api. Counting costs nothing
    and generates nothing: no usage, no reply for the row."""

    path = "messages/count_tokens"

    def answer(self, call, parsed):
        return parsed


class EstimateTokensRoute:
    """count_tokens for a model behind an OpenAI-compatible api, which has no such
    endpoint: answered here, with an estimate (see claude.estimate_input_tokens),
    never sent upstream (path None)."""

    protocol = "openai"
    path = None

    def prepare(self, body):
        claude.messages_to_chat(body)  # refuse, as /v1/messages would, what cannot be sent
        return body, False

    def local_answer(self, call, body):
        return {"input_tokens": claude.estimate_input_tokens(body)}


def route(client, endpoint, protocol):
    """The Route for a client format, its endpoint and the api's protocol."""
    protocol = protocol or "openai"
    if client == "openai":
        if protocol == "openai":
            return OpenAIRoute(endpoint)
        if endpoint == "chat/completions":
            return ChatToAnthropicRoute()
        raise Unsupported("Legacy completions are not available for Anthropic models: "
                          "use /v1/chat/completions.")
    if endpoint == "messages/count_tokens":
        return CountTokensRoute() if protocol == "anthropic" else EstimateTokensRoute()
    return MessagesRoute() if protocol == "anthropic" else MessagesToOpenAIRoute()


def upstream_base(protocol, base_url):
    """The URL an api's endpoint paths (`messages`, `chat/completions`, `models`)
    are appended to, from the base URL the admin typed.

    OpenAI-compatible servers are documented with their /v1 (or whatever prefix
    they use), so their base URL is taken as it is. Anthropic documents its base
    URL without /v1 (`https://api.anthropic.com`; its SDKs add `/v1/messages`),
    while OpenAI habits write it with: both work, /v1 being added when missing.
    """
    base = base_url.rstrip("/")
    if protocol == "anthropic" and not base.endswith("/v1"):
        base += "/v1"
    return base
