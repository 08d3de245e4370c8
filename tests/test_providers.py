"""The providers' shared pieces: one way to authenticate to an api (used by the proxy
and by the admin's Test connection), one way to read an upstream's error message,
one table of OpenAI error types."""

from types import SimpleNamespace

import pytest
import urllib3

from promptproxy.providers import Refused, route
from promptproxy.providers.anthropic import ANTHROPIC_VERSION, error_to_openai
from promptproxy.providers.base import error_message
from promptproxy.providers.openai import error_body
from promptproxy.providers.upstream import upstream_base, upstream_headers


def api(protocol, headers=None):
    return SimpleNamespace(protocol=protocol, headers=headers)


@pytest.mark.parametrize("headers", [{}, urllib3.HTTPHeaderDict()])
def test_each_protocol_authenticates_its_own_way(headers):
    openai = upstream_headers(api("openai", {"X-Team": 7}), "sk-1", type(headers)())
    assert dict(openai) == {"X-Team": "7", "Authorization": "Bearer sk-1"}
    claude = upstream_headers(api("anthropic"), "sk-ant", type(headers)())
    assert dict(claude) == {"Anthropic-Version": ANTHROPIC_VERSION, "X-Api-Key": "sk-ant"}
    assert dict(upstream_headers(api(None), "", type(headers)())) == {}  # no key: nothing sent


def test_a_version_the_api_sets_is_kept_and_its_key_cannot_be_overridden():
    headers = upstream_headers(api("anthropic", {"anthropic-version": "2099-01-01", "X-Api-Key": "other"}),
                               "sk-ant", urllib3.HTTPHeaderDict())
    assert headers["Anthropic-Version"] == "2099-01-01" and headers["x-api-key"] == "sk-ant"


@pytest.mark.parametrize("protocol, base_url, base", [
    ("openai", "http://h:1/v1/", "http://h:1/v1"), ("openai", "http://h:1", "http://h:1"),
    ("anthropic", "https://api.anthropic.com", "https://api.anthropic.com/v1"),
    ("anthropic", "https://api.anthropic.com/v1/", "https://api.anthropic.com/v1"),
])
def test_upstream_base(protocol, base_url, base):
    assert upstream_base(protocol, base_url) == base


@pytest.mark.parametrize("data, raw, message", [
    ({"error": {"message": "bad key", "type": "x"}}, None, "bad key"),
    ({"type": "error", "error": {"type": "api_error", "message": "boom"}}, None, "boom"),
    ({"error": "model not found"}, None, "model not found"),
    ({"message": "plain"}, None, "plain"),
    ({"detail": [{"loc": ["body"], "msg": "field required"}]}, None,
     '[{"loc": ["body"], "msg": "field required"}]'),
    ({"error": {"message": 42}}, None, "42"),
    (None, b"  <html>Bad Gateway</html>\n", "<html>Bad Gateway</html>"),
    ({"unexpected": True}, None, None),
    (None, b"", None),
])
def test_error_message_in_any_shape(data, raw, message):
    assert error_message(data, raw) == message


def test_one_openai_error_table():
    """OpenAI has no overload type (it answers an overload with 503 and server_error):
    a 503 without a type of its own is api_error; Anthropic's overloaded_error keeps its."""
    assert error_body(503, "busy")["error"]["type"] == "api_error"
    assert error_body(429, "slow")["error"]["type"] == "rate_limit_error"
    assert error_to_openai(503, b"Service Unavailable")[1]["error"]["type"] == "api_error"
    assert error_to_openai(529, None)[1]["error"]["type"] == "overloaded_error"


def test_a_pairing_without_an_endpoint_is_refused_on_the_model():
    with pytest.raises(Refused) as refused:
        route("openai", "completions", "anthropic")
    assert refused.value.param == "model" and "chat/completions" in str(refused.value)
