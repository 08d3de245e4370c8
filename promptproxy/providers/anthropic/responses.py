"""Whole (non-streamed) answers, translated both ways: an Anthropic message as an
OpenAI `chat.completion` and back, with their stop reasons and token usage."""

import json
import time

from ..base import token_count
from .errors import TranslationError
from .requests import decode_arguments, text_of

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
                         "finish_reason": finish_reason(resp.get("stop_reason"))}],
            "usage": openai_usage(resp.get("usage"))}


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
    text = text_of(message.get("content"), "choices[0].message.content")
    if text:
        content.append({"type": "text", "text": text})
    elif message.get("refusal"):
        content.append({"type": "text", "text": message["refusal"]})
        stop_reason = "refusal"
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or f"toolu_{i}",
                        "name": function.get("name"),
                        "input": decode_arguments(function.get("arguments"),
                                                   f"tool call {function.get('name')!r}")})
    return {"id": message_id(resp.get("id")), "type": "message", "role": "assistant",
            "model": model, "content": content, "stop_reason": stop_reason,
            "stop_sequence": None, "usage": anthropic_usage(resp.get("usage"))}


def finish_reason(stop_reason):
    return FINISH_REASONS.get(stop_reason, "stop")


def _tokens(usage, name):
    """A token count from the other side's usage: a whole number, or 0 for anything
    else (upstream answers are untrusted; the request row notes what was odd)."""
    return token_count(usage.get(name)) or 0


def openai_usage(usage):
    """Anthropic's usage in OpenAI's shape. Anthropic counts the input read from its
    prompt cache and the input written to it apart from `input_tokens`; OpenAI's
    `prompt_tokens` holds every input token, and its details say how many were read
    from the cache (`cached_tokens`) and, as LiteLLM and Letta write it, written to
    it (`cache_creation_tokens`), which cost more (see accounting/costs.py)."""
    usage = usage if isinstance(usage, dict) else {}
    cache_read = _tokens(usage, "cache_read_input_tokens")
    cache_creation = _tokens(usage, "cache_creation_input_tokens")
    prompt = _tokens(usage, "input_tokens") + cache_creation + cache_read
    completion = _tokens(usage, "output_tokens")
    result = {"prompt_tokens": prompt, "completion_tokens": completion,
              "total_tokens": prompt + completion}
    details = {name: count for name, count in (("cached_tokens", cache_read),
                                               ("cache_creation_tokens", cache_creation)) if count}
    if details:
        result["prompt_tokens_details"] = details
    return result


def anthropic_usage(usage):
    """OpenAI's usage in Anthropic's shape: the cached input apart, as openai_usage reads it."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached, created = _tokens(details, "cached_tokens"), _tokens(details, "cache_creation_tokens")
    result = {"input_tokens": max(0, _tokens(usage, "prompt_tokens") - cached - created),
              "output_tokens": _tokens(usage, "completion_tokens")}
    if created:
        result["cache_creation_input_tokens"] = created
    if cached:
        result["cache_read_input_tokens"] = cached
    return result


def message_id(upstream_id):
    if not upstream_id:
        return "msg_openai"
    upstream_id = str(upstream_id)
    return "msg_" + (upstream_id[len("chatcmpl-"):] if upstream_id.startswith("chatcmpl-")
                     else upstream_id)
