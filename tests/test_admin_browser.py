"""The original README's whole story, as a new admin lives it, in a real browser
(Debian's chromium, driven by Playwright) against the real server (`python app.py
serve`) and a real upstream on 127.0.0.1: create the admin account, a user, a key,
an api, a model and a prompt; stream an answer in the playground; call the proxy
with the openai SDK; find that call on the dashboard and in the request explorer.
No page may log a JavaScript error. `make screenshots` runs it with
SCREENSHOTS_DIR=docs/img to retake the README's screenshots; otherwise they go to a
temporary folder, so `make test` leaves the tree as it was."""

import os
import re
from pathlib import Path

import pytest

from promptproxy.collections import BY_NAME

from .servers import ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SETUP_LINK = re.compile(r"https?://\S+(/_/setup/[0-9a-f]+)")
ADMIN = ("admin@example.com", "correct horse battery staple")
TRANSLATOR = "Translate the user's message into English. Reply with the translation only."

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason=f"no browser at {CHROMIUM}: the browser tests need Debian's chromium "
                                        "(apt-get install chromium; .ci/run installs it)")]


@pytest.fixture
def browser_page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.shots = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
        page.shots = page.shots if page.shots.is_absolute() else ROOT / page.shots
        page.scratch = tmp_path
        page.errors = []
        page.on("console", lambda message: message.type == "error" and page.errors.append(
            f"{page.url}: {message.text}"))
        page.on("pageerror", lambda error: page.errors.append(f"{page.url}: {error}"))
        try:
            yield page
        finally:
            context.close()
            browser.close()


README_IMAGES = set(re.findall(r"\(docs/img/([\w.]+\.png)\)", (ROOT / "README.md").read_text()))


def shot(page, name):
    """A screenshot: the README's images where `make screenshots` asks, the others
    (and every one under `make test`) in the test's temporary folder."""
    page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring
    path = (page.shots if name in README_IMAGES else page.scratch) / name
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0


def open_table(page, base, table):
    page.goto(base + "/_/")
    menu = page.get_by_role("button", name="Menu")
    if menu.is_visible():  # a phone: the sidebar is folded
        menu.click()
    sidebar_link(page, BY_NAME[table].label).click()
    page.wait_for_url(f"**/_/{table}/")


def sidebar_link(page, name):
    return page.locator("#pp-nav a.nav-link").filter(
        has=page.locator("span", has_text=re.compile(f"^{re.escape(name)}$"))).first


def assert_no_page_scroll(page):
    """The page is no wider than the window; else name the elements that stick out."""
    wide = page.evaluate("""() => document.documentElement.scrollWidth <= window.innerWidth ? [] :
        Array.from(document.querySelectorAll("body *"))
             .filter(el => el.getBoundingClientRect().right > window.innerWidth + 0.5)
             .slice(0, 8).map(el => el.tagName + "#" + el.id + "." + el.className + " " +
                                    Math.round(el.getBoundingClientRect().right))""")
    assert wide == [], f"{page.url} scrolls sideways at {page.viewport_size['width']} px: {wide}"


def new_record(page, base, table):
    open_table(page, base, table)
    page.locator(f'a[href*="/_/{table}/new/"]').first.click()
    page.wait_for_url(f"**/_/{table}/new/**")


def save(page, expected):
    """Submit the form; the message names the record ("Created user Tom")."""
    page.locator('input[type="submit"][value="Save"]').click()
    page.wait_for_load_state("load")
    message = page.locator(".alert-success").first.inner_text()
    assert expected in message, page.content()[:2000]


def log_in(page, base):
    page.goto(base + "/_/login")
    page.fill("#email", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.get_by_role("button", name="Log in").click()
    page.locator("#pp-sidebar").wait_for()


def looks_like_an_id(text):
    return re.fullmatch(r"[a-z0-9]{15}", text.strip()) is not None


def create_admin(page, server):
    """A fresh server sends people to the link in its log; the link creates the
    admin, who lands on the dashboard, logged in."""
    page.shots.mkdir(parents=True, exist_ok=True)
    page.goto(server.url + "/_/")
    assert "set-up link" in page.content()
    page.goto(server.url + SETUP_LINK.search(server.log()).group(1))
    page.fill("#email", ADMIN[0])
    page.fill("#password", ADMIN[1])
    page.fill("#confirm", ADMIN[1])
    page.get_by_role("button", name="Create admin").click()
    page.wait_for_url("**/_/")
    page.locator("#pp-sidebar").wait_for()


def test_a_new_admin_walks_the_readme_story(browser_page, served, upstream):
    page = browser_page
    server = served()
    base = server.url
    create_admin(page, server)
    shot(page, "tables.png")

    # Tom, who will call the gateway.
    new_record(page, base, "users")
    page.fill("#name", "Tom")
    page.fill("#email", "tom@example.com")
    assert page.locator("label[for=name]").inner_text().strip().endswith("*")  # required, marked
    shot(page, "create_tom.png")
    save(page, "Created user Tom")

    # Tom's key, generated and shown once.
    new_record(page, base, "keys")
    page.select_option("#user", label="Tom")
    page.fill("#label", "Tom's laptop")
    page.check("#track")  # keep full bodies, to read them in the request explorer
    for group in ("access", "limits"):  # folded away until opened, as nothing is set there
        assert page.locator(f"details#group-{group}").get_attribute("open") is None
    shot(page, "create_key.png")
    save(page, "Created key Tom's laptop")
    key = page.locator("#revealed-key").input_value()
    assert key.startswith("pp-") and f"{base}/v1" in page.locator("#reveal").inner_text()
    shot(page, "create_api_key.png")

    # The upstream: a local OpenAI-compatible server, with a key of its own.
    new_record(page, base, "apis")
    page.fill("#name", "Local")
    page.fill("#base_url", upstream.base_url)
    page.fill("#api_key", "sk-local-upstream-key-123456")
    shot(page, "create_openai.png")
    save(page, "Created api Local")
    assert "sk-local-upstream-key-123456" not in page.content()

    # A model on that api, and the models table.
    new_record(page, base, "models")
    page.select_option("#api", label="Local")
    page.fill("#model", "gpt-4o-mini")
    page.fill("#name", "gpt-4o-mini")
    shot(page, "create_model.png")
    save(page, "Created model gpt-4o-mini")
    copies = page.locator(".pp-copy").evaluate_all("buttons => buttons.map(b => b.dataset.copy)")
    assert "gpt-4o-mini" in copies and any(looks_like_an_id(c) for c in copies)  # reference and id
    shot(page, "existing_model.png")

    # A stored prompt.
    new_record(page, base, "prompts")
    page.fill("#name", "translator")
    page.fill("#instructions", TRANSLATOR)
    shot(page, "prompt.png")
    save(page, "Created prompt translator")

    # The playground streams an answer through the proxy.
    page.goto(base + "/_/playground/")
    for dropdown in ("#pg-model", "#pg-prompt"):
        labels = page.locator(f"{dropdown} option").all_inner_texts()
        assert labels and not any(looks_like_an_id(label) for label in labels), labels
    page.select_option("#pg-model", label="gpt-4o-mini")
    page.select_option("#pg-prompt", label="translator")
    page.fill("#pg-input", "Ma voiture est en panne.")
    page.get_by_role("button", name="Send").click()
    page.locator("#pg-history").get_by_text("echo: Ma voiture est en panne.").wait_for()
    assert "gpt-4o-mini:translator" in page.content()
    shot(page, "playground.png")
    page.locator("button.pp-copy[data-copy-from='pg-curl']").click()  # the one copy script answers
    page.wait_for_function("""() => ["Copied", "Select and copy"].includes(
        document.querySelector("button.pp-copy[data-copy-from='pg-curl']").textContent)""")

    # The live log, open in another tab, shows the next call as it finishes.
    live = page.context.new_page()
    live.on("pageerror", lambda error: page.errors.append(f"live log: {error}"))
    live.goto(base + "/_/live/")
    live.locator("#live-state", has_text="Live").wait_for()

    # A client calls the proxy with the official SDK and Tom's key.
    import openai

    client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(model="gpt-4o-mini:translator",
                                           messages=[{"role": "user", "content": "Hola mi nombre es Brian"}])
    assert reply.choices[0].message.content == "echo: Hola mi nombre es Brian"
    sent = upstream.requests[-1]
    assert sent.json["messages"][0] == {"role": "system", "content": TRANSLATOR}
    assert sent.headers["Authorization"] == "Bearer sk-local-upstream-key-123456"
    call = live.locator("#live-rows tr", has_text="Tom")
    call.wait_for()
    assert "gpt-4o-mini" in call.inner_text() and "translator" in call.inner_text()
    live.close()

    # The dashboard counts both calls (rows are written in batches: reload until they are).
    page.goto(base + "/_/")
    page.wait_for_function("() => document.querySelector('#total-requests') && "
                           "document.querySelector('#total-requests').textContent.trim() === '2'",
                           polling=250)
    dashboard = page.locator("body").inner_text()
    assert "Tom" in dashboard and "translator" in dashboard  # names, not ids
    assert_no_page_scroll(page)
    shot(page, "dashboard.png")

    # The sidebar: the dashboard, each collection with its count, then the playground
    # (Tom and the playground's own user and key, so 2 of each).
    page.reload()
    nav = page.locator("#pp-nav").inner_text()
    assert re.search(r"^Dashboard\s+Collections\s+Users\s+2\s+Keys\s+2\s+APIs\s+1\s+Models\s+1\s+"
                     r"Prompts\s+1\s+Prompt versions\s+1\s+Requests\s+2\s+Feedback\s+0\s+Playground\s", nav, re.I), nav

    # The request explorer: filter to Tom, open the SDK call, read it.
    open_table(page, base, "requests")
    rows = page.locator("table.model-list tbody tr")
    rows.filter(has_text="Tom").first.wait_for()
    assert "translator" in rows.filter(has_text="Tom").first.inner_text()  # the prompt by name

    # The playground's call was made with a key that keeps no bodies: its details say why.
    rows.filter(has_text="Playground").first.locator('a[title="View Record"]').click()
    page.wait_for_url("**/_/requests/details/**")
    assert "Bodies are stored only for keys with Track on" in page.locator("body").inner_text()

    open_table(page, base, "requests")
    rows.filter(has_text="Tom").first.locator('a[title="View Record"]').click()
    page.wait_for_url("**/_/requests/details/**")
    details = page.locator("body").inner_text()
    assert "gpt-4o-mini:translator" in details and "chat/completions" in details
    shot(page, "request_details.png")

    # Test connection lists the upstream's models, marking the one already added.
    open_table(page, base, "apis")
    page.locator('a[title="Test connection"]').first.click()
    page.wait_for_url("**/_/connection/**")
    assert "gpt-4o-mini" in page.locator("body").inner_text()

    # Every other page an admin meets: each table, an edit form, the dashboard's other ranges.
    for table in ("users", "keys", "apis", "models", "prompts", "requests"):
        open_table(page, base, table)
    open_table(page, base, "models")
    page.locator('a[title="Edit Record"]').first.click()
    page.wait_for_url("**/_/models/edit/**")
    page.goto(base + "/_/")
    for label in ("7 d", "30 d"):
        page.get_by_role("button", name=label).click()
        page.locator("#total-requests").wait_for()

    # On a phone (390 px) the page never scrolls sideways; the sidebar folds behind Menu.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(base + "/_/")
    page.wait_for_function("() => document.querySelector('#total-requests').textContent.trim() === '2'")
    assert not sidebar_link(page, "Users").is_visible()
    assert_no_page_scroll(page)
    shot(page, "phone_dashboard.png")
    page.get_by_role("button", name="Menu").click()
    sidebar_link(page, "Users").wait_for(state="visible")
    shot(page, "phone_menu.png")
    for table in ("users", "keys", "apis", "models", "prompts", "requests"):
        open_table(page, base, table)
        assert page.locator("table.model-list tbody tr").first.is_visible()
        assert_no_page_scroll(page)
        shot(page, f"phone_{table}.png")
    page.set_viewport_size({"width": 1280, "height": 800})

    # Two more logins: the playground keeps using the admin's one key.
    for _ in range(2):
        page.get_by_role("button", name="Log out").click()
        page.wait_for_url("**/_/login**")
        log_in(page, base)
        page.goto(base + "/_/playground/")
        page.locator("#pg-model").wait_for()
    open_table(page, base, "keys")
    assert page.locator("table.model-list tbody tr").filter(has_text="Playground:").count() == 1

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/_/login**")

    assert page.errors == []


class Rest:
    """The REST API as the admin's scripts use it, with a superuser token."""

    def __init__(self, base):
        import requests

        self.base, self.session = base, requests.Session()
        login = self.session.post(base + "/api/collections/_superusers/auth-with-password", timeout=10,
                                  json={"identity": ADMIN[0], "password": ADMIN[1]})
        assert login.status_code == 200, login.text
        self.session.headers["Authorization"] = login.json()["token"]

    def create(self, collection, **data):
        response = self.session.post(f"{self.base}/api/collections/{collection}/records", json=data, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def update(self, collection, record_id, **data):
        response = self.session.patch(f"{self.base}/api/collections/{collection}/records/{record_id}", json=data,
                                      timeout=10)
        assert response.status_code == 200, response.text
        return response.json()


PIRATE = ["Talk like a pirate.", "Talk like a pirate captain of the {{ship}}.",
          "Talk like a <b>pirate</b> admiral & keep it short."]


def press(page, button, message):
    """Click a button of the prompt's page; the message says what changed."""
    button.click()
    page.wait_for_load_state("load")
    assert page.locator(".alert").first.inner_text().strip().lstrip("×").strip() == message


def test_an_admin_promotes_rolls_back_and_reads_a_diff(browser_page, served, upstream):
    """A prompt's versions in the admin, with what the upstream receives after each
    move of a label, and the playground pinning a version and filling a variable."""
    import openai

    page = browser_page
    server = served()
    base = server.url
    create_admin(page, server)
    rest = Rest(base)
    tom = rest.create("users", name="Tom")
    key = rest.create("keys", user=tom["id"], label="laptop")["key"]
    api = rest.create("apis", name="Local", base_url=upstream.base_url)
    rest.create("models", api=api["id"], model="gpt-4o-mini", name="gpt-4o-mini")
    pirate = rest.create("prompts", name="pirate", instructions=PIRATE[0], variables={"ship": "Black Pearl"})
    rest.update("prompts", pirate["id"], instructions=PIRATE[1], note="A captain, of any ship.")
    rest.update("prompts", pirate["id"], instructions=PIRATE[2], note="Promoted to admiral.")
    client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)

    def served_instructions(score=None):
        """What the upstream received in front of a call to gpt-4o-mini:pirate; the
        caller's feedback on the call, with a score."""
        call = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini:pirate", messages=[{"role": "user", "content": "Ahoy"}])
        if score is not None:
            client.post("/feedback", cast_to=object,
                        body={"request_id": call.headers["x-promptproxy-request-id"], "score": score})
        return upstream.requests[-1].json["messages"][0]["content"]

    open_table(page, base, "prompts")
    page.locator("table.model-list tbody tr", has_text="pirate").locator('a[title="View Record"]').click()
    page.wait_for_url("**/_/prompts/details/**")
    versions = page.locator("#prompt-versions tbody tr")
    assert versions.evaluate_all("rows => rows.map(r => r.dataset.version)") == ["3", "2", "1"]
    assert "Promoted to admiral." in versions.first.inner_text() and ADMIN[0] in versions.first.inner_text()
    assert served_instructions() == PIRATE[2]  # no label yet: the latest

    def version(number):
        return page.locator(f'#prompt-versions tr[data-version="{number}"]')

    press(page, version(1).locator("button.pp-promote"), "The label production is now on version 1 of pirate.")
    assert served_instructions(score=0.5) == PIRATE[0]
    press(page, version(3).locator("button.pp-promote"),
          "The label production moved from version 1 to version 3 of pirate.")
    assert served_instructions(score=1) == PIRATE[2]
    assert version(3).locator(".pp-labels").inner_text().strip() == "production"

    press(page, page.get_by_role("button", name="Roll back production to version 1"),
          "Rolled back the label production of pirate from version 3 to version 1.")
    assert served_instructions() == PIRATE[0]
    assert version(1).locator(".pp-labels").inner_text().strip() == "production"

    version(2).locator("input[name=label]").fill("staging")
    press(page, version(2).get_by_role("button", name="Set label"), "The label staging is now on version 2 of pirate.")

    # The diff between versions 1 and 3: the markup in the prompt is shown as text.
    page.select_option("#diff-old", "1")
    page.select_option("#diff-new", "3")
    page.get_by_role("button", name="Show the differences").click()
    page.wait_for_url("**old=1&new=3**")
    assert page.locator("#diff .pp-diff-del").all_inner_texts() == ["-" + PIRATE[0]]
    assert page.locator("#diff .pp-diff-add").all_inner_texts() == ["+" + PIRATE[2]]
    assert page.locator("#diff b").count() == 0
    assert_no_page_scroll(page)
    shot(page, "prompt_versions.png")
    page.set_viewport_size({"width": 390, "height": 844})  # on a phone, only the wide tables scroll
    assert_no_page_scroll(page)
    page.set_viewport_size({"width": 1280, "height": 800})

    # The playground pins the staging version and fills its {{ship}}.
    page.goto(base + "/_/playground/")
    page.select_option("#pg-model", label="gpt-4o-mini")
    page.select_option("#pg-prompt", label="pirate")
    assert page.locator("#pg-version option").all_inner_texts() == [
        "(as served)", "production (version 1)", "staging (version 2)",
        "version 3", "version 2", "version 1"]
    page.select_option("#pg-version", "staging")
    ship = page.locator('#pg-variables input[data-variable="ship"]')
    assert ship.get_attribute("placeholder") == "default: Black Pearl"
    ship.fill("Flying Dutchman")
    assert page.locator("#pg-ref").inner_text() == "gpt-4o-mini:pirate@staging"
    assert '"prompt_variables": {"ship": "Flying Dutchman"}' in page.locator("#pg-curl").inner_text()
    assert 'extra_body={"prompt_variables": {"ship": "Flying Dutchman"}}' in page.locator("#pg-python").inner_text()
    page.fill("#pg-input", "Ahoy")
    page.get_by_role("button", name="Send").click()
    page.locator("#pg-history").get_by_text("echo: Ahoy").wait_for()
    sent = upstream.requests[-1].json
    assert sent["messages"][0]["content"] == "Talk like a pirate captain of the Flying Dutchman."
    assert "prompt_variables" not in sent
    assert "version=staging" in page.url

    assert page.errors == []
