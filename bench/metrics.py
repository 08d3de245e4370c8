"""Time what the Prometheus metrics add to one call: `Metrics.began` and
`Metrics.ended` for a streamed call with a prompt, usage and a first byte (every
figure but an error), as the proxy counts each call.

    python bench/metrics.py

Prints one JSON object per mode: figures in memory (an app run without a metrics
directory) and in memory-mapped files (under gunicorn or `app.py serve`), in
microseconds per call, the best of several rounds, in process CPU time.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def run(calls=20000, rounds=7):
    from promptproxy.accounting.calls import Call
    from promptproxy.accounting.metrics import Metrics

    metrics = Metrics()
    call = Call("chat/completions", SimpleNamespace(track=False), None, stream=True,
                model=SimpleNamespace(name="gpt", id="m1"), api=SimpleNamespace(name="Local"),
                prompt=SimpleNamespace(name="pirate", id="p1"), ttfb_ms=180.0,
                usage={"prompt_tokens": 12, "completion_tokens": 80, "total_tokens": 92})
    best = None
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            metrics.began()
            metrics.ended(call)
        elapsed = time.process_time() - started
        best = elapsed if best is None else min(best, elapsed)
    mode = "files" if metrics.directory else "memory"
    return {"mode": mode, "us_per_call": round(best / calls * 1e6, 2)}


if __name__ == "__main__":
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # the child below, or a caller's own directory
        print(json.dumps(run()))
        sys.exit(0)
    print(json.dumps(run()))
    with tempfile.TemporaryDirectory() as directory:  # the mode is chosen when prometheus_client is imported
        subprocess.run([sys.executable, __file__], env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory},
                       check=True)
