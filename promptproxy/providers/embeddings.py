"""OpenAI's embeddings (/v1/embeddings), from OpenAI-compatible upstreams.

The request is passed through as the client sent it (`input` in any of OpenAI's
shapes, or an upstream's own, `encoding_format`, `dimensions`, `user`), but for the
upstream's model name. Stored prompts do not apply to embeddings, and an answer is
never streamed. The answer is passed back byte for byte; what the request row
keeps of it is its input tokens and, for tracked keys, everything but the vectors,
which would make a row megabytes long.
"""

from .base import Refused
from .openai import OpenAIRoute


def rewrite_embeddings(body, model, prompt):
    """The upstream's model name; a stored prompt or a stream is refused."""
    if prompt is not None:
        raise Refused("Stored prompts do not apply to embeddings: call the model without ':<prompt>'.",
                      param="model")
    if body.pop("stream", None):
        raise Refused("Embeddings are not streamed: leave out 'stream' or set it to false.", param="stream")
    body["model"] = model.model
    return body


class EmbeddingsRoute(OpenAIRoute):
    """An OpenAI client and an OpenAI-compatible upstream: passed through, errors included."""

    def __init__(self):
        super().__init__("embeddings")

    def answer(self, call, parsed):
        call.usage = usage(parsed.get("usage"))
        if call.track:
            call.response_body = without_vectors(parsed)
        return parsed


def usage(reported):
    """The row's token figures: the upstream's input tokens, no output tokens (an
    embedding generates none, whatever an upstream says), and its total, or the
    input tokens when it gives none. Figures pass as reported (upstreams are
    untrusted): the row's storage keeps only what is a number, and notes the rest."""
    reported = reported if isinstance(reported, dict) else {}
    prompt_tokens, total_tokens = reported.get("prompt_tokens"), reported.get("total_tokens")
    return {"prompt_tokens": prompt_tokens, "completion_tokens": 0,
            "total_tokens": prompt_tokens if total_tokens is None else total_tokens}


def without_vectors(parsed):
    """The answer as a tracked key's row keeps it: `data` says how many embeddings
    there were, their size and their encoding instead of holding them."""
    data = parsed.get("data")
    if not isinstance(data, list):
        return parsed
    first = data[0].get("embedding") if data and isinstance(data[0], dict) else None
    encoding = "base64" if isinstance(first, str) else "float" if isinstance(first, list) else None
    return {**parsed, "data": {"embeddings": len(data), "dimensions": dimensions(first),
                               "encoding_format": encoding}}


def dimensions(vector):
    """How many numbers an embedding holds: a list's length, or the float32s a
    base64 string encodes; None for anything else."""
    if isinstance(vector, list):
        return len(vector)
    if isinstance(vector, str):
        return len(vector.rstrip("=")) * 3 // 4 // 4
    return None
