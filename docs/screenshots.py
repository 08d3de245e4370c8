"""Retake the README's screenshots from the real admin UI.

    python docs/screenshots.py [OUT_DIR]      # default: docs/img/

Starts `python app.py serve` on a free loopback port with a fresh temporary data
directory, reads the one-time set-up link from its log, and with Playwright
driving Debian's chromium walks the README's story: create the admin account,
then the user Tom, a key for Tom, the OpenAI api, the gpt-4o-mini model and the
"translator" prompt. The server is stopped at the end, whatever happens.

Importable too: `main(out_dir)` returns the paths of the PNGs it wrote. Run as a
script it uses port 8090 when that is free, so the key page shows the usual address.
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "img"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
SETUP_LINK = re.compile(r"https?://\S+/_/setup/[0-9a-f]+")

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct horse battery staple"
TRANSLATOR = ("You are a translator. Translate the user's message into English and reply with "
              "the translation only. If it is already English, reply with it unchanged.")

SHOTS = ["tables.png", "create_tom.png", "create_api_key.png", "create_openai.png",
         "existing_model.png", "prompt.png"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python app.py serve` in a subprocess, its log in a file."""

    def __init__(self, data_dir, log_path, port=0, python=sys.executable):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.command = [python, "app.py", "serve", "--http", f"127.0.0.1:{self.port}",
                        "--dir", str(data_dir)]
        self.process = None

    def __enter__(self):
        env = {k: v for k, v in os.environ.items() if k != "PROMPTPROXY_PUBLIC_URL"}
        self._log = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                            stdout=self._log, stderr=subprocess.STDOUT)
        except BaseException:
            self._log.close()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout=30):
        """Poll /api/health and the log until the server answers and has printed
        the set-up link; returns the link."""
        deadline = time.monotonic() + timeout
        healthy = False
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            if not healthy:
                try:
                    with urllib.request.urlopen(self.base + "/api/health", timeout=2) as response:
                        healthy = response.status == 200
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
            match = SETUP_LINK.search(self.log())
            if healthy and match:
                return match.group(0)
            time.sleep(0.1)
        raise RuntimeError(f"server not ready within {timeout}s:\n{self.log()}")


def expect_saved(page, what):
    """After Save, Flask-Admin lands on the list page with a success message."""
    flash = page.locator(".alert-success")
    try:
        flash.first.wait_for(timeout=10_000)
    except Exception:
        body = page.locator("body").inner_text()
        raise RuntimeError(f"saving {what} failed on {page.url}:\n{body[:2000]}") from None
    if "successfully" not in flash.first.inner_text():
        raise RuntimeError(f"unexpected message after saving {what}: {flash.first.inner_text()}")


def new_record(page, table):
    """Open a table from the home page and hit its "Create" link, as the README says."""
    page.goto(page.url.split("/_/")[0] + "/_/")
    page.locator("#tables").get_by_role("link", name=table, exact=True).click()
    page.wait_for_url(f"**/_/{table}/")
    page.locator(f'a[href*="/_/{table}/new/"]').first.click()
    page.wait_for_url(f"**/_/{table}/new/**")


def save(page, what):
    page.locator('input[type="submit"][value="Save"]').click()
    page.wait_for_load_state("load")
    expect_saved(page, what)


def walk(page, setup_link, out_dir, problems):
    def shot(name):
        page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring
        page.screenshot(path=str(out_dir / name), full_page=True)

    # 1. The admin account, through the one-time link from the log.
    page.goto(setup_link)
    page.get_by_role("heading", name="Create your admin account").wait_for()
    page.fill("#email", ADMIN_EMAIL)
    page.fill("#password", ADMIN_PASSWORD)
    page.fill("#confirm", ADMIN_PASSWORD)
    page.get_by_role("button", name="Create admin").click()
    page.wait_for_url("**/_/")
    page.locator("#tables").wait_for()
    shot("tables.png")

    # 2. Tom, who will call the gateway.
    new_record(page, "users")
    page.fill("#name", "Tom")
    page.fill("#email", "tom@example.com")
    page.fill("#notes", "Uses the translator from his phone.")
    shot("create_tom.png")
    save(page, "the user Tom")

    # 3. A key for Tom: left blank, so PromptProxy generates one and shows it once.
    new_record(page, "keys")
    page.select_option("#user", label="Tom")
    page.fill("#label", "Tom's phone")
    save(page, "Tom's key")
    revealed = page.locator("#reveal input")
    revealed.first.wait_for()
    key = revealed.first.input_value()
    if not key.startswith("pp-"):
        problems.append(f"revealed key looks wrong: {key!r}")
    shot("create_api_key.png")

    # 4. The upstream: OpenAI, with a dummy key.
    new_record(page, "apis")
    page.fill("#name", "OpenAI")
    page.fill("#base_url", "https://api.openai.com/v1")
    page.fill("#api_key", "sk-dummy-0000000000000000000000000000")
    shot("create_openai.png")
    save(page, "the OpenAI api")

    # 5. A model on that api, then the models table.
    new_record(page, "models")
    page.select_option("#api", label="OpenAI")
    page.fill("#model", "gpt-4o-mini")
    page.fill("#name", "gpt-4o-mini")
    page.fill("#description", "OpenAI's small, fast model.")
    save(page, "the gpt-4o-mini model")
    page.goto(page.url.split("/_/")[0] + "/_/models/")
    page.get_by_role("cell", name="gpt-4o-mini").first.wait_for()
    shot("existing_model.png")

    # 6. A stored system prompt.
    new_record(page, "prompts")
    page.fill("#name", "translator")
    page.fill("#instructions", TRANSLATOR)
    page.fill("#description", "Use it as model \"gpt-4o-mini:translator\".")
    shot("prompt.png")
    save(page, "the translator prompt")


def port_or_free(preferred):
    """`preferred` if nothing listens there (so the README shows the usual :8090), else any."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def main(out_dir=None, port=0):
    """Take the screenshots into `out_dir` (default docs/img/); `port` 0 means any free one.
    Returns the paths written. Raises if the UI or the server reported an error."""
    from playwright.sync_api import sync_playwright

    out_dir = Path(out_dir) if out_dir else DEFAULT_OUT
    out_dir.mkdir(parents=True, exist_ok=True)
    problems = []
    with tempfile.TemporaryDirectory(prefix="promptproxy-shots-") as tmp:
        with Server(Path(tmp) / "pb_data", Path(tmp) / "server.log", port=port) as server:
            setup_link = server.wait_ready()
            # `serve` prints the link with the address it was started on.
            if not setup_link.startswith(server.base + "/_/setup/"):
                problems.append(f"set-up link {setup_link} is not on {server.base}")
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                     args=CHROMIUM_ARGS)
                try:
                    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
                    context.set_default_timeout(15_000)
                    page = context.new_page()
                    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
                    # Failed resources show up as responses below (the browser's own
                    # /favicon.ico request, a 404 here, does not).
                    page.on("console", lambda msg: msg.type == "error"
                            and not msg.text.startswith("Failed to load resource")
                            and problems.append(f"console error on {page.url}: {msg.text}"))
                    page.on("response", lambda r: r.status >= 400 and problems.append(
                        f"{r.status} for {r.request.method} {r.url}"))
                    walk(page, setup_link, out_dir, problems)
                finally:
                    browser.close()
            problems += [f"server log: {line}" for line in server.log().splitlines()
                         if " ERROR " in line or line.startswith("Traceback")]
    if problems:
        raise RuntimeError("screenshots: the walk-through hit problems:\n" + "\n".join(problems))
    return [out_dir / name for name in SHOTS]


if __name__ == "__main__":
    for path in main(sys.argv[1] if len(sys.argv) > 1 else None, port=port_or_free(8090)):
        print(path)
