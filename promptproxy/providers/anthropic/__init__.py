"""Anthropic's Messages API, and the translation between it and OpenAI's
chat-completions format, so that either kind of client can call either kind of api:

* an OpenAI client in front of an Anthropic upstream: `chat_to_messages` for the
  request, `message_to_chat` or `MessagesStreamToChat` for the answer,
  `error_to_openai` for failures;
* an Anthropic client (`POST /v1/messages`) in front of an OpenAI-compatible
  upstream: `messages_to_chat`, `chat_to_message` or `ChatStreamToMessages`,
  `error_to_anthropic` and `sse`.

The translation (requests.py, tools.py, responses.py, streams.py, errors.py) is
pure functions of its input: no HTTP, no Flask, no I/O, so every rule can be
unit-tested with plain dicts. The routes that use it on the request path are in
messages.py (Anthropic on both sides) and translated.py (one side each). This
package's names are gathered here for its users; its modules import one another
directly.
"""

from ..base import MAX_ERROR_TEXT
from .errors import TranslationError, error_to_anthropic, error_to_openai
from .messages import ANTHROPIC_VERSION, IMAGE_TOKENS, estimate_input_tokens
from .requests import DEFAULT_MAX_TOKENS, chat_to_messages, messages_to_chat
from .responses import chat_to_message, message_to_chat
from .streams import ChatStreamToMessages, MessagesStreamToChat, sse

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS", "IMAGE_TOKENS", "MAX_ERROR_TEXT",
           "ChatStreamToMessages", "MessagesStreamToChat", "TranslationError",
           "chat_to_message", "chat_to_messages", "error_to_anthropic", "error_to_openai",
           "estimate_input_tokens", "message_to_chat", "messages_to_chat", "sse"]
