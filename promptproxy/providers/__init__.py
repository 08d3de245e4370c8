"""How each kind of client is spoken to through each kind of upstream.

The proxy's path (proxy.py) is the same for every call; what differs is the shape
of the data. A client speaks OpenAI (/v1/chat/completions, /v1/completions, /v1/embeddings) or
Anthropic (/v1/messages); an api's protocol is `openai` or `anthropic`. A route
holds what one (client, upstream) pairing needs: the upstream endpoint, how to
translate the request, the answer, the errors and the stream (see openai.py).

    openai.py      OpenAI's format: prompt rewrites, pass-through route, errors, Bearer auth
    embeddings.py  OpenAI's embeddings, from OpenAI-compatible upstreams only
    anthropic/     Anthropic's Messages API and the translation to and from OpenAI's
    upstream.py    connection pools, a call sent with the api's own authentication
    sse.py         the event-stream parser every relayed stream goes through
    base.py        what they share: Refused, reading an upstream's JSON and error messages
"""

from .anthropic.messages import CountTokensRoute, EstimateTokensRoute, MessagesRoute
from .anthropic.translated import ChatToAnthropicRoute, MessagesToOpenAIRoute
from .base import Refused
from .embeddings import EmbeddingsRoute
from .openai import OpenAIRoute


def route(client, endpoint, protocol):
    """The route for a client format, its endpoint and the api's protocol."""
    protocol = protocol or "openai"
    if client == "openai":
        if endpoint == "embeddings":
            if protocol != "openai":
                raise Refused("Embeddings are only available from OpenAI-compatible apis: this model is "
                              "behind an Anthropic api, which has none.", param="model")
            return EmbeddingsRoute()
        if protocol == "openai":
            return OpenAIRoute(endpoint)
        if endpoint == "chat/completions":
            return ChatToAnthropicRoute()
        raise Refused("Legacy completions are not available for Anthropic models: "
                      "use /v1/chat/completions.", param="model")
    if endpoint == "messages/count_tokens":
        return CountTokensRoute() if protocol == "anthropic" else EstimateTokensRoute()
    return MessagesRoute() if protocol == "anthropic" else MessagesToOpenAIRoute()
