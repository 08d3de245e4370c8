"""Upstream APIs: any OpenAI-compatible server (OpenAI, Ollama, vLLM, ...)."""

from ..data.collection import Collection
from ..data.fields import Bool, Json, Number, Secret, Select, Text, Url

apis = Collection(
    "apis",
    Text("name", required=True, unique=True),
    Url("base_url", required=True, label="Base URL",
        help="Up to and including /v1, e.g. https://api.openai.com/v1 or http://localhost:11434/v1; "
             "for Anthropic, https://api.anthropic.com (with or without /v1)."),
    Secret("api_key", label="API key", help="The upstream's key; stored encrypted. Empty for none."),
    Select("protocol", choices=["openai", "anthropic"], default="openai", required=True),
    Number("timeout", default=60, min=1, max=3600,
           help="Seconds to wait for a connection or between streamed chunks.", group="advanced"),
    Number("retries", default=0, min=0, max=10,
           help="Times a call that failed retryably (connection error, timeout, 408, 429, 5xx) is tried again "
                "on this api before moving on to another model.", group="routing"),
    Number("cooldown", default=30, min=0, max=86400,
           help="Seconds this api is skipped after 3 retryable failures within 60 s, or a 429 with "
                "Retry-After (then the longer of the two).", group="routing"),
    Number("concurrency", min=1, label="Concurrent calls",
           help="Calls in flight to this api at most, across all workers; over it, calls go to another "
                "model or get a 429. Empty: no cap.", group="routing"),
    Json("headers", kind=dict, help="Extra headers to send, as a JSON object.", group="advanced"),
    Bool("active", default=True),
    label="APIs",
    title="name",
    list=["name", "base_url", "protocol", "api_key", "active", "created"],
    search=["name", "base_url"],
    filters=["protocol", "active"],
    sort="name",
)
