"""Open N concurrent streaming chat calls and time every chunk: a load client for
`bench/run.py`, in its own process so its CPU is not the proxy's.

    python bench/streams.py URL N [KEY] [MODEL]

Prints one JSON object: errors, time to first chunk (p50/p99, ms), the spread
between each stream's first and last content chunk (a buffering proxy would
squash it towards 0), and the largest gap between two chunks.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.pool import Pool  # noqa: E402


def percentile(values, p):
    values = sorted(values)
    if not values:
        return None
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def one_stream(host, port, path, key, model, release):
    body = json.dumps({"model": model, "stream": True,
                       "messages": [{"role": "user", "content": "stream please"}]}).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode()
    if key:
        head += f"Authorization: Bearer {key}\r\n".encode()
    sock = socket.create_connection((host, port), timeout=30)
    try:
        release.wait()  # every stream starts at once
        started = time.perf_counter()
        sock.sendall(head + b"\r\n" + body)
        arrivals, data, status = [], b"", None
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            now = time.perf_counter()
            data += piece
            if status is None and b"\r\n" in data:
                status = int(data.split(b" ", 2)[1])
            arrivals.extend([now] * piece.count(b'"content"'))
            if b"[DONE]" in data and data.endswith(b"0\r\n\r\n"):
                break  # the last chunk of a chunked body
        ok = status == 200 and b"[DONE]" in data and b'"error"' not in data
        return {"ok": ok, "status": status, "first": (arrivals[0] - started) * 1000 if arrivals else None,
                "spread": (arrivals[-1] - arrivals[0]) * 1000 if arrivals else None,
                "gap": max((b - a for a, b in zip(arrivals, arrivals[1:])), default=0) * 1000,
                "chunks": len(arrivals)}
    except OSError as exc:
        return {"ok": False, "status": None, "error": type(exc).__name__}
    finally:
        sock.close()


def main(url, count, key=None, model="bench"):
    parts = urlsplit(url)
    path = parts.path.rstrip("/") + "/chat/completions"
    release = Event()
    pool = Pool(count)
    jobs = [pool.spawn(one_stream, parts.hostname, parts.port, path, key, model, release)
            for _ in range(count)]
    gevent.sleep(0.2)  # let every connection open before the starting gun
    release.set()
    results = [job.get() for job in jobs]
    good = [r for r in results if r["ok"]]
    return {
        "streams": count, "errors": count - len(good),
        "ttfc_p50_ms": percentile([r["first"] for r in good], 50),
        "ttfc_p99_ms": percentile([r["first"] for r in good], 99),
        "spread_p50_ms": percentile([r["spread"] for r in good], 50),
        "spread_min_ms": min((r["spread"] for r in good), default=None),
        "max_gap_ms": max((r["gap"] for r in good), default=None),
        "chunks_per_stream": percentile([r["chunks"] for r in good], 50),
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(args[0], int(args[1]), *(args[2:4]))))
