"""Requests the HTTP server cannot read (headers over its limits, a request line
too long) are answered in the caller's JSON format by both servers: the
Dockerfile's gunicorn command and `python app.py serve`. Real sockets, real
servers; and importing the gunicorn worker class stays light."""

import json
import socket
import subprocess
import sys

import pytest

from .servers import ROOT, dockerfile_cmd, free_port, running, server_env

OPENAI, ANTHROPIC, POCKETBASE = "openai", "anthropic", "pocketbase"
PATHS = {"/v1/chat/completions": OPENAI, "/v1/messages": ANTHROPIC,
         "/api/collections/users/records": POCKETBASE, "/_/": OPENAI}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Both servers, started once for the module: {name: (base address, limits)}."""
    import contextlib

    tmp = tmp_path_factory.mktemp("http-errors")
    with contextlib.ExitStack() as stack:
        started = {}
        port = free_port()
        command = [arg.replace("0.0.0.0:8090", f"127.0.0.1:{port}") for arg in dockerfile_cmd()]
        # The gunicorn limits are the Dockerfile's own (16 KiB header lines).
        started["gunicorn"] = stack.enter_context(
            running(command, server_env(tmp / "gunicorn"), tmp / "gunicorn.log")), port, 16384
        port = free_port()
        command = [sys.executable, "app.py", "serve", "--http", f"127.0.0.1:{port}"]
        started["serve"] = stack.enter_context(
            running(command, server_env(tmp / "serve"), tmp / "serve.log")), port, 65536
        for server, port, _ in started.values():
            server.wait_healthy(f"http://127.0.0.1:{port}")
        yield {name: (port, field_limit) for name, (_, port, field_limit) in started.items()}
        for server, _, _ in started.values():
            assert "Traceback" not in server.stop(), server.log()


def exchange(port, head):
    """Send a request head on a fresh connection; (status, headers, body) of the
    answer, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def request(method, target, *headers):
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: 127.0.0.1", *headers,
             b"Content-Length: 0", b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def assert_error(body, shape, status):
    document = json.loads(body)
    if shape == ANTHROPIC:
        assert document["type"] == "error"
        assert set(document["error"]) == {"type", "message"}
        message = document["error"]["message"]
    elif shape == POCKETBASE:
        assert set(document) == {"status", "message", "data"}
        assert document["status"] == status and document["data"] == {}
        message = document["message"]
    else:
        assert set(document) == {"error"}
        assert set(document["error"]) == {"message", "type", "param", "code"}
        assert document["error"]["type"] == "invalid_request_error"
        message = document["error"]["message"]
    assert message and "Traceback" not in message
    return message


@pytest.mark.slow
@pytest.mark.parametrize("server", ["gunicorn", "serve"])
@pytest.mark.parametrize("path", PATHS)
def test_a_header_over_the_limit_is_a_431_in_the_callers_format(servers, server, path):
    port, field_limit = servers[server]
    huge = b"X-Huge: " + b"a" * (field_limit + 1000)
    status, headers, body = exchange(port, request("POST", path, huge))
    assert status == 431
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    message = assert_error(body, PATHS[path], 431)
    assert f"{field_limit} bytes" in message and "aaaa" not in message


@pytest.mark.slow
@pytest.mark.parametrize("server", ["gunicorn", "serve"])
def test_too_many_headers_is_a_431_in_the_callers_format(servers, server):
    port, _ = servers[server]
    many = [b"X-Header-%d: %d" % (n, n) for n in range(150)]
    status, headers, body = exchange(port, request("POST", "/v1/messages", *many))
    assert status == 431
    assert_error(body, ANTHROPIC, 431)


@pytest.mark.slow
@pytest.mark.parametrize("server", ["gunicorn", "serve"])
def test_a_request_line_over_the_limit_is_a_414_in_openai_format(servers, server):
    port, _ = servers[server]
    status, headers, body = exchange(port, request("GET", "/v1/models?q=" + "a" * 9000))
    assert status == 414
    assert headers["content-type"] == "application/json"
    assert "aaaa" not in assert_error(body, OPENAI, 414)


@pytest.mark.slow
@pytest.mark.parametrize("server", ["gunicorn", "serve"])
def test_headers_under_the_limit_reach_the_app_and_the_server_keeps_serving(servers, server):
    port, field_limit = servers[server]
    # Larger than gunicorn's default limit (8190), as real clients' tokens and cookies can be.
    large = b"X-Large: " + b"a" * (field_limit - 100)
    status, _, body = exchange(port, request("GET", "/api/health", large))
    assert status == 200
    assert json.loads(body)["code"] == 200


def test_importing_the_gunicorn_worker_class_leaves_the_app_unimported():
    """gunicorn's master imports the worker class before the worker patches the
    standard library for gevent: libraries imported then stay unpatched (requests
    and urllib3 break HTTPS upstreams, peewee's connections would be shared by all
    greenlets). The class must come without them."""
    script = ("import json, sys; from promptproxy.serving.worker import GeventWorker; "
              "print(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    imported = {name.split(".")[0] for name in json.loads(result.stdout)}
    assert "gunicorn" in imported
    assert not imported & {"requests", "urllib3", "peewee", "flask", "werkzeug", "cryptography"}
    loaded = {name for name in json.loads(result.stdout) if name.startswith("promptproxy.")}
    assert loaded == {"promptproxy.serving", "promptproxy.serving.worker", "promptproxy.serving.http_errors"}
