"""Tests for promptproxy.providers.anthropic (OpenAI <-> Anthropic translation) and for the
fake Anthropic upstream in tests/anthropic_upstream.py.

The translation is checked three ways: exact dicts for realistic payloads, the
official SDKs assembling what it produces (openai's stream accumulator, and the
anthropic SDK reading translated events over HTTP), and whole pipelines through
the fake upstreams.  The fake itself is driven with the official `anthropic`
SDK, so end-to-end tests built on it rest on the real client's view of the API.
"""

import json
import threading
import time

import anthropic
import pytest
import requests
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from promptproxy.providers import anthropic as tr
from promptproxy.providers.anthropic import TranslationError
from tests.anthropic_upstream import AnthropicUpstream

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}},
                  "required": ["city"]}
OPENAI_WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": WEATHER_SCHEMA}}
ANTHROPIC_WEATHER_TOOL = {"name": "get_weather", "description": "Current weather in a city",
                          "input_schema": WEATHER_SCHEMA}


@pytest.fixture
def server():
    with AnthropicUpstream() as upstream:
        yield upstream


@pytest.fixture
def client(server):
    with anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0,
                             timeout=10) as sdk:
        yield sdk


def sse_pairs(body):
    """(event, data) pairs of a complete Anthropic SSE body."""
    text = body.decode() if isinstance(body, bytes) else body
    assert text.endswith("\n\n"), text[-200:]
    pairs = []
    for event in text.split("\n\n")[:-1]:
        lines = dict(line.split(": ", 1) for line in event.split("\n"))
        assert set(lines) == {"event", "data"}, event
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]
        pairs.append((lines["event"], data))
    return pairs


def assemble(chunks):
    """The chat.completion an OpenAI client builds from these chunks."""
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


def deltas(chunks):
    """(delta, finish_reason) of each chunk, [] for the usage-only chunk."""
    return [(c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) if c["choices"] else []
            for c in chunks]


# -- OpenAI request -> Anthropic request ---------------------------------------

def test_chat_to_messages_text_request():
    body = {
        "model": "claude-sonnet-4-6",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hello there"},
            {"role": "assistant", "content": "Bonjour."},
            {"role": "user", "content": "How are you?"}],
        "temperature": 0.2, "top_p": 0.9, "stop": "END", "stream": True, "user": "tom",
        "n": 1, "stream_options": {"include_usage": True}, "frequency_penalty": 0.5,
        "presence_penalty": 0.1, "logprobs": True, "top_logprobs": 2, "seed": 7,
        "response_format": {"type": "json_object"}, "logit_bias": {"50256": -100},
    }
    assert tr.chat_to_messages(body) == {
        "model": "claude-sonnet-4-6",
        "max_tokens": tr.DEFAULT_MAX_TOKENS,
        "system": "You are terse.\n\nAnswer in French.",
        "messages": [{"role": "user", "content": "Hello there"},
                     {"role": "assistant", "content": "Bonjour."},
                     {"role": "user", "content": "How are you?"}],
        "temperature": 0.2, "top_p": 0.9, "stop_sequences": ["END"], "stream": True,
        "metadata": {"user_id": "tom"},
    }


def test_chat_to_messages_max_tokens():
    messages = [{"role": "user", "content": "hi"}]
    assert tr.chat_to_messages({"model": "m", "messages": messages,
                                "max_tokens": 50})["max_tokens"] == 50
    assert tr.chat_to_messages({"model": "m", "messages": messages, "max_tokens": 50,
                                "max_completion_tokens": 70})["max_tokens"] == 70
    result = tr.chat_to_messages({"model": "m", "messages": messages, "stop": ["a", "b"]})
    assert result["max_tokens"] == 4096 and result["stop_sequences"] == ["a", "b"]
    assert "system" not in result and "stream" not in result and "metadata" not in result
    for bad in (0, -5, "100", True, 1.5):
        with pytest.raises(TranslationError, match="max_tokens"):
            tr.chat_to_messages({"model": "m", "messages": messages, "max_tokens": bad})


def test_chat_to_messages_images():
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}",
                                            "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "image_url", "image_url": f"data:image/jpg;base64,{PNG}"},
    ]}]}
    assert tr.chat_to_messages(body)["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}},
    ]}]


@pytest.mark.parametrize("part, message", [
    ({"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}, "image/bmp"),
    ({"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}, "base64"),
    ({"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}, "http"),
    ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "input_audio"),
    ({"type": "file", "file": {"file_id": "file-1"}}, "file"),
])
def test_chat_to_messages_unsupported_parts(part, message):
    body = {"model": "m", "messages": [{"role": "user", "content": [part]}]}
    with pytest.raises(TranslationError, match=message):
        tr.chat_to_messages(body)


def tool_conversation():
    """An OpenAI conversation in which the assistant called two tools."""
    return {
        "model": "claude-sonnet-4-6",
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "toolu_01", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "toolu_02", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_01", "content": "18C, sunny"},
            {"role": "tool", "tool_call_id": "toolu_02",
             "content": [{"type": "text", "text": "24C, cloudy"}]},
            {"role": "user", "content": "Which is warmer?"}],
        "tools": [OPENAI_WEATHER_TOOL],
        "tool_choice": "auto",
        "max_tokens": 300,
    }


def test_chat_to_messages_tool_calls_and_results():
    assert tr.chat_to_messages(tool_conversation()) == {
        "model": "claude-sonnet-4-6", "max_tokens": 300, "system": "Use tools.",
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking both."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                 "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_02", "name": "get_weather",
                 "input": {"city": "Rome"}}]},
            # both results and the next question: one user turn, results first
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C, sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "24C, cloudy"},
                {"type": "text", "text": "Which is warmer?"}]}],
        "tools": [ANTHROPIC_WEATHER_TOOL],
        "tool_choice": {"type": "auto"},
    }


def test_chat_to_messages_merges_and_orders_turns():
    body = {"model": "m", "messages": [
        {"role": "user", "content": "one"},
        {"role": "user", "content": [{"type": "text", "text": "two"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "now", "arguments": ""}}]},
        {"role": "user", "content": "(before the result)"},
        {"role": "tool", "tool_call_id": "t1", "content": "12:00"},
        {"role": "assistant", "content": ""},          # says nothing: dropped
        {"role": "user", "content": "thanks"}]}
    assert tr.chat_to_messages(body)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"},
                                     {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "now", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "12:00"},
            {"type": "text", "text": "(before the result)"},
            {"type": "text", "text": "thanks"}]}]


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"type": "auto"}),
    ("required", {"type": "any"}),
    ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "get_weather"}},
     {"type": "tool", "name": "get_weather"}),
    (None, None),
])
def test_chat_to_messages_tool_choice(choice, expected):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [OPENAI_WEATHER_TOOL], "tool_choice": choice}
    assert tr.chat_to_messages(body).get("tool_choice") == expected


def test_chat_to_messages_parallel_tool_calls_and_bare_tools():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "now"}}],
            "parallel_tool_calls": False}
    result = tr.chat_to_messages(body)
    assert result["tools"] == [{"name": "now",
                                "input_schema": {"type": "object", "properties": {}}}]
    assert result["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    body["tool_choice"] = "required"
    assert tr.chat_to_messages(body)["tool_choice"] == {"type": "any",
                                                        "disable_parallel_tool_use": True}
    body["tool_choice"] = "none"
    assert tr.chat_to_messages(body)["tool_choice"] == {"type": "none"}
    # tool_choice without tools means nothing to Anthropic, which would reject it
    assert "tool_choice" not in tr.chat_to_messages(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"})


@pytest.mark.parametrize("body, message", [
    ([], "JSON object"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 3}, "'n'"),
    ({"model": "m", "messages": [{"role": "function", "name": "f", "content": "x"}]},
     "'function'"),
    ({"model": "m", "messages": ["hi"]}, r"messages\[0\]"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
     "not valid JSON"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}]}]},
     "JSON object"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, "id"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "tool_call_id"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}],
      "tools": [{"type": "custom", "custom": {"name": "x"}}]}, "function tool"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}],
      "tools": [OPENAI_WEATHER_TOOL], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}],
      "functions": [{"name": "f"}]}, "functions"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": [1]}, "stop"),
])
def test_chat_to_messages_rejects(body, message):
    with pytest.raises(TranslationError, match=message):
        tr.chat_to_messages(body)


def test_translation_error_is_a_value_error():
    assert issubclass(TranslationError, ValueError)
    error = TranslationError("'n' must be 1")
    assert str(error) == "'n' must be 1"


# -- Anthropic answer -> OpenAI answer -------------------------------------------

def tool_use_message():
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-6-20250929",
        "content": [
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "abc"},
            {"type": "text", "text": "I'll check "},
            {"type": "text", "text": "the weather."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather",
             "input": {"city": "Paris", "unit": "celsius"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 120, "output_tokens": 40,
                  "cache_creation_input_tokens": 30, "cache_read_input_tokens": 500},
    }


def test_message_to_chat_with_tool_use():
    before = int(time.time())
    result = tr.message_to_chat(tool_use_message(), "claude-sonnet")
    assert before <= result.pop("created") <= int(time.time())
    assert result == {
        "id": "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL", "object": "chat.completion",
        "model": "claude-sonnet",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "I'll check the weather.", "refusal": None,
            "tool_calls": [{"id": "toolu_01A", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]}}],
        "usage": {"prompt_tokens": 650, "completion_tokens": 40, "total_tokens": 690,
                  "prompt_tokens_details": {"cached_tokens": 500, "cache_creation_tokens": 30}},
    }
    # and an OpenAI client reads it
    completion = ChatCompletion.model_validate({**result, "created": before})
    call = completion.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}


def test_message_to_chat_tool_use_only():
    message = {**tool_use_message(), "content": [tool_use_message()["content"][-1]],
               "usage": {"input_tokens": 10, "output_tokens": 5}}
    choice = tr.message_to_chat(message, "m")["choices"][0]
    assert choice["message"]["content"] is None
    assert len(choice["message"]["tool_calls"]) == 1
    assert tr.message_to_chat(message, "m")["usage"] == {
        "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


@pytest.mark.parametrize("stop_reason, finish_reason", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("pause_turn", "stop"),
    ("model_context_window_exceeded", "length"), (None, "stop"),
])
def test_message_to_chat_stop_reasons(stop_reason, finish_reason):
    message = {"id": "msg_1", "content": [{"type": "text", "text": "Hi"}],
               "stop_reason": stop_reason, "usage": {"input_tokens": 1, "output_tokens": 1}}
    result = tr.message_to_chat(message, "m")
    assert result["choices"][0]["finish_reason"] == finish_reason
    assert result["choices"][0]["message"]["content"] == "Hi"


def test_message_to_chat_empty_content():
    result = tr.message_to_chat({"id": "msg_1", "content": [], "stop_reason": "end_turn",
                                 "usage": {"input_tokens": 3, "output_tokens": 0}}, "m")
    assert result["choices"][0]["message"]["content"] == ""
    with pytest.raises(TranslationError):
        tr.message_to_chat("not json", "m")


# -- Anthropic stream -> OpenAI chunks --------------------------------------------

def anthropic_text_stream():
    """A streamed text answer, event for event as Anthropic's API sends it."""
    return [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": " world!"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 12}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def anthropic_tool_stream():
    """Text, then two tool calls (one without parameters), streamed."""
    return [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 400, "output_tokens": 3}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Let me look."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta",
                                           "partial_json": '{"city": "Pa'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "toolu_02", "name": "now", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2,
                                 "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"output_tokens": 58}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_stream_to_chat_text():
    translator = tr.MessagesStreamToChat("claude-sonnet", include_usage=True)
    assert translator.usage is None and translator.error is None
    chunks = []
    for event, data in anthropic_text_stream():
        chunks += translator.feed(event, data)
    assert deltas(chunks) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hello"}, None),
        ({"content": " world!"}, None),
        ({}, "stop"),
        [],
    ]
    usage = {"prompt_tokens": 25, "completion_tokens": 12, "total_tokens": 37}
    assert chunks[-1]["usage"] == translator.usage == usage
    assert all(c["usage"] is None for c in chunks[:-1])   # as OpenAI sends them
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_01"}
    assert {c["model"] for c in chunks} == {"claude-sonnet"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["created"] for c in chunks}) == 1
    completion = assemble(chunks)
    assert completion.choices[0].message.content == "Hello world!"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == 37


def test_stream_to_chat_without_usage():
    translator = tr.MessagesStreamToChat("m", include_usage=False)
    chunks = []
    for event, data in anthropic_text_stream()[:3]:
        chunks += translator.feed(event, data)
    # input tokens are known from message_start, before any text
    assert translator.usage == {"prompt_tokens": 25, "completion_tokens": 1, "total_tokens": 26}
    for event, data in anthropic_text_stream()[3:]:
        chunks += translator.feed(event, data)
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert deltas(chunks)[-1] == ({}, "stop")
    assert translator.usage["completion_tokens"] == 12


def test_stream_to_chat_tool_calls():
    translator = tr.MessagesStreamToChat("claude-sonnet", include_usage=True)
    chunks = []
    for event, data in anthropic_tool_stream():
        chunks += translator.feed(event, data)
    assert deltas(chunks) == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Let me look."}, None),
        ({"tool_calls": [{"index": 0, "id": "toolu_01", "type": "function",
                          "function": {"name": "get_weather", "arguments": ""}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]}, None),
        ({"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]}, None),
        ({"tool_calls": [{"index": 1, "id": "toolu_02", "type": "function",
                          "function": {"name": "now", "arguments": ""}}]}, None),
        # a tool without parameters streams no input; OpenAI clients need JSON
        ({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}, None),
        ({}, "tool_calls"),
        [],
    ]
    message = assemble(chunks).choices[0].message
    assert message.content == "Let me look."
    assert [(c.id, c.function.name, json.loads(c.function.arguments))
            for c in message.tool_calls] == [("toolu_01", "get_weather", {"city": "Paris"}),
                                             ("toolu_02", "now", {})]
    assert translator.usage == {"prompt_tokens": 400, "completion_tokens": 58,
                                "total_tokens": 458}


def test_stream_to_chat_cumulative_usage_and_cache():
    translator = tr.MessagesStreamToChat("m")
    translator.feed("message_start", {"type": "message_start", "message": {
        "id": "msg_3", "usage": {"input_tokens": 10, "cache_read_input_tokens": 90,
                                 "output_tokens": 1}}})
    # message_delta counters are totals and may restate the input side
    translator.feed("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": "max_tokens"},
                                      "usage": {"input_tokens": 12, "output_tokens": 7}})
    assert translator.usage == {"prompt_tokens": 102, "completion_tokens": 7,
                                "total_tokens": 109,
                                "prompt_tokens_details": {"cached_tokens": 90}}


def test_stream_to_chat_error_ping_and_unknown_events():
    translator = tr.MessagesStreamToChat("m", include_usage=True)
    assert translator.feed("ping", {"type": "ping"}) == []
    assert translator.feed("thinking_started_someday", {"type": "x"}) == []
    assert translator.feed("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "thinking_delta",
                                                             "thinking": "hmm"}}) == []
    assert translator.feed("error", {"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}) == []
    assert translator.error == {"message": "Overloaded", "type": "overloaded_error",
                                "code": "overloaded_error"}
    assert translator.feed("message_stop", {"type": "message_stop"}) == []  # no usage known


# -- errors -> OpenAI ------------------------------------------------------------

@pytest.mark.parametrize("status, kind, expected_status, openai_type", [
    (400, "invalid_request_error", 400, "invalid_request_error"),
    (401, "authentication_error", 401, "authentication_error"),
    (403, "permission_error", 403, "permission_error"),
    (404, "not_found_error", 404, "not_found_error"),
    (413, "request_too_large", 413, "invalid_request_error"),
    (429, "rate_limit_error", 429, "rate_limit_error"),
    (500, "api_error", 500, "api_error"),
    (529, "overloaded_error", 503, "overloaded_error"),
])
def test_error_to_openai(status, kind, expected_status, openai_type):
    body = {"type": "error", "error": {"type": kind, "message": f"about {kind}"},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}
    for form in (body, json.dumps(body), json.dumps(body).encode()):
        assert tr.error_to_openai(status, form) == (expected_status, {"error": {
            "message": f"about {kind}", "type": openai_type, "param": None, "code": kind}})


def test_error_to_openai_other_bodies():
    assert tr.error_to_openai(502, b"<html>Bad Gateway</html>") == (502, {"error": {
        "message": "<html>Bad Gateway</html>", "type": "api_error", "param": None,
        "code": None}})
    assert tr.error_to_openai(529, None)[0] == 503
    assert tr.error_to_openai(529, None)[1]["error"]["type"] == "overloaded_error"
    status, body = tr.error_to_openai(418, {"unexpected": True})
    assert status == 418 and body["error"]["message"] == "The upstream answered HTTP 418."
    # an `error` event inside a 200 stream: the status comes from the type
    assert tr.error_to_openai(200, {"type": "error", "error": {
        "type": "rate_limit_error", "message": "slow down"}})[0] == 429
    assert tr.error_to_openai(200, {"type": "error", "error": {
        "type": "brand_new_error", "message": "?"}})[0] == 500
    long_page = "x" * 5000
    assert len(tr.error_to_openai(500, long_page)[1]["error"]["message"]) == tr.MAX_ERROR_TEXT


# -- Anthropic request -> OpenAI request -----------------------------------------

def test_messages_to_chat_request():
    body = {
        "model": "gpt-4o-mini", "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are terse."},
                   {"type": "text", "text": "Answer in French.",
                    "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me look", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C"},
                {"type": "text", "text": "And tomorrow?"}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_02", "name": "get_weather",
                 "input": {"city": "Paris", "day": 1}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_02", "is_error": True,
                 "content": [{"type": "text", "text": "forecast unavailable"}]}]},
        ],
        "tools": [ANTHROPIC_WEATHER_TOOL],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.8, "top_k": 40,
        "metadata": {"user_id": "tom"}, "stream": True,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    assert tr.messages_to_chat(body) == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse.\n\nAnswer in French."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_01", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "toolu_01", "content": "18C"},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "toolu_02", "type": "function",
                 "function": {"name": "get_weather",
                              "arguments": '{"city": "Paris", "day": 1}'}}]},
            {"role": "tool", "tool_call_id": "toolu_02",
             "content": "Error: forecast unavailable"},
        ],
        "max_tokens": 1024, "temperature": 0.5, "top_p": 0.8, "stop": ["END"],
        "tools": [OPENAI_WEATHER_TOOL], "tool_choice": "auto", "parallel_tool_calls": False,
        "user": "tom", "stream": True, "stream_options": {"include_usage": True},
    }


def test_messages_to_chat_keeps_a_mid_conversation_system_message_in_place():
    """Claude Code sends `system` turns inside `messages` (a beta); OpenAI has the
    role, so each stays a system message where the client put it."""
    body = {"model": "m", "max_tokens": 5, "system": "You are Claude Code.", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "say hi",
                                      "cache_control": {"type": "ephemeral"}}]},
        {"role": "system", "content": "Reminder: be brief."},
        {"role": "assistant", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "One"}, {"type": "text", "text": "Two"}]},
        {"role": "system", "content": ""},
    ]}
    assert tr.messages_to_chat(body)["messages"] == [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "say hi"},
        {"role": "system", "content": "Reminder: be brief."},
        {"role": "assistant", "content": "hi"},
        {"role": "system", "content": "One\n\nTwo"},
    ]


def test_estimate_input_tokens_counts_four_characters_a_token():
    assert tr.estimate_input_tokens({"messages": [{"role": "user", "content": "abcd"}]}) == 1
    assert tr.estimate_input_tokens({"messages": [{"role": "user", "content": "abcde"}]}) == 2
    tools = [ANTHROPIC_WEATHER_TOOL]
    body = {"system": [{"type": "text", "text": "s" * 10}], "tools": tools, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "u" * 7, "cache_control": {"type": "ephemeral"}},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": PNG}}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [{"type": "text", "text": "r" * 3}]}]},
        {"role": "system", "content": "y" * 5},
    ]}
    tool_use = json.dumps(body["messages"][1]["content"][0], ensure_ascii=False)
    chars = 10 + 7 + len(tool_use) + 3 + 5 + len(json.dumps(tools, ensure_ascii=False))
    # characters / 4 rounded up, and a full-size image for the picture (never its base64)
    assert tr.estimate_input_tokens(body) == -(-chars // 4) + tr.IMAGE_TOKENS


@pytest.mark.parametrize("choice, expected", [
    ({"type": "auto"}, "auto"), ({"type": "any"}, "required"), ({"type": "none"}, "none"),
    ({"type": "tool", "name": "get_weather"},
     {"type": "function", "function": {"name": "get_weather"}}),
])
def test_messages_to_chat_tool_choice(choice, expected):
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
            "tools": [ANTHROPIC_WEATHER_TOOL], "tool_choice": choice}
    result = tr.messages_to_chat(body)
    assert result["tool_choice"] == expected
    assert "parallel_tool_calls" not in result and "stream" not in result


@pytest.mark.parametrize("body, message", [
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]},
     "role"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"},
                                                  {"role": "system", "content": 7}]},
     "messages.1.content"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "data": "x"}}]}]}, "document"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "web_search"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}}]}]}, "'file'"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}}]}]}]},
     "image"),
    ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
])
def test_messages_to_chat_rejects(body, message):
    with pytest.raises(TranslationError, match=message):
        tr.messages_to_chat(body)


def test_round_trip_openai_request():
    """OpenAI -> Anthropic -> OpenAI keeps the conversation (system prompts
    joined, tool results placed right after the call that asked for them)."""
    back = tr.messages_to_chat(tr.chat_to_messages(tool_conversation()))
    original = tool_conversation()
    assert back["messages"][0] == {"role": "system", "content": "Use tools."}
    assert back["messages"][1:] == [
        original["messages"][1], original["messages"][2],
        original["messages"][3], {**original["messages"][4], "content": "24C, cloudy"},
        original["messages"][5]]
    assert back["tools"] == original["tools"] and back["tool_choice"] == "auto"
    assert back["max_tokens"] == 300


# -- OpenAI answer -> Anthropic answer -------------------------------------------

def openai_tool_completion():
    return {
        "id": "chatcmpl-AbC123", "object": "chat.completion", "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.", "refusal": None,
            "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "now", "arguments": ""}}]}}],
        "usage": {"prompt_tokens": 90, "completion_tokens": 20, "total_tokens": 110,
                  "prompt_tokens_details": {"cached_tokens": 64}},
    }


def test_chat_to_message_with_tool_calls():
    result = tr.chat_to_message(openai_tool_completion(), "claude-via-gpt")
    assert result == {
        "id": "msg_AbC123", "type": "message", "role": "assistant", "model": "claude-via-gpt",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "now", "input": {}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 26, "output_tokens": 20, "cache_read_input_tokens": 64},
    }
    message = anthropic.types.Message.model_validate(result)  # an Anthropic client reads it
    assert message.content[1].input == {"city": "Paris"}
    # and the usage survives the way back
    assert tr.message_to_chat(result, "m")["usage"] == {
        "prompt_tokens": 90, "completion_tokens": 20, "total_tokens": 110,
        "prompt_tokens_details": {"cached_tokens": 64}}


@pytest.mark.parametrize("finish_reason, stop_reason", [
    ("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
    ("function_call", "tool_use"), ("content_filter", "refusal"), (None, "end_turn"),
])
def test_chat_to_message_stop_reasons(finish_reason, stop_reason):
    resp = {"id": "chatcmpl-1", "choices": [{"index": 0, "finish_reason": finish_reason,
                                             "message": {"role": "assistant", "content": "Hi"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}
    result = tr.chat_to_message(resp, "m")
    assert result["stop_reason"] == stop_reason
    assert result["content"] == [{"type": "text", "text": "Hi"}]
    assert result["usage"] == {"input_tokens": 3, "output_tokens": 1}


def test_chat_to_message_refusal_and_bad_arguments():
    refused = {"id": "chatcmpl-2", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None, "refusal": "I can't help with that."}}]}
    result = tr.chat_to_message(refused, "m")
    assert result["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert result["stop_reason"] == "refusal"
    assert result["usage"] == {"input_tokens": 0, "output_tokens": 0}
    broken = openai_tool_completion()
    broken["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"city": '
    with pytest.raises(TranslationError, match="get_weather"):
        tr.chat_to_message(broken, "m")


# -- OpenAI stream -> Anthropic events --------------------------------------------

def openai_chunk(delta=None, finish_reason=None, usage=None, choices=True):
    chunk = {"id": "chatcmpl-Xyz", "object": "chat.completion.chunk", "created": 1_700_000_000,
             "model": "gpt-4o-mini", "system_fingerprint": "fp_1",
             "choices": [{"index": 0, "delta": delta or {}, "logprobs": None,
                          "finish_reason": finish_reason}] if choices else [],
             "usage": usage}
    return chunk


USAGE = {"prompt_tokens": 19, "completion_tokens": 3, "total_tokens": 22}


def openai_text_chunks():
    """A streamed text answer with include_usage, as OpenAI sends it."""
    return [openai_chunk({"role": "assistant", "content": "", "refusal": None}),
            openai_chunk({"content": "Hello"}),
            openai_chunk({"content": " world!"}),
            openai_chunk({}, "stop"),
            openai_chunk(usage=USAGE, choices=False)]


def openai_tool_chunks():
    return [
        openai_chunk({"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": ""}}]}),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city"'}}]}),
        openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ': "Paris"}'}}]}),
        openai_chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                      "function": {"name": "now", "arguments": ""}}]}),
        openai_chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
        openai_chunk({}, "tool_calls"),
        openai_chunk(usage=USAGE, choices=False),
    ]


def message_start(message_id="msg_Xyz", model="claude-via-gpt"):
    return ("message_start", {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0}}})


def test_chat_stream_to_messages_text():
    translator = tr.ChatStreamToMessages("claude-via-gpt")
    chunks = openai_text_chunks()
    events = []
    for chunk in chunks[:-1]:
        events += translator.feed(chunk)
    assert translator.usage is None
    closing = translator.feed(chunks[-1])
    assert translator.usage == USAGE
    assert events == [
        message_start(),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": " world!"}}),
    ]
    # the closing events go as soon as finish reason and usage are both known
    assert closing == [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"input_tokens": 19, "output_tokens": 3}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert translator.finish() == [] and translator.feed(openai_chunk({"content": "x"})) == []


def test_chat_stream_to_messages_tool_calls():
    translator = tr.ChatStreamToMessages("claude-via-gpt")
    events = [e for chunk in openai_tool_chunks() for e in translator.feed(chunk)]
    events += translator.finish()
    assert events == [
        message_start(),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": '{"city"'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": ': "Paris"}'}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "call_b", "name": "now", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {
            "type": "input_json_delta", "partial_json": "{}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                           "usage": {"input_tokens": 19, "output_tokens": 3}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_chat_stream_to_messages_without_usage_chunk():
    """An upstream that ignores stream_options: closing events come from finish()."""
    translator = tr.ChatStreamToMessages("m")
    events = [e for chunk in openai_text_chunks()[:-1] for e in translator.feed(chunk)]
    assert events[-1][0] == "content_block_delta"
    closing = translator.finish()
    assert [name for name, _ in closing] == ["content_block_stop", "message_delta",
                                             "message_stop"]
    assert closing[1][1]["usage"] == {"output_tokens": 0}
    assert translator.finish() == []


def test_chat_stream_to_messages_empty_and_error():
    events = tr.ChatStreamToMessages("m").finish()
    assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert events[0][1]["message"]["id"] == "msg_openai"
    translator = tr.ChatStreamToMessages("m")
    translator.feed(openai_chunk({"content": "Hi"}))
    assert translator.feed({"error": {"message": "model overloaded", "type": "server_error",
                                      "code": None}}) == [
        ("error", {"type": "error", "error": {"type": "api_error",
                                              "message": "model overloaded"}})]
    assert translator.finish() == []


def test_translated_stream_read_by_anthropic_sdk(server, client):
    """ChatStreamToMessages + sse() produce a stream the official SDK assembles
    into the message the OpenAI upstream meant."""
    translator = tr.ChatStreamToMessages("claude-via-gpt")
    chunks = [openai_chunk({"role": "assistant", "content": "Let me check."})]
    chunks += openai_tool_chunks()[:3] + openai_tool_chunks()[5:]
    body = b"".join(tr.sse(name, data) for chunk in chunks for name, data in translator.feed(chunk))
    body += b"".join(tr.sse(name, data) for name, data in translator.finish())
    server.script(body=body, headers={"Content-Type": "text/event-stream"})
    with client.messages.stream(model="m", max_tokens=100,
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == "Let me check."
    assert message.id == "msg_Xyz" and message.model == "claude-via-gpt"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"city": "Paris"} and message.content[1].id == "call_a"
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (19, 3)


# -- errors -> Anthropic -----------------------------------------------------------

@pytest.mark.parametrize("status, kind", [
    (400, "invalid_request_error"), (401, "authentication_error"),
    (403, "permission_error"), (404, "not_found_error"), (413, "request_too_large"),
    (422, "invalid_request_error"), (429, "rate_limit_error"), (500, "api_error"),
    (502, "api_error"), (503, "overloaded_error"),
])
def test_error_to_anthropic(status, kind):
    body = {"error": {"message": "Something about it", "type": "whatever", "param": None,
                      "code": "x"}}
    assert tr.error_to_anthropic(status, body) == (status, {
        "type": "error", "error": {"type": kind, "message": "Something about it"}})


def test_error_to_anthropic_other_bodies():
    assert tr.error_to_anthropic(422, {"detail": [{"loc": ["body"], "msg": "bad"}]})[1] == {
        "type": "error", "error": {"type": "invalid_request_error",
                                   "message": '[{"loc": ["body"], "msg": "bad"}]'}}
    assert tr.error_to_anthropic(400, '{"error": "model not found"}')[1]["error"]["message"] \
        == "model not found"
    assert tr.error_to_anthropic(502, b"upstream down")[1]["error"] == {
        "type": "api_error", "message": "upstream down"}
    assert tr.error_to_anthropic(500, None)[1]["error"]["message"] == \
        "The upstream answered HTTP 500."
    # inside a 200 stream, a known type decides the status
    assert tr.error_to_anthropic(200, {"error": {"message": "slow", "type": "rate_limit_error"}}) \
        == (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}})


def test_error_round_trip_keeps_overload():
    status, body = tr.error_to_openai(529, {"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}})
    assert (status, body["error"]["type"]) == (503, "overloaded_error")
    assert tr.error_to_anthropic(status, body) == (503, {
        "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def test_sse():
    assert tr.sse("message_stop", {"type": "message_stop"}) == \
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    assert tr.sse("content_block_delta", {"text": "caf\u00e9\nnext"}) == \
        'event: content_block_delta\ndata: {"text":"caf\u00e9\\nnext"}\n\n'.encode()
    assert tr.ANTHROPIC_VERSION == "2023-06-01" and tr.DEFAULT_MAX_TOKENS == 4096


# -- the fake Anthropic upstream, as the official SDK sees it ----------------------

def test_fake_answers_sdk_create(server, client):
    message = client.messages.create(
        model="claude-sonnet-4-6", max_tokens=100, system="be brief",
        messages=[{"role": "user", "content": "hello there"}])
    assert message.type == "message" and message.role == "assistant"
    assert message.id == "msg_fake1" and message.model == "claude-sonnet-4-6"
    assert [(b.type, b.text) for b in message.content] == [("text", "echo: hello there")]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    # "be brief" + "hello there" = 4 words in; "echo: hello there" = 3 words out
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 3)
    request = server.requests[0]
    assert request.method == "POST" and request.path == "/v1/messages"
    assert request.headers["ANTHROPIC-VERSION"] and request.headers["authorization"] == "Bearer x"
    assert request.json == {"model": "claude-sonnet-4-6", "max_tokens": 100,
                            "system": "be brief",
                            "messages": [{"role": "user", "content": "hello there"}]}


def test_fake_streams_to_sdk(server, client):
    kwargs = dict(model="claude-sonnet-4-6", max_tokens=100,
                  messages=[{"role": "user", "content": "say hello"},
                            {"role": "assistant", "content": "hi"},
                            {"role": "user", "content": [{"type": "text", "text": "again please"}]}])
    events = list(client.messages.create(stream=True, **kwargs))
    assert [e.type for e in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == \
        "echo: again please"
    assert events[0].message.usage.input_tokens == 5
    assert events[-2].delta.stop_reason == "end_turn" and events[-2].usage.output_tokens == 3
    with client.messages.stream(**kwargs) as stream:
        streamed = stream.get_final_message()
    plain = client.messages.create(**kwargs)
    assert streamed.model_dump(exclude={"id"}) == plain.model_dump(exclude={"id"})


def test_fake_raw_stream_format(server):
    server.script(reply="It is sunny.", tool_use=dict(name="get_weather", input={"city": "Paris"}))
    response = requests.post(f"{server.base_url}/v1/messages", timeout=5, headers={
        "x-api-key": "sk-ant-test", "anthropic-version": tr.ANTHROPIC_VERSION}, json={
        "model": "claude-x", "max_tokens": 50, "stream": True,
        "messages": [{"role": "user", "content": "weather in Paris?"}]})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["request-id"] == "req_fake1"
    pairs = sse_pairs(response.content)
    assert [name for name, _ in pairs] == [
        "message_start", "content_block_start", "ping", "content_block_delta",
        "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert pairs[7][1]["content_block"] == {"type": "tool_use", "id": "toolu_fake1_0",
                                            "name": "get_weather", "input": {}}
    pieces = [data["delta"]["partial_json"] for name, data in pairs[8:11]]
    assert pieces[0] == "" and json.loads("".join(pieces)) == {"city": "Paris"}
    assert pairs[-2][1] == {"type": "message_delta",
                            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                            "usage": {"output_tokens": 5}}
    assert server.requests[0].headers["X-Api-Key"] == "sk-ant-test"


def test_fake_tool_use_through_sdk(server, client):
    server.script(tool_use=[dict(name="get_weather", input={"city": "Paris"}),
                            dict(name="now")])
    server.script(tool_use=dict(name="get_weather", input={"city": "Rome"}))
    message = client.messages.create(model="m", max_tokens=50, tools=[ANTHROPIC_WEATHER_TOOL],
                                     messages=[{"role": "user", "content": "weather?"}])
    assert [(b.type, b.name, b.input) for b in message.content] == [
        ("tool_use", "get_weather", {"city": "Paris"}), ("tool_use", "now", {})]
    assert message.stop_reason == "tool_use"
    with client.messages.stream(model="m", max_tokens=50,
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    assert [(b.type, b.input) for b in final.content] == [("tool_use", {"city": "Rome"})]
    assert server.requests[0].json["tools"] == [ANTHROPIC_WEATHER_TOOL]


def test_fake_scripted_stop_reason(server, client):
    server.script(stop_reason="stop_sequence", reply="one two")
    server.script(stop_reason="max_tokens", chunks=["a", "b"])
    message = client.messages.create(model="m", max_tokens=5, stop_sequences=["three"],
                                     messages=[{"role": "user", "content": "count"}])
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "three")
    with client.messages.stream(model="m", max_tokens=5,
                                messages=[{"role": "user", "content": "go"}]) as stream:
        assert list(stream.text_stream) == ["a", "b"]
        assert stream.get_final_message().stop_reason == "max_tokens"
    with pytest.raises(ValueError):
        server.script(stop_reason="bored")
    with pytest.raises(TypeError):
        server.script(tools="x")


@pytest.mark.parametrize("status, exception, kind", [
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (401, anthropic.AuthenticationError, "authentication_error"),
    (403, anthropic.PermissionDeniedError, "permission_error"),
    (404, anthropic.NotFoundError, "not_found_error"),
    (413, anthropic.ContentTooLargeError, "request_too_large"),
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (529, anthropic.OverloadedError, "overloaded_error"),
])
def test_fake_errors_map_to_sdk_exceptions(server, client, status, exception, kind):
    server.script(status=status, headers={"Retry-After": "3"} if status == 429 else None)
    with pytest.raises(exception) as raised:
        client.messages.create(model="m", max_tokens=5,
                               messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == status
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == kind
    assert raised.value.request_id == raised.value.body["request_id"] == "req_fake1"
    if status == 529:  # retried like any server error by clients that catch those
        assert isinstance(raised.value, anthropic.InternalServerError)
    # and the proxy's translation of what the client saw
    openai_status, openai_body = tr.error_to_openai(status, raised.value.response.content)
    assert openai_status == (503 if status == 529 else status)
    assert openai_body["error"]["code"] == kind


def test_fake_streams_error_event(server, client):
    server.script(reply="partial answer", stream_error="overloaded_error")
    with pytest.raises(anthropic.APIStatusError) as raised:
        for _ in client.messages.create(model="m", max_tokens=5, stream=True,
                                        messages=[{"role": "user", "content": "hi"}]):
            pass
    assert raised.value.body == {"type": "error", "error": {"type": "overloaded_error",
                                                            "message": "Overloaded"}}


def test_fake_requires_key_and_version(server):
    url = f"{server.base_url}/v1/messages"
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    for headers, missing in [({"anthropic-version": "2023-06-01"}, "x-api-key"),
                             ({"Authorization": "Bearer ", "anthropic-version": "2023-06-01"},
                              "x-api-key"),
                             ({"x-api-key": "k"}, "anthropic-version"),
                             ({"x-api-key": "k", "anthropic-version": "2023-06-01"}, None)]:
        server.script(status=529)  # credentials are checked before the scripted answer
        response = requests.post(url, json=body, headers=headers, timeout=5)
        if missing is None:
            assert response.status_code == 529
            continue
        assert response.status_code == 401
        assert response.json()["error"] == {"type": "authentication_error",
                                            "message": f"{missing}: header is required"}


@pytest.mark.parametrize("body, message", [
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]},
     "messages.0.role"),
])
def test_fake_rejects_what_the_api_rejects(server, client, body, message):
    with pytest.raises(anthropic.BadRequestError, match=message):
        client.post("/v1/messages", body=body, cast_to=object)


def test_fake_unknown_path(server):
    response = requests.get(f"{server.base_url}/v1/files", timeout=5, headers={
        "x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_fake_gate_holds_stream(server):
    """The timing controls of FakeUpstream work on Anthropic events too."""
    gate = threading.Event()
    server.script(gate=gate)
    response = requests.post(f"{server.base_url}/v1/messages", stream=True, timeout=5, headers={
        "x-api-key": "k", "anthropic-version": "2023-06-01"}, json={
        "model": "m", "max_tokens": 5, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]})
    lines = response.iter_lines()
    assert next(lines) == b"event: message_start"   # the first event, while we hold the rest
    gate.set()
    rest = b"\n".join(lines).rstrip()
    assert rest.endswith(b'event: message_stop\ndata: {"type": "message_stop"}')
    response.close()


# -- whole pipelines through the fakes ---------------------------------------------

def test_openai_client_to_anthropic_upstream(server):
    """An OpenAI request, translated, answered by the Anthropic fake, translated back."""
    request = {"model": "claude-sonnet-4-6", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"}], "stream_options": {"include_usage": True}}
    headers = {"x-api-key": "sk-ant-test", "anthropic-version": tr.ANTHROPIC_VERSION}
    url = f"{server.base_url}/v1/messages"
    answer = requests.post(url, json=tr.chat_to_messages(request), headers=headers, timeout=5)
    assert answer.status_code == 200, answer.text
    completion = ChatCompletion.model_validate(tr.message_to_chat(answer.json(), "claude"))
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.usage.prompt_tokens == 4 and completion.usage.completion_tokens == 3

    streamed = tr.chat_to_messages({**request, "stream": True})
    answer = requests.post(url, json=streamed, headers=headers, timeout=5)
    translator = tr.MessagesStreamToChat("claude", include_usage=True)
    chunks = [c for name, data in sse_pairs(answer.content) for c in translator.feed(name, data)]
    final = assemble(chunks)
    assert final.choices[0].message.content == "echo: hello there"
    assert final.choices[0].finish_reason == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 3,
                                   "total_tokens": 7}
    assert translator.error is None

    server.script(status=529)
    answer = requests.post(url, json=streamed, headers=headers, timeout=5)
    assert tr.error_to_openai(answer.status_code, answer.content)[0] == 503


def test_openai_tool_call_through_anthropic_upstream(server):
    server.script(tool_use=dict(name="get_weather", input={"city": "Paris"}))
    request = {"model": "claude-sonnet-4-6", "stream": True, "tools": [OPENAI_WEATHER_TOOL],
               "messages": [{"role": "user", "content": "weather in Paris?"}]}
    answer = requests.post(f"{server.base_url}/v1/messages", json=tr.chat_to_messages(request),
                           headers={"x-api-key": "k", "anthropic-version": tr.ANTHROPIC_VERSION},
                           timeout=5)
    assert server.requests[0].json["tools"] == [ANTHROPIC_WEATHER_TOOL]
    translator = tr.MessagesStreamToChat("claude", include_usage=False)
    chunks = [c for name, data in sse_pairs(answer.content) for c in translator.feed(name, data)]
    message = assemble(chunks).choices[0].message
    assert message.tool_calls[0].id == "toolu_fake1_0"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert assemble(chunks).choices[0].finish_reason == "tool_calls"


def test_anthropic_client_to_openai_upstream(upstream, server, client):
    """An Anthropic request, translated, answered by the OpenAI fake, and the
    translated stream read back by the official Anthropic SDK."""
    request = {"model": "gpt-4o-mini", "max_tokens": 64, "system": "be brief",
               "messages": [{"role": "user", "content": "hello there"}]}
    url = f"{upstream.base_url}/chat/completions"
    answer = requests.post(url, json=tr.messages_to_chat(request), timeout=5).json()
    message = anthropic.types.Message.model_validate(tr.chat_to_message(answer, "gpt"))
    assert message.content[0].text == "echo: hello there"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 3)

    streamed = requests.post(url, json=tr.messages_to_chat({**request, "stream": True}),
                             timeout=5)
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    translator = tr.ChatStreamToMessages("gpt")
    body = b""
    for line in streamed.content.decode().split("\n\n"):
        if line.startswith("data: ") and line != "data: [DONE]":
            body += b"".join(tr.sse(*event) for event in translator.feed(json.loads(line[6:])))
    body += b"".join(tr.sse(*event) for event in translator.finish())
    server.script(body=body, headers={"Content-Type": "text/event-stream"})
    with client.messages.stream(**request) as stream:
        assert "".join(stream.text_stream) == "echo: hello there"
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (4, 3)
