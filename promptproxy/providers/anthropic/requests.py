"""Requests, translated both ways: an OpenAI chat-completions request as an
Anthropic Messages request (an OpenAI client in front of a Claude api), and a
Messages request as a chat-completions one (an Anthropic client, such as Claude
Code, in front of an OpenAI-compatible api).

Meaning the other side can express is translated; anything the client asked for
that the other side cannot do (`n` > 1, audio, server-side tools) raises
TranslationError with a message fit to show the client, rather than being
silently dropped. Knobs that only tune sampling or output on one side (`seed`,
`logprobs`, `top_k`, ...) are dropped, because refusing a request over them would
help nobody.
"""

import json

from .errors import TranslationError
from .tools import tool_choice_to_anthropic, tool_choice_to_openai, tools_to_anthropic, tools_to_openai

#: Anthropic requires max_tokens; OpenAI clients usually leave it out.
DEFAULT_MAX_TOKENS = 4096
# The only image media types Anthropic accepts.
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


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
            text = text_of(message.get("content"), where)
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
        result["tools"] = tools_to_anthropic(tools)
        choice = tool_choice_to_anthropic(body.get("tool_choice"))
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


def _max_tokens(body):
    value = body.get("max_completion_tokens")
    if value is None:
        value = body.get("max_tokens")
    if value is None:
        return DEFAULT_MAX_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TranslationError("'max_tokens' must be a positive integer.")
    return value


def text_of(content, where):
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
    text = text_of(message.get("content"), where)
    blocks = [{"type": "text", "text": text}] if text else []
    for j, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not call.get("id") or not function.get("name"):
            raise TranslationError(f"{where}.tool_calls[{j}] needs an id and a function name.")
        blocks.append({"type": "tool_use", "id": call["id"], "name": function["name"],
                       "input": decode_arguments(function.get("arguments"),
                                                  f"{where}.tool_calls[{j}]")})
    return blocks


def decode_arguments(arguments, where):
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
            "content": text_of(message.get("content"), where)}


def _turn(role, blocks):
    if role == "user":  # tool results first: Anthropic rejects any text before them
        blocks = sorted(blocks, key=lambda block: block["type"] != "tool_result")
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return {"role": role, "content": blocks[0]["text"]}
    return {"role": role, "content": blocks}


# -- Anthropic client -> OpenAI upstream -------------------------------------

def messages_to_chat(body):
    """An Anthropic Messages request as an OpenAI chat-completions request.

    ``tool_result`` blocks become ``tool`` messages placed before the rest of
    their user turn, since OpenAI wants them right after the assistant's
    tool_calls.  A ``system`` message inside ``messages`` (Claude Code sends one
    under a beta, mid-conversation) stays a system message at its place: OpenAI
    has that role, so nothing is lost by keeping it where the client put it.
    ``max_tokens`` stays ``max_tokens`` (not max_completion_tokens) because that
    is the field every OpenAI-compatible server understands.  A
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
        result["tools"] = tools_to_openai(tools)
        choice = body.get("tool_choice")
        if choice:
            result["tool_choice"] = tool_choice_to_openai(choice)
            if choice.get("disable_parallel_tool_use") and choice.get("type") != "none":
                result["parallel_tool_calls"] = False
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        result["user"] = metadata["user_id"]
    if body.get("stream"):
        result["stream"] = True
        result["stream_options"] = {"include_usage": True}
    return result


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
