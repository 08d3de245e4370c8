"""Streams, translated both ways: Anthropic's events as OpenAI chunks
(MessagesStreamToChat) and OpenAI chunks as Anthropic's events
(ChatStreamToMessages). Each is fed one decoded event or chunk at a time and
returns what to send for it; neither does any I/O."""

import json
import time

from .errors import error_to_anthropic, error_to_openai
from .responses import STOP_REASONS, anthropic_usage, finish_reason, message_id, openai_usage


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
        return [self._chunk({}, finish_reason(stop_reason))]

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
            self.usage = openai_usage(self._usage)


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
            self.id = message_id(upstream_id)
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
        usage = anthropic_usage(self.usage) if self.usage is not None else {"output_tokens": 0}
        return self._close_block() + [
            ("message_delta", {"type": "message_delta",
                               "delta": {"stop_reason": self._stop_reason or "end_turn",
                                         "stop_sequence": None},
                               "usage": usage}),
            ("message_stop", {"type": "message_stop"})]


def sse(event_type, data):
    """One server-sent event as Anthropic writes them: `event:` then `data:`."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event_type}\ndata: {payload}\n\n".encode()


def error_event(message, kind="api_error"):
    """An `error` event ending an Anthropic stream."""
    return sse("error", {"type": "error", "error": {"type": kind, "message": message}})


def failure_event(message, code):
    """The proxy's own failure on the way (its OpenAI-style code) as the error event
    ending an Anthropic stream."""
    return error_event(message, "timeout_error" if code == "upstream_timeout" else "api_error")
