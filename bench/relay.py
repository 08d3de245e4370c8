"""Time the proxy's relay loop alone (no sockets): a recorded OpenAI stream, read in
pieces of a given size, through `relay.relay` and the OpenAI event class, as an
untracked key's stream would be.

    python bench/relay.py [PIECE_BYTES ...]

Prints one JSON object per piece size: microseconds per event and megabytes per
second, the best of several rounds, in process CPU time (the machine may be shared).
"""

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from promptproxy import relay
from promptproxy.accounting.calls import Call
from promptproxy.providers import openai

RECORDED = Path(__file__).resolve().parent.parent / "tests/fixtures/litellm-1.106.2/chat_stream_include_usage.sse"


class Upstream:
    def __init__(self, data, size):
        self.pieces = iter([data[i:i + size] for i in range(0, len(data), size)])

    def read1(self, n):
        return next(self.pieces, b"")

    def close(self):
        pass


def stream(repeat=400):
    """The recorded stream with its content chunks repeated: a long answer."""
    blocks = RECORDED.read_bytes().split(b"\n\n")
    content = [b for b in blocks if b'"content"' in b]
    rest = [b for b in blocks if b and b'"content"' not in b]
    return b"".join(b + b"\n\n" for b in content * repeat + rest), len(content) * repeat + len(rest)


def run(size, rounds=25):
    data, events = stream()
    best = None
    for _ in range(rounds):
        call = Call("chat/completions", SimpleNamespace(track=False), None)
        relayed = relay.relay(call, Upstream(data, size), openai.OpenAIEvents(call, True), None)
        started = time.process_time()
        out = b"".join(relayed)
        elapsed = time.process_time() - started
        best = elapsed if best is None else min(best, elapsed)
    assert b"Hel" in out and call.usage["total_tokens"] == 12
    return {"piece_bytes": size, "events": events, "us_per_event": round(best / events * 1e6, 3),
            "mb_per_s": round(len(data) / best / 1e6, 1)}


if __name__ == "__main__":
    for size in [int(arg) for arg in sys.argv[1:]] or [64, 180, 1024, 65536]:
        print(json.dumps(run(size)))
