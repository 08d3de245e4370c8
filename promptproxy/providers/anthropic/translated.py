"""The two pairings where client and upstream speak different formats: an OpenAI
client in front of an Anthropic api (ChatToAnthropicRoute) and an Anthropic client
in front of an OpenAI-compatible one (MessagesToOpenAIRoute). Each translates the
request, the answer, the errors and the stream, with requests.py, responses.py,
errors.py and streams.py."""

import json

from .. import openai
from ..base import parsed_json
from .errors import error_to_anthropic, error_to_openai
from .requests import chat_to_messages, messages_to_chat
from .responses import chat_to_message, message_to_chat
from .streams import ChatStreamToMessages, MessagesStreamToChat, failure_event, sse

# -- OpenAI client, Anthropic upstream: translated both ways ------------------------------

class ChatToAnthropicRoute:
    path = "messages"

    def prepare(self, body):
        self.model = body.get("model")
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return chat_to_messages(body), False

    def answer(self, call, parsed):
        chat = message_to_chat(parsed, self.model)
        call.usage = chat.get("usage")
        call.reply_parts.append(openai.reply(chat))
        return chat

    def error(self, status, parsed, raw):
        return error_to_openai(status, parsed if parsed is not None else raw)

    def events(self, call, hide_usage):
        return AnthropicToOpenAIEvents(call, MessagesStreamToChat(self.model, self.include_usage))


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
            self.call.fail(502, error["message"], "stream_error")
            return openai.error_event(error["message"], error.get("code") or error.get("type"))
        if not self.stopped:
            self.call.fail(502, "The upstream stream ended before it was complete.", "incomplete")
            return openai.error_event(self.call.error, "upstream_error")
        return b"data: [DONE]\n\n"

    def failed(self, message, code):
        return openai.error_event(message, code)


# -- Anthropic client, OpenAI upstream: translated both ways ------------------------------

class MessagesToOpenAIRoute:
    path = "chat/completions"

    def prepare(self, body):
        self.model = body.get("model")
        return messages_to_chat(body), False

    def answer(self, call, parsed):
        call.usage = parsed.get("usage") if isinstance(parsed.get("usage"), dict) else None
        call.reply_parts.append(openai.reply(parsed))
        return chat_to_message(parsed, self.model)

    def error(self, status, parsed, raw):
        return error_to_anthropic(status, parsed if parsed is not None else raw)

    def events(self, call, hide_usage):
        return OpenAIToAnthropicEvents(call, ChatStreamToMessages(self.model))


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
        return b"".join(sse(name, body) for name, body in events)

    def ended(self):
        return b"".join(sse(name, body) for name, body in self.translator.finish())

    def failed(self, message, code):
        return failure_event(message, code)
