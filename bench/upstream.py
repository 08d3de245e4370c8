"""A fast fake OpenAI upstream for benchmarks: gevent, raw sockets, canned answers.

    python bench/upstream.py PORT [GAP_SECONDS]

`POST .../chat/completions` answers a fixed chat.completion with usage. With
`"stream": true` it sends 20 chunks 50 ms apart (chunked framing), then a usage
chunk when `stream_options.include_usage` was asked, then `[DONE]`. Just enough
HTTP/1.1 (keep-alive, Content-Length request bodies) to be far cheaper than the
proxy it is measured against, so the numbers are about the proxy.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

CHUNKS, GAP = 20, 0.05
USAGE = {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}
REPLY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " * 20},
                 "finish_reason": "stop"}],
    "usage": USAGE}).encode()
JSON_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                 + str(len(REPLY)).encode() + b"\r\n\r\n" + REPLY)
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(choices, usage=None):
    body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "bench", "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


WORD = [event([{"index": 0, "delta": {"content": "ok "}, "finish_reason": None}])]
LAST = event([{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}])
USAGE_EVENT = event([], USAGE)
DONE = b"data: [DONE]\n\n"


def read_request(conn, buffer):
    """(body, rest of buffer) for one request, or (None, b"") at EOF."""
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None, b""
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = conn.recv(65536)
        if not data:
            return None, b""
        rest += data
    return rest[:length], rest[length:]


def handle(conn, address):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    try:
        while True:
            body, buffer = read_request(conn, buffer)
            if body is None:
                return
            if b'"stream":true' not in body.replace(b" ", b""):
                conn.sendall(JSON_RESPONSE)
                continue
            conn.sendall(STREAM_HEAD)
            for i in range(CHUNKS):
                if i:
                    gevent.sleep(GAP)
                conn.sendall(chunk(LAST if i == CHUNKS - 1 else WORD[0]))
            if b'"include_usage":true' in body.replace(b" ", b""):
                conn.sendall(chunk(USAGE_EVENT))
            conn.sendall(chunk(DONE) + b"0\r\n\r\n")
    except OSError:
        pass
    finally:
        conn.close()


if __name__ == "__main__":
    if len(sys.argv) > 2:  # another gap between chunks, in seconds (0 for profiling)
        GAP = float(sys.argv[2])
    server = StreamServer(("127.0.0.1", int(sys.argv[1])), handle, backlog=2048)
    server.serve_forever()
