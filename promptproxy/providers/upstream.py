"""The connections to upstream apis: where an api's endpoints are, how it is
authenticated, one keep-alive connection pool per base URL, and what a transport
failure means to the client. The proxy sends its calls through `forward`; the
admin's Test connection builds its request with `upstream_base` and
`upstream_headers`, so both authenticate to an api the same way."""

from urllib.parse import urlsplit

import certifi
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError
from urllib3.exceptions import TimeoutError as UpstreamTimeout

from ..errors import ProxyError
from . import openai
from .anthropic import messages as anthropic

# The only client headers sent upstream: feature flags clients legitimately set, and
# tracing. Everything else (credentials, OpenAI-Organization or OpenAI-Project that
# would bill another account, hop-by-hop headers) stays here; an api's own `headers`
# are added on top.
FORWARDED = frozenset({
    "openai-beta", "anthropic-beta", "anthropic-version", "user-agent", "accept-language",
    "x-request-id", "traceparent", "tracestate", "idempotency-key",
})
# Upstream response headers worth passing back to the client.
PASSED_BACK = ("retry-after", "x-request-id", "openai-processing-ms")
AUTHENTICATE = {"openai": openai.authenticate, "anthropic": anthropic.authenticate}


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


def upstream_headers(api, secret, headers):
    """`headers` with the api's own headers and its authentication (by its
    protocol, with its decrypted key `secret`) put on top."""
    for name, value in (api.headers or {}).items():
        headers[str(name)] = str(value)
    AUTHENTICATE.get(api.protocol, openai.authenticate)(headers, secret)
    return headers


def pool_for(pools, base_url):
    """The keep-alive connection pool to `base_url` in `pools` (the app's), made on first use."""
    pool = pools.get(base_url)
    if pool is None:
        tls = {"ca_certs": certifi.where()} if base_url.startswith("https:") else {}
        pool = pools[base_url] = urllib3.connection_from_url(
            base_url, maxsize=512, block=False, retries=False, **tls)
        pool.path = urlsplit(base_url).path.rstrip("/")
    return pool


def forward(pools, api, endpoint, body, stream, environ):
    """Send a call upstream with the api's own key, and those of the client's
    headers (from its WSGI `environ`) that are FORWARDED, on a connection from
    `pools`; the response's body is read later, as it arrives.

    A POST reaches the upstream once. It is sent again only when writing it failed
    with a broken pipe, which means the upstream had closed the connection before
    the request got there; a connection reset or closed after the request was
    written may have started a generation, so it is reported, never repeated.
    """
    if api.secret_error:  # never send the call without the key it needs
        raise ProxyError(500, api.secret_error, type_="server_error", code="api_key_unreadable")
    headers = {name[5:].replace("_", "-").title(): value for name, value in environ.items()
               if name.startswith("HTTP_") and name[5:].replace("_", "-").lower() in FORWARDED}
    headers["Content-Type"] = "application/json"
    headers["Accept"] = "text/event-stream" if stream else "application/json"
    upstream_headers(api, api.secret, headers)
    timeout = urllib3.Timeout(connect=api.timeout or 60, read=api.timeout or 60)
    pool = pool_for(pools, upstream_base(api.protocol, api.base_url))
    for attempt in (1, 2):
        try:
            return pool.urlopen("POST", f"{pool.path}/{endpoint}", body=body, headers=headers,
                                timeout=timeout, preload_content=False, redirect=False,
                                assert_same_host=False)
        except ProtocolError as exc:
            if attempt == 1 and never_sent(exc):
                continue
            raise upstream_failure(api, exc) from None
        except HTTPError as exc:
            raise upstream_failure(api, exc) from None


def never_sent(exc):
    """Did writing the request fail because the upstream had already closed the
    connection (so it cannot have received the request)?"""
    cause = exc.args[1] if len(exc.args) > 1 else exc.__context__
    return isinstance(cause, BrokenPipeError)


def upstream_failure(api, exc):
    """What a transport error means to the client: 502 unreachable or broken, 504 silent.
    Messages name the api, never its URL or key."""
    if isinstance(exc, NewConnectionError):
        return ProxyError(502, f"The upstream '{api.name}' could not be reached.",
                          type_="api_error", code="upstream_unreachable", upstream_error="connection")
    if isinstance(exc, UpstreamTimeout):
        return ProxyError(504, f"The upstream '{api.name}' went silent for {api.timeout} s.",
                          type_="api_error", code="upstream_timeout", upstream_error="timeout")
    return ProxyError(502, f"The upstream '{api.name}' broke off ({type(exc).__name__}).",
                      type_="api_error", code="upstream_error", upstream_error="broken")
