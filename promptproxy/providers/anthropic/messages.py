"""Anthropic's Messages API as it is, for an Anthropic client in front of an
Anthropic api: the `anthropic-version` and `x-api-key` authentication, the stored
prompt's rewrite of a request, the pass-through route and its stream events, and
count_tokens (asked of Anthropic, or estimated when the model is not Anthropic's)."""

import json
import math

from ..base import Refused, error_text, parsed_json
from .requests import messages_to_chat
from .responses import openai_usage
from .streams import error_event, failure_event

#: The ``anthropic-version`` header value the translated requests are written for.
ANTHROPIC_VERSION = "2023-06-01"
#: For :func:`estimate_input_tokens`: English text runs about four characters per
#: token with both OpenAI's and Anthropic's tokenizers.
CHARS_PER_TOKEN = 4
#: What Anthropic documents an image of the largest size it keeps (about 1.15
#: megapixels, width * height / 750) to cost; smaller images cost less.
IMAGE_TOKENS = 1600


def authenticate(headers, secret):
    """An Anthropic api's version and key, as Anthropic's SDKs send them. A version
    the client or the api's own headers chose is kept."""
    headers.setdefault("Anthropic-Version", ANTHROPIC_VERSION)
    if secret:
        headers["X-Api-Key"] = secret


def rewrite_messages(body, model, prompt):
    """Anthropic messages: the stored instructions go in front of `system`."""
    if not isinstance(body.get("messages"), list):
        raise Refused("'messages' must be an array of messages.", param="messages")
    if prompt is not None:
        system = body.get("system")
        if prompt.replace_system or not system:
            body["system"] = prompt.instructions
        elif isinstance(system, str):
            body["system"] = prompt.instructions + "\n\n" + system
        elif isinstance(system, list):
            body["system"] = [{"type": "text", "text": prompt.instructions}, *system]
        if prompt.tools and not body.get("tools"):
            body["tools"] = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                              "input_schema": t["function"].get("parameters") or {"type": "object"}}
                             for t in prompt.tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    body["model"] = model.model
    return body


# -- Anthropic client, Anthropic upstream: passed through -------------------------------

class MessagesRoute:
    path = "messages"

    def prepare(self, body):
        return body, False

    def answer(self, call, parsed):
        call.usage = openai_usage(parsed.get("usage"))
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
                self.call.usage = openai_usage(self.usage)
            if name == "error":
                self.call.fail(502, error_text(data, event.data), "stream_error")
            if name == "content_block_delta":
                self.call.reply_parts.append((data.get("delta") or {}).get("text") or "")
        self.stopped = self.stopped or name == "message_stop"
        return event.raw

    def ended(self):
        if self.stopped or self.call.error:
            return b""
        self.call.fail(502, "The upstream stream ended before it was complete.", "incomplete")
        return error_event(self.call.error)

    def failed(self, message, code):
        return failure_event(message, code)


# -- Anthropic client counting tokens: asked of Anthropic, estimated for others ----------

class CountTokensRoute(MessagesRoute):
    """count_tokens passed through to an Anthropic api. Counting costs nothing
    and generates nothing: no usage, no reply for the row."""

    path = "messages/count_tokens"

    def answer(self, call, parsed):
        return parsed


class EstimateTokensRoute:
    """count_tokens for a model behind an OpenAI-compatible api, which has no such
    endpoint: answered here, with an estimate (see estimate_input_tokens),
    never sent upstream (path None)."""

    path = None

    def prepare(self, body):
        messages_to_chat(body)  # refuse, as /v1/messages would, what cannot be sent
        return body, False

    def local_answer(self, call, body):
        return {"input_tokens": estimate_input_tokens(body)}


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
