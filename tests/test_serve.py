"""`python app.py serve` as a person meets it: quiet by default, one line when its
port is taken."""

import re
import socket
import subprocess
import sys
import urllib.request

from .servers import ROOT, free_port, running, server_env


def test_a_port_in_use_is_one_line_naming_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "app.py", "serve", "--http", f"127.0.0.1:{port}"],
                                cwd=ROOT, env=server_env(tmp_path / "pb_data"), capture_output=True,
                                text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    [line] = [line for line in output.splitlines() if "ERROR" in line]
    assert f"127.0.0.1:{port}" in line and "--http" in line


def request_static_and_stop(tmp_path, **env):
    port = free_port()
    command = [sys.executable, "app.py", "serve", "--http", f"127.0.0.1:{port}"]
    with running(command, server_env(tmp_path / "pb_data", **env), tmp_path / "serve.log") as server:
        base = f"http://127.0.0.1:{port}"
        server.wait_healthy(base)
        html = urllib.request.urlopen(base + "/_/login", timeout=10).read().decode()
        assets = re.findall(r'(?:src|href)="(/_/static/[^"]+)"', html)
        assert assets, "the login page loads its assets from /_/static/"
        for asset in assets:
            assert urllib.request.urlopen(base + asset, timeout=10).status == 200
        return server.stop(), assets


def test_serve_logs_no_line_per_request_by_default(tmp_path):
    log, assets = request_static_and_stop(tmp_path)
    assert "GET /_/login" not in log
    assert not any(asset in log for asset in assets)


def test_the_access_log_can_be_turned_on(tmp_path):
    log, assets = request_static_and_stop(tmp_path, PROMPTPROXY_ACCESS_LOG="1")
    assert "GET /_/login" in log
    assert all(asset in log for asset in assets)
