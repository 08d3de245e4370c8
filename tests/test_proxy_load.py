"""Hundreds of concurrent calls through the Docker image's own command (gunicorn,
two gevent workers): exactly one request row each, with the right token counts,
after a graceful stop."""

import concurrent.futures
import threading

import pytest

from promptproxy.collections import BY_NAME
from promptproxy.data.db import db

from .servers import dockerfile_cmd
from .upstream import FakeUpstream

PLAIN, STREAMED, COMPLETIONS, CANCELLED = 120, 100, 40, 40


def words(text):
    return len(text.split())


@pytest.fixture
def slow_upstream():
    with FakeUpstream() as server:
        yield server


@pytest.mark.slow
def test_no_request_row_is_lost_under_concurrent_load(gateway, served, slow_upstream):
    slow_api = gateway.create("apis", name="Slow", base_url=slow_upstream.base_url)
    gateway.create("models", api=slow_api.id, model="slow-model", name="slow")
    for _ in range(CANCELLED):
        slow_upstream.script(chunks=[f"w{i} " for i in range(100)], delay=0.02)

    command = [arg if not arg.startswith("0.0.0.0:") else "127.0.0.1:{port}" for arg in dockerfile_cmd()]
    server = served(command)
    gateway.url = server.url
    client = gateway.client(timeout=60)
    pirate = words("Talk like a pirate.")
    expected = {}  # user message -> (input, output) tokens, or None if it may be cut short
    lock = threading.Lock()

    def plain(i):
        text = f"plain call {i}"
        reply = client.chat.completions.create(model="gpt:pirate", messages=[{"role": "user", "content": text}])
        assert reply.choices[0].message.content == "echo: " + text
        with lock:
            expected[text] = (pirate + words(text), 1 + words(text))

    def streamed(i):
        text = f"streamed call number {i}"
        parts = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": text}],
                                               stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in parts if c.choices) == "echo: " + text
        with lock:
            expected[text] = (words(text), 1 + words(text))

    def completion(i):
        text = f"complete this {i}"
        out = client.completions.create(model="gpt:pirate", prompt=text)
        full = "Talk like a pirate.\n\n" + text
        assert out.choices[0].text == "echo: " + full
        with lock:  # the row keeps the client's own prompt; the upstream counted the full one
            expected[text] = (words(full), 1 + words(full))

    def cancelled(i):
        text = f"cancelled call {i}"
        stream = client.chat.completions.create(model="slow", messages=[{"role": "user", "content": text}],
                                                stream=True)
        assert next(iter(stream)).choices[0].delta.content == "w0 "
        stream.close()
        with lock:
            expected[text] = None

    jobs = ([(plain, i) for i in range(PLAIN)] + [(streamed, i) for i in range(STREAMED)]
            + [(completion, i) for i in range(COMPLETIONS)] + [(cancelled, i) for i in range(CANCELLED)])
    jobs.sort(key=lambda job: (job[1] * 7919 + hash(job[0].__name__)) % 1000)  # interleave kinds
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        for future in [pool.submit(fn, i) for fn, i in jobs]:
            future.result()
    assert slow_upstream.wait_for_disconnect(timeout=30, n=CANCELLED)

    log = server.stop()  # SIGTERM: workers finish and flush their pending rows
    assert "Traceback" not in log, log[-3000:]
    with db.connection_context():
        rows = list(BY_NAME["requests"].model.select())
    assert len(rows) == len(jobs) == len(expected)
    by_message = {row.user_message: row for row in rows}
    assert set(by_message) == set(expected)
    for message, tokens in expected.items():
        row = by_message[message]
        if tokens is None:
            assert row.status == 499 and row.stream and row.input_tokens is None, message
        else:
            assert row.status == 200, (message, row.error)
            assert (row.input_tokens, row.output_tokens) == tokens, message
            assert row.total_tokens == sum(tokens)
