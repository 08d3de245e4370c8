"""Translation between OpenAI's chat-completions format and Anthropic's Messages API.

PromptProxy speaks OpenAI to its clients and to its upstreams.  This module lets
it put either side in front of the other:

* an OpenAI client in front of an Anthropic upstream -- :func:`chat_to_messages`
  for the request, :func:`message_to_chat` or :class:`MessagesStreamToChat` for
  the answer, :func:`error_to_openai` for failures;
* an Anthropic client (``POST /v1/messages``) in front of an OpenAI-compatible
  upstream -- :func:`messages_to_chat`, :func:`chat_to_message` or
  :class:`ChatStreamToMessages`, :func:`error_to_anthropic` and :func:`sse`.

Everything here is a pure function of its input: no HTTP, no Flask, no I/O.  The
proxy owns transport, headers, retries and recording; this module owns only the
shape of the data, so every rule can be unit-tested with plain dicts.

Two policies run through it.  Meaning the other side can express is translated;
anything the client asked for that the other side cannot do (``n`` > 1, audio,
server-side tools) raises :class:`TranslationError` with a message fit to show
the client, rather than being silently dropped.  Knobs that only tune sampling or
output on one side (``seed``, ``logprobs``, ``top_k``, ...) are dropped, because
refusing a request over them would help nobody.
"""

import json
import math
import time

__all__ = ["DEFAULT_MAX_TOKENS", "ANTHROPIC_VERSION", "TranslationError",
           "chat_to_messages", "message_to_chat", "MessagesStreamToChat", "error_to_openai",
           "messages_to_chat", "chat_to_message", "ChatStreamToMessages", "error_to_anthropic",
           "estimate_input_tokens", "sse"]

#: Anthropic requires max_tokens; OpenAI clients usually leave it out.
DEFAULT_MAX_TOKENS = 4096
#: The ``anthropic-version`` header value the translated requests are written for.
ANTHROPIC_VERSION = "2023-06-01"


class TranslationError(ValueError):
    """Input that cannot be translated; str(e) is a client-facing message."""


# Anthropic stop_reason -> OpenAI finish_reason.  pause_turn (a server tool paused
# a long turn) and context-window exhaustion have no exact OpenAI counterpart:
# they are the nearest meaning a client can act on.
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
                  "max_tokens": "length", "model_context_window_exceeded": "length",
                  "tool_use": "tool_calls", "refusal": "content_filter"}
# OpenAI finish_reason -> Anthropic stop_reason.  OpenAI does not say whether a
# stop sequence ended the text, so "stop" is always end_turn.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
# The only image media types Anthropic accepts.
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")

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
OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "invalid_request_error",
                429: "rate_limit_error", 503: "overloaded_error"}
# HTTP status -> Anthropic error type, as Anthropic's own API documents them.
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                   402: "billing_error", 403: "permission_error", 404: "not_found_error",
                   413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                   503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error"}
MAX_ERROR_TEXT = 1000  # a non-JSON error page is quoted to the client, but not all of it
#: For :func:`estimate_input_tokens`: English text runs about four characters per
#: token with both OpenAI's and Anthropic's tokenizers.
CHARS_PER_TOKEN = 4
#: What Anthropic documents an image of the largest size it keeps (about 1.15
#: megapixels, width * height / 750) to cost; smaller images cost less.
IMAGE_TOKENS = 1600


# -- OpenAI client -> Anthropic upstream -------------------------------------

def chat_to_messages(body):
    """An OpenAI chat-completions request as an Anthropic Messages request.

    System and developer messages become the top-level ``system`` string (joined
    with blank lines), because Anthropic has no system role inside ``messages``.
    ``tool`` messages become ``tool_result`` blocks in a user turn, and
    consecutive turns of one role are merged, so tool results answering one
    assistant turn arrive together, as Anthropic documents them.  Tool results go
    first in a merged user turn, because Anthropic rejects text before them.
    """
    if not isinstance(body, dict):
        raise TranslationError("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TranslationError("'messages' must be a non-empty array.")
    if body.get("n") not in (None, 1):
        raise TranslationError("'n' must be 1: this model returns a single choice.")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise TranslationError("'functions' and 'function_call' are not supported for this "
                               "model; use 'tools' and 'tool_choice'.")

    system, turns = [], []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where} must be an object.")
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"), where)
            if text:
                system.append(text)
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), where)
        elif role == "assistant":
            blocks = _assistant_blocks(message, where)
        elif role == "tool":
            role, blocks = "user", [_tool_result_block(message, where)]
        else:
            raise TranslationError(f"{where}.role {role!r} is not supported.")
        if not blocks:
            continue  # Anthropic rejects empty content; an empty turn says nothing anyway
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))

    result = {"model": body.get("model"), "max_tokens": _max_tokens(body)}
    if system:
        result["system"] = "\n\n".join(system)
    result["messages"] = [_turn(role, blocks) for role, blocks in turns]

    tools = body.get("tools")
    if tools:
        result["tools"] = _tools_to_anthropic(tools)
        choice = _tool_choice_to_anthropic(body.get("tool_choice"))
        if body.get("parallel_tool_calls") is False:
            choice = choice or {"type": "auto"}
            if choice["type"] != "none":
                choice["disable_parallel_tool_use"] = True
        if choice:
            result["tool_choice"] = choice
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            result[name] = body[name]
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise TranslationError("'stop' must be a string or an array of strings.")
        result["stop_sequences"] = stop
    if body.get("stream"):
        result["stream"] = True
    if isinstance(body.get("user"), str) and body["user"]:
        result["metadata"] = {"user_id": body["user"]}
    return result


def message_to_chat(resp, model):
    """An Anthropic message as an OpenAI ``chat.completion``.

    Text blocks are joined with nothing between them (they are consecutive
    stretches of one answer); thinking and server-tool blocks have no OpenAI
    counterpart and are left out.  Cache writes and reads count as prompt tokens,
    because Anthropic's input_tokens excludes them while OpenAI's prompt_tokens
    is everything the prompt cost.
    """
    if not isinstance(resp, dict):
        raise TranslationError("The upstream answer is not a JSON object.")
    texts, calls = [], []
    for block in resp.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": json.dumps(block.get("input") or {})}})
    message = {"role": "assistant", "content": "".join(texts) if texts else None if calls else "",
               "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {"id": f"chatcmpl-{resp.get('id') or 'anthropic'}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": _finish_reason(resp.get("stop_reason"))}],
            "usage": _openai_usage(resp.get("usage"))}


class MessagesStreamToChat:
    """Turns an Anthropic event stream into OpenAI ``chat.completion.chunk`` dicts.

    Feed each SSE event (its ``event:`` name and decoded ``data:``) in order; send
    every chunk :meth:`feed` returns.  Anthropic numbers content blocks (text and
    tool calls together) while OpenAI numbers tool calls alone, so the block ->
    tool-call index map is kept here.  An ``error`` event produces no chunk: it
    sets :attr:`error` and the caller decides how to end the OpenAI stream.
    """

    def __init__(self, model, include_usage=False):
        self.model = model
        self.include_usage = include_usage
        #: OpenAI usage dict, known from message_start, final after message_delta.
        self.usage = None
        #: {"message", "type", "code"} once an `error` event arrived.
        self.error = None
        self.id = "chatcmpl-anthropic"   # replaced by the message id from message_start
        self.created = int(time.time())
        self._usage = {}                 # Anthropic usage counters seen so far
        self._tools = {}                 # Anthropic block index -> OpenAI tool-call index
        self._tool_args = set()          # tool-call indexes that received argument text

    def feed(self, event_type, data):
        """The chunks to send for one event (often none)."""
        data = data if isinstance(data, dict) else {}
        handler = getattr(self, f"_on_{event_type or data.get('type')}", None)
        return handler(data) if handler else []

    def _chunk(self, delta, finish_reason=None):
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                              "finish_reason": finish_reason}]}
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI does: every chunk but the last has usage: null
        return chunk

    def _on_message_start(self, data):
        message = data.get("message") or {}
        if message.get("id"):
            self.id = f"chatcmpl-{message['id']}"
        self._count(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _on_content_block_start(self, data):
        block = data.get("content_block") or {}
        if block.get("type") == "tool_use":
            index = self._tools[data.get("index")] = len(self._tools)
            return [self._chunk({"tool_calls": [{
                "index": index, "id": block.get("id"), "type": "function",
                "function": {"name": block.get("name"), "arguments": ""}}]})]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _on_content_block_delta(self, data):
        delta = data.get("delta") or {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") == "input_json_delta" and data.get("index") in self._tools:
            if not delta.get("partial_json"):
                return []  # Anthropic opens every tool input with an empty piece
            index = self._tools[data["index"]]
            self._tool_args.add(index)
            return [self._chunk({"tool_calls": [{"index": index,
                                                 "function": {"arguments": delta["partial_json"]}}]})]
        return []  # thinking, signatures, citations: nothing an OpenAI client reads

    def _on_content_block_stop(self, data):
        index = self._tools.get(data.get("index"))
        if index is None or index in self._tool_args:
            return []
        # A tool without parameters streams no input at all; OpenAI clients
        # json.loads the arguments, and "" is not JSON.
        self._tool_args.add(index)
        return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": "{}"}}]})]

    def _on_message_delta(self, data):
        self._count(data.get("usage"))
        stop_reason = (data.get("delta") or {}).get("stop_reason")
        return [self._chunk({}, _finish_reason(stop_reason))]

    def _on_message_stop(self, data):
        if not self.include_usage or self.usage is None:
            return []
        return [{"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model, "choices": [], "usage": self.usage}]

    def _on_error(self, data):
        error = error_to_openai(200, data)[1]["error"]
        self.error = {"message": error["message"], "type": error["type"], "code": error["code"]}
        return []

    def _count(self, usage):
        # message_delta counters are cumulative totals: they replace, not add.
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if isinstance(v, int)})
            self.usage = _openai_usage(self._usage)


def error_to_openai(status, body):
    """An Anthropic error answer as (status, OpenAI error body).

    ``body`` may be the parsed JSON, raw bytes or text, or None.  The message is
    kept word for word; the Anthropic error type goes in ``code`` so a client
    can still tell an overload from an ordinary server error.
    """
    data, text = _parse(body)
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    kind = error.get("type") if isinstance(error.get("type"), str) else None
    if kind is None and status == 529:
        kind = "overloaded_error"
    message = error.get("message") if isinstance(error.get("message"), str) else None
    known = ANTHROPIC_ERRORS.get(kind)
    if status == 529:
        status = 503
    elif not isinstance(status, int) or status < 400:
        status = known[0] if known else 500
    openai_type = known[1] if known else OPENAI_TYPES.get(status, "api_error")
    return status, {"error": {"message": message or _fallback_message(status, text),
                              "type": openai_type, "param": None, "code": kind}}


# -- Anthropic client -> OpenAI upstream -------------------------------------

def messages_to_chat(body):
    """An Anthropic Messages request as an OpenAI chat-completions request.

    ``tool_result`` blocks become ``tool`` messages placed before the rest of
    their user turn, since OpenAI wants them right after the assistant's
    tool_calls.  A ``system`` message inside ``messages`` (Claude Code sends one
    under a beta, mid-conversation) stays a system message at its place: OpenAI
    has that role, so nothing is lost by keeping it where the client put it.  ``max_tokens`` stays ``max_tokens`` (not max_completion_tokens)
    because that is the field every OpenAI-compatible server understands.  A
    stream asks for the usage chunk, without which the Anthropic answer could not
    report output tokens.
    """
    if not isinstance(body, dict):
        raise TranslationError("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages: must be a non-empty array.")
    out = []
    system = body.get("system")
    if system:
        text = _blocks_text(system, "system")
        if text:
            out.append({"role": "system", "content": text})
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise TranslationError(f"{where}: must be an object.")
        role = message.get("role")
        if role == "user":
            out.extend(_user_to_chat(message.get("content"), where))
        elif role == "assistant":
            out.append(_assistant_to_chat(message.get("content"), where))
        elif role == "system":
            text = _blocks_text(message.get("content") or "", f"{where}.content")
            if text:
                out.append({"role": "system", "content": text})
        else:
            raise TranslationError(f"{where}.role: unexpected role {role!r}.")

    result = {"model": body.get("model"), "messages": out}
    if body.get("max_tokens") is not None:
        result["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            result[name] = body[name]
    if body.get("stop_sequences"):
        result["stop"] = list(body["stop_sequences"])
    tools = body.get("tools")
    if tools:
        result["tools"] = _tools_to_openai(tools)
        choice = body.get("tool_choice")
        if choice:
            result["tool_choice"] = _tool_choice_to_openai(choice)
            if choice.get("disable_parallel_tool_use") and choice.get("type") != "none":
                result["parallel_tool_calls"] = False
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        result["user"] = metadata["user_id"]
    if body.get("stream"):
        result["stream"] = True
        result["stream_options"] = {"include_usage": True}
    return result


def chat_to_message(resp, model):
    """An OpenAI ``chat.completion`` as an Anthropic message.

    Tool-call arguments must decode to a JSON object, because Anthropic clients
    read ``input`` as one; anything else is a TranslationError rather than a
    made-up input.
    """
    if not isinstance(resp, dict):
        raise TranslationError("The upstream answer is not a JSON object.")
    choices = resp.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content, stop_reason = [], STOP_REASONS.get(choice.get("finish_reason"), "end_turn")
    text = _text_of(message.get("content"), "choices[0].message.content")
    if text:
        content.append({"type": "text", "text": text})
    elif message.get("refusal"):
        content.append({"type": "text", "text": message["refusal"]})
        stop_reason = "refusal"
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{i}",
                        "name": function.get("name"),
                        "input": _decode_arguments(function.get("arguments"),
                                                   f"tool call {function.get('name')!r}")})
    return {"id": _message_id(resp.get("id")), "type": "message", "role": "assistant",
            "model": model, "content": content, "stop_reason": stop_reason,
            "stop_sequence": None, "usage": _anthropic_usage(resp.get("usage"))}


class ChatStreamToMessages:
    """Turns OpenAI ``chat.completion.chunk`` dicts into Anthropic stream events.

    Feed each decoded chunk; send every (event, data) pair returned, e.g. with
    :func:`sse`; at the end of the upstream stream call :meth:`finish`.
    Anthropic clients expect ``message_start`` first, then each content block as
    start / deltas / stop with no overlap, then ``message_delta`` (stop reason,
    usage) and ``message_stop``.  Text and each tool call get a block of their
    own, opened when their first piece arrives and closed when something else
    starts.  The closing events go out as soon as both the finish reason and the
    usage are known, so a client is not kept waiting for the upstream's
    ``[DONE]``; :meth:`finish` sends them if that never happened.
    """

    def __init__(self, model):
        self.model = model
        #: The upstream's OpenAI usage dict, once a chunk carried one.
        self.usage = None
        self.id = "msg_openai"
        self._started = self._finished = False
        self._open = None          # (block index, "text" | OpenAI tool-call index)
        self._blocks = 0           # content blocks opened so far
        self._tools = {}           # OpenAI tool-call index -> block index
        self._stop_reason = None

    def feed(self, chunk):
        """The events to send for one upstream chunk (possibly none)."""
        if self._finished or not isinstance(chunk, dict):
            return []
        if chunk.get("error"):  # some servers report a failure inside the stream
            self._finished = True
            return [("error", error_to_anthropic(200, chunk)[1])]
        events = [] if self._started else self._start(chunk.get("id"))
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if isinstance(text, str) and text:
                events += self._text(text)
            for position, call in enumerate(delta.get("tool_calls") or []):
                events += self._tool_call(call, position)
            if choice.get("finish_reason"):
                self._stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        if self._stop_reason and self.usage is not None:
            events += self._close()
        return events

    def finish(self):
        """The closing events, if :meth:`feed` has not sent them already."""
        if self._finished:
            return []
        events = [] if self._started else self._start(None)
        return events + self._close()

    def _start(self, upstream_id):
        self._started = True
        if upstream_id:
            self.id = _message_id(upstream_id)
        return [("message_start", {"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})]

    def _text(self, text):
        events = []
        if self._open is None or self._open[1] != "text":
            events += self._open_block("text", {"type": "text", "text": ""})
        return events + [("content_block_delta", {
            "type": "content_block_delta", "index": self._open[0],
            "delta": {"type": "text_delta", "text": text}})]

    def _tool_call(self, call, position):
        if not isinstance(call, dict):
            return []
        key = call.get("index", position)
        function = call.get("function") or {}
        events = []
        if key not in self._tools:
            events += self._open_block(key, {
                "type": "tool_use", "id": call.get("id") or f"toolu_{self.id}_{key}",
                "name": function.get("name") or "", "input": {}})
            self._tools[key] = self._open[0]
        # OpenAI sends one call's pieces together; a late piece of an earlier call
        # still goes to that call's block, which Anthropic's SDK accumulates.
        if function.get("arguments"):
            events.append(("content_block_delta", {
                "type": "content_block_delta", "index": self._tools[key],
                "delta": {"type": "input_json_delta", "partial_json": function["arguments"]}}))
        return events

    def _open_block(self, kind, block):
        events = self._close_block()
        self._open = (self._blocks, kind)
        self._blocks += 1
        return events + [("content_block_start", {"type": "content_block_start",
                                                  "index": self._open[0], "content_block": block})]

    def _close_block(self):
        if self._open is None:
            return []
        index, self._open = self._open[0], None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _close(self):
        self._finished = True
        usage = _anthropic_usage(self.usage) if self.usage is not None else {"output_tokens": 0}
        return self._close_block() + [
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": self._stop_reason or "end_turn",
                                         "stop_sequence": None},
                               "usage": usage}),
            ("message_stop", {"type": "message_stop"})]


def estimate_input_tokens(body):
    """An estimate of a Messages request's input tokens, for ``count_tokens`` when
    the model behind it is not Anthropic's and there is no tokenizer to ask.

    One token per four characters, rounded up, of everything the model reads: the
    system prompt, the text of every message (tool calls and tool results as
    their JSON, as they reach the model) and the tool definitions as JSON; each
    image counts as a full-size one.  Code and languages other than English run
    denser than four characters a token, so this is a guide, not a bill.
    """
    chars = images = 0
    contents = [body.get("system")] + [m.get("content") for m in body.get("messages") or []
                                       if isinstance(m, dict)]
    while contents:
        content = contents.pop()
        if isinstance(content, str):
            chars += len(content)
            continue
        for block in content if isinstance(content, list) else []:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                chars += len(str(block.get("text") or ""))
            elif kind == "image":
                images += 1
            elif kind == "tool_result":
                contents.append(block.get("content"))
            else:
                chars += len(json.dumps(block, ensure_ascii=False))
    if body.get("tools"):
        chars += len(json.dumps(body["tools"], ensure_ascii=False))
    return math.ceil(chars / CHARS_PER_TOKEN) + images * IMAGE_TOKENS


def error_to_anthropic(status, body):
    """An OpenAI-style error answer as (status, Anthropic error body).

    OpenAI-compatible servers vary: ``{"error": {...}}``, ``{"error": "text"}``,
    FastAPI's ``{"detail": ...}``, or plain text; the message is found in any of
    them.  The Anthropic type follows the status, as Anthropic's API documents.
    """
    data, text = _parse(body)
    message = openai_type = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message, openai_type = error.get("message"), error.get("type")
        elif isinstance(error, str):
            message = error
        else:
            message = data.get("message") or data.get("detail")
        if message is not None and not isinstance(message, str):
            message = json.dumps(message)
    if not isinstance(status, int) or status < 400:
        if openai_type in ANTHROPIC_ERRORS:
            kind = openai_type
            status = 529 if kind == "overloaded_error" else ANTHROPIC_ERRORS[kind][0]
        else:
            kind, status = "api_error", 500
    else:
        kind = ANTHROPIC_TYPES.get(status) or (
            "invalid_request_error" if status < 500 else "api_error")
    return status, {"type": "error",
                    "error": {"type": kind, "message": message or _fallback_message(status, text)}}


def sse(event_type, data):
    """One server-sent event as Anthropic writes them: ``event:`` then ``data:``."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event_type}\ndata: {payload}\n\n".encode()


# -- helpers -------------------------------------------------------------------

def _max_tokens(body):
    value = body.get("max_completion_tokens")
    if value is None:
        value = body.get("max_tokens")
    if value is None:
        return DEFAULT_MAX_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TranslationError("'max_tokens' must be a positive integer.")
    return value


def _text_of(content, where):
    """The text of a content that may only hold text: a string or text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
                texts.append(part.get("text") or part.get("refusal") or "")
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise TranslationError(f"{where}: content of type {kind!r} is not supported here.")
        return "\n".join(t for t in texts if t)
    raise TranslationError(f"{where}.content must be a string or an array of parts.")


def _user_blocks(content, where):
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or an array of parts.")
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"{where}.content[{j}]"))
        else:
            raise TranslationError(f"{where}.content[{j}]: parts of type {kind!r} are not "
                                   "supported for this model.")
    return blocks


def _image_block(image_url, where):
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise TranslationError(f"{where}.image_url.url must be a string.")
    if url.startswith("data:"):
        header, comma, data = url[len("data:"):].partition(",")
        media_type, *params = header.split(";")
        media_type = media_type.strip().lower().replace("image/jpg", "image/jpeg")
        if not comma or "base64" not in params:
            raise TranslationError(f"{where}: a data: URL image must be base64-encoded.")
        if media_type not in IMAGE_TYPES:
            raise TranslationError(f"{where}: image type {media_type!r} is not supported; "
                                   f"use one of {', '.join(IMAGE_TYPES)}.")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                            "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError(f"{where}: an image URL must be http(s) or a data: URL.")


def _assistant_blocks(message, where):
    text = _text_of(message.get("content"), where)
    blocks = [{"type": "text", "text": text}] if text else []
    for j, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not call.get("id") or not function.get("name"):
            raise TranslationError(f"{where}.tool_calls[{j}] needs an id and a function name.")
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"],
                       "input": _decode_arguments(function.get("arguments"),
                                                  f"{where}.tool_calls[{j}]")})
    return blocks


def _decode_arguments(arguments, where):
    """Tool-call arguments (a JSON string) as the object Anthropic's input is."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError):
        raise TranslationError(f"{where}: the arguments are not valid JSON.") from None
    if not isinstance(value, dict):
        raise TranslationError(f"{where}: the arguments must be a JSON object.")
    return value


def _tool_result_block(message, where):
    if not message.get("tool_call_id"):
        raise TranslationError(f"{where}: a tool message needs a tool_call_id.")
    return {"type": "tool_result", "tool_use_id": message["tool_call_id"],
            "content": _text_of(message.get("content"), where)}


def _turn(role, blocks):
    if role == "user":  # tool results first: Anthropic rejects any text before them
        blocks = sorted(blocks, key=lambda block: block["type"] != "tool_result")
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return {"role": role, "content": blocks[0]["text"]}
    return {"role": role, "content": blocks}


def _tools_to_anthropic(tools):
    if not isinstance(tools, list):
        raise TranslationError("'tools' must be an array.")
    result = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function" \
                or not function.get("name"):
            raise TranslationError(f"tools[{i}] must be a function tool with a name.")
        converted = {"name": function["name"]}
        if function.get("description"):
            converted["description"] = function["description"]
        converted["input_schema"] = function.get("parameters") or {"type": "object",
                                                                   "properties": {}}
        result.append(converted)
    return result


def _tool_choice_to_anthropic(choice):
    if choice is None:
        return None
    simple = {"auto": "auto", "required": "any", "none": "none"}
    if isinstance(choice, str) and choice in simple:
        return {"type": simple[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function" \
            and isinstance(choice.get("function"), dict) and choice["function"].get("name"):
        return {"type": "tool", "name": choice["function"]["name"]}
    raise TranslationError("'tool_choice' must be \"auto\", \"required\", \"none\" or "
                           "{\"type\": \"function\", \"function\": {\"name\": ...}}.")


def _finish_reason(stop_reason):
    return FINISH_REASONS.get(stop_reason, "stop")


def _tokens(usage, name):
    """A token count from the other side's usage: a whole number, or 0 for anything
    else (upstream answers are untrusted; the request row notes what was odd)."""
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _openai_usage(usage):
    usage = usage if isinstance(usage, dict) else {}
    cache_read = _tokens(usage, "cache_read_input_tokens")
    prompt = sum(_tokens(usage, name) for name in (
        "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
    completion = _tokens(usage, "output_tokens")
    result = {"prompt_tokens": prompt, "completion_tokens": completion,
              "total_tokens": prompt + completion}
    if cache_read:
        result["prompt_tokens_details"] = {"cached_tokens": cache_read}
    return result


def _anthropic_usage(usage):
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = _tokens(details, "cached_tokens") if isinstance(details, dict) else 0
    result = {"input_tokens": max(0, _tokens(usage, "prompt_tokens") - cached),
              "output_tokens": _tokens(usage, "completion_tokens")}
    if cached:
        result["cache_read_input_tokens"] = cached
    return result


def _message_id(upstream_id):
    if not upstream_id:
        return "msg_openai"
    upstream_id = str(upstream_id)
    return "msg_" + (upstream_id[len("chatcmpl-"):] if upstream_id.startswith("chatcmpl-")
                     else upstream_id)


def _blocks_text(content, where):
    """Text of an Anthropic content that may only hold text (system, tool results)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise TranslationError(f"{where}: must be a string or an array of content blocks.")
    texts = []
    for j, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, dict) else None
            raise TranslationError(f"{where}.{j}: blocks of type {kind!r} are not supported "
                                   "for this model.")
        texts.append(block.get("text") or "")
    return "\n\n".join(t for t in texts if t)


def _user_to_chat(content, where):
    """One Anthropic user turn as OpenAI messages: its tool results as `tool`
    messages first, then whatever else it said as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content: must be a string or an array of blocks.")
    tools, parts = [], []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif kind == "image":
            parts.append({"type": "image_url",
                          "image_url": {"url": _image_url(block, f"{where}.content.{j}")}})
        elif kind == "tool_result":
            text = _blocks_text(block.get("content") or "", f"{where}.content.{j}.content")
            if block.get("is_error"):
                text = f"Error: {text}"  # OpenAI tool messages have no error flag
            tools.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                          "content": text})
        else:
            raise TranslationError(f"{where}.content.{j}: blocks of type {kind!r} are not "
                                   "supported for this model.")
    messages = tools
    if len(parts) == 1 and parts[0]["type"] == "text":
        messages.append({"role": "user", "content": parts[0]["text"]})
    elif parts:
        messages.append({"role": "user", "content": parts})
    return messages


def _image_url(block, where):
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    if source.get("type") == "url":
        return source.get("url")
    raise TranslationError(f"{where}: images from a {source.get('type')!r} source are not "
                           "supported for this model.")


def _assistant_to_chat(content, where):
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content: must be a string or an array of blocks.")
    texts, calls = [], []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": json.dumps(block.get("input") or {})}})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's private reasoning: no OpenAI field carries it back
        else:
            raise TranslationError(f"{where}.content.{j}: blocks of type {kind!r} are not "
                                   "supported for this model.")
    message = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools_to_openai(tools):
    if not isinstance(tools, list):
        raise TranslationError("tools: must be an array.")
    result = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") \
                or not tool.get("name"):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise TranslationError(f"tools.{i}: only custom tools with a name are supported "
                                   f"for this model (got type {kind!r}).")
        function = {"name": tool["name"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        result.append({"type": "function", "function": function})
    return result


def _tool_choice_to_openai(choice):
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool" and choice.get("name"):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise TranslationError("tool_choice: must be auto, any, none or a named tool.")


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


def _fallback_message(status, text):
    text = (text or "").strip()
    return text[:MAX_ERROR_TEXT] if text else f"The upstream answered HTTP {status}."
