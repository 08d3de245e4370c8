"""Running PromptProxy as its users do, in its own process, for tests that need the
real server: the Dockerfile's command, `python app.py serve`, load and shutdown.
Every server started here is stopped, whatever happens in the test."""

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
REQUIREMENTS = ROOT / "requirements.txt"
VENV_BIN = Path(sys.executable).parent
STARTUP_TIMEOUT = 30


def dockerfile_instructions(path=DOCKERFILE):
    """[(INSTRUCTION, arguments)] with comments dropped and continuations joined."""
    instructions, current = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def instruction(name):
    found = [args for keyword, args in dockerfile_instructions() if keyword == name]
    assert found, f"no {name} in the Dockerfile"
    return found


def dockerfile_cmd():
    (cmd,) = instruction("CMD")
    return json.loads(cmd)  # exec form, or signals never reach gunicorn


def dockerfile_env():
    env = {}
    for args in instruction("ENV"):
        for pair in shlex.split(args):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def healthcheck_cmd():
    (check,) = instruction("HEALTHCHECK")
    _, _, command = check.partition("CMD ")
    return json.loads(command)


def runtime_venv():
    """A virtualenv made from requirements.txt alone, as the image's `pip install`
    makes it (the test suite's own venv has the dev requirements too, which bring
    packages the image lacks). Built once per version of the file and of Python,
    under the user's cache directory; a lock lets concurrent test runs share it."""
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "promptproxy-tests"
    venv = cache / f"runtime-venv-{key}"
    done = venv / ".complete"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"runtime-venv-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)  # a build cut short
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            result = subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                 "--disable-pip-version-check", "--no-input", "-r", str(REQUIREMENTS)],
                capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                pytest.fail(f"pip install -r requirements.txt failed:\n{result.stdout}{result.stderr}")
            done.touch()
    return venv


def rest(base, method, path, body=None, token=None):
    """One REST API call with the standard library: (status, parsed JSON)."""
    request = urllib.request.Request(base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": token} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# What every instance of one deployment shares: the database (PostgreSQL, when
# the suite runs on it) and its secrets.
SHARED_SETTINGS = ("PROMPTPROXY_DATABASE_URL", "PROMPTPROXY_SECRET_KEY", "PROMPTPROXY_ENCRYPTION_KEY")


def server_env(data_dir, bin_dir=VENV_BIN, **extra):
    """The environment of a server run from `bin_dir`'s virtualenv over `data_dir`."""
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("PROMPTPROXY_") or k in SHARED_SETTINGS)
           and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PROMPTPROXY_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


def app_py(*args, data_dir=None, input=None):
    """`python app.py ARGS [--dir DATA_DIR]` from the repository, as an operator runs it;
    the finished process (returncode, stdout, stderr)."""
    command = [sys.executable, "app.py", *args]
    if data_dir is not None:
        command += ["--dir", str(data_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTPROXY_")}
    return subprocess.run(command, cwd=ROOT, env=env, input=input, capture_output=True, text=True,
                          timeout=60, start_new_session=True)  # no terminal: getpass reads stdin


class Running:
    """A server subprocess with its output in a log file."""

    def __init__(self, process, log_path):
        self.process, self.log_path = process, log_path

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout=30):
        """SIGTERM, as Docker and systemd stop it; wait for a clean exit. Returns the log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=timeout)
        return self.log()

    def kill(self):
        """SIGKILL to the server and every process it started, as when its
        container or machine dies: nothing of it gets to clean up."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=15)

    def wait_healthy(self, base, timeout=STARTUP_TIMEOUT):
        """Poll the health URL until it answers 200, for at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(base + "/api/health", timeout=2) as response:
                    if response.status == 200:
                        return json.loads(response.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        pytest.fail(f"no healthy answer from {base} within {timeout}s:\n{self.log()}")

    def wait_for_log(self, pattern, count=1, timeout=STARTUP_TIMEOUT):
        """The matches of `pattern` once the log has at least `count` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(pattern.finditer(self.log()))
            if len(found) >= count:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"{pattern.pattern!r} not in the log {count} time(s):\n{self.log()}")


@contextlib.contextmanager
def running(command, env, log_path):
    """Start `command` from the repository root; always terminate and reap it."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            yield Running(process, Path(log_path))
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)



def instance_command(port, workers=None):
    """The Dockerfile's command (gunicorn, its gevent worker) bound to 127.0.0.1:`port`,
    with `workers` workers instead of the image's number when given."""
    command = [arg.replace("0.0.0.0:8090", f"127.0.0.1:{port}") for arg in dockerfile_cmd()]
    assert command != dockerfile_cmd(), "the CMD no longer binds 0.0.0.0:8090"
    if workers is not None:
        command[command.index("--workers") + 1] = str(workers)
    return command


def start_instance(stack, data_dir, log_path, workers=None, **env):
    """One PromptProxy instance as the image runs it, over its own data directory and
    the shared settings (see server_env), entered on `stack` so it is always stopped.
    Not waited for: start several, then `wait_healthy(server.url)` each."""
    port = free_port()
    server = stack.enter_context(running(instance_command(port, workers), server_env(data_dir, **env), log_path))
    server.url = f"http://127.0.0.1:{port}"
    return server
