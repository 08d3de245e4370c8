"""A prompt's page in the admin: its versions with who saved each, when and why,
the labels on them, a diff between any two (escaped), buttons that promote a
version, set a label and roll back (what the upstream receives next is
asserted, through the official openai SDK), and its versions side by side, whose
figures are counted again here from the request rows and feedback. The
playground pins a version or label and fills the prompt's variables."""

import html
import re
import statistics

import openai

from promptproxy.collections import BY_NAME
from promptproxy.data import records
from promptproxy.data.db import db

from .conftest import ADMIN_EMAIL, csrf_token
from .test_admin_collections import submit
from .test_admin_playground import page_config, snippet
from .test_feedback import REQUEST_ID, give
from .test_prompt_versions import HI, served_instructions, versions_of


def details(admin, prompt, **args):
    query = "".join(f"&{name}={value}" for name, value in args.items())
    response = admin.get(f"/_/prompts/details/?id={prompt.id}{query}")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def section(page, element_id):
    """The HTML of the element with this id, up to its closing tag."""
    start = page.index(f'id="{element_id}"')
    tag = page.rfind("<", 0, start)
    name = re.match(r"<(\w+)", page[tag:]).group(1)
    return page[tag:page.index(f"</{name}>", start) + len(name) + 3]


def field_html(page, name):
    """One input of a form, with its messages."""
    start = page.index(f'<label for="{name}"')
    return page[start:page.index('<div class="form-group', start)]


def text(fragment):
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def table_rows(page, table_id, key):
    """{the row's data-<key>: {cell class or data-figure: text}} of a table on the page."""
    rows = {}
    for value, body in re.findall(rf'<tr data-{key}="([^"]*)">(.*?)</tr>', section(page, table_id), re.DOTALL):
        cells = re.findall(r'<td[^>]*?(?:class="(pp-[\w-]+)"|data-figure="(\w+)")[^>]*>(.*?)</td>', body, re.DOTALL)
        rows[value] = {klass or figure: text(content) for klass, figure, content in cells}
    return rows


def messages(page):
    """The flashed messages, as (category, text)."""
    return [(category, text(body)) for category, body in re.findall(
        r'<div class="alert alert-(\w+) alert-dismissable">\s*<button[^>]*>[^<]*</button>(.*?)</div>', page, re.DOTALL)]


def press(admin, prompt, action, **form):
    """Post one of the page's forms as its button does, with the page's CSRF token;
    the page it lands on."""
    token = csrf_token(admin, f"/_/prompts/details/?id={prompt.id}")
    response = admin.post(f"/_/prompts/{action}/", data={"csrf_token": token, **form}, follow_redirects=True)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def version_id(prompt, number):
    return next(v.id for v in versions_of(prompt) if v.version == number)


def save(prompt, by=None, note=None, **data):
    with db.connection_context():
        return records.save(BY_NAME["prompts"], data, row=prompt, by=by, note=note)[0]


def test_the_page_lists_versions_with_who_when_and_note_and_where_each_label_is(gateway, admin):
    pirate = gateway.prompt
    page = submit(admin, "prompts", {"name": "pirate", "instructions": "Talk like a pirate captain.",
                                     "active": "y", "note": "Promoted him."}, record_id=pirate.id)
    assert messages(page.get_data(as_text=True)) == [("success", "Saved prompt pirate")]
    save(pirate, by="ann@example.com", note="<b>Bolder</b>, & louder.", instructions="TALK LIKE A PIRATE.")
    submit(admin, "prompts", {"name": "pirate", "instructions": "TALK LIKE A PIRATE.", "active": "y",
                              "description": "Only the description.", "note": "Makes no version."},
           record_id=pirate.id)
    with db.connection_context():
        records.promote(versions_of(pirate)[1], "staging")

    page = details(admin, pirate)
    history = versions_of(pirate)
    assert [v.version for v in history] == [1, 2, 3]
    rows = table_rows(page, "prompt-versions", "version")
    assert list(rows) == ["3", "2", "1"]  # newest first
    assert {number: (row["pp-note"], row["pp-saved-by"], row["pp-labels"]) for number, row in rows.items()} == {
        "3": ("<b>Bolder</b>, & louder.", "ann@example.com", ""),
        "2": ("Promoted him.", ADMIN_EMAIL, "staging"),
        "1": ("", "", "")}  # made with the prompt, by the gateway fixture's records.save
    assert "&lt;b&gt;Bolder&lt;/b&gt;, &amp; louder." in page
    for version in history:
        assert version.created.strftime("%Y-%m-%d %H:%M UTC") in section(page, "prompt-versions")
    assert text(section(page, "served")).startswith(
        "A call to model:pirate that names no version is served version 3, the latest")
    labels = table_rows(page, "labels", "label")
    assert list(labels) == ["production", "staging"]
    assert "none: the latest version serves" in text(section(page, "labels"))
    assert "version 2" in text(re.search(r'data-label="staging">(.*?)</tr>', page, re.DOTALL).group(1))
    assert served_instructions(gateway, "gpt:pirate@staging") == "Talk like a pirate captain."

    with db.connection_context():
        for number in (1, 3):
            records.save(BY_NAME["prompt_versions"], {"weight": number * 10}, row=history[number - 1])
    assert text(section(details(admin, pirate), "served")).startswith(
        "A call to model:pirate that names no version is served split by weight between version 1 (weight 10), "
        "version 3 (weight 30).")


def test_the_note_is_checked_like_the_fields_beside_it(gateway, admin, api):
    pirate = gateway.prompt
    page = submit(admin, "prompts", {"name": "pirate", "instructions": "Changed.", "active": "y",
                                     "note": "nul \x00 inside"}, record_id=pirate.id).get_data(as_text=True)
    assert "<li>Must not contain NUL characters.</li>" in field_html(page, "note")
    assert [v.version for v in versions_of(pirate)] == [1]
    page = submit(admin, "prompts", {"name": "pirate", "instructions": "Changed.", "active": "y",
                                     "note": "x" * 501}, record_id=pirate.id).get_data(as_text=True)
    assert "<li>Field cannot be longer than 500 characters.</li>" in field_html(page, "note")
    assert [v.version for v in versions_of(pirate)] == [1]

    # The REST API's note is checked by the same rule (records.save): a 400, not a failed insert.
    response = api.patch(f"/api/collections/prompts/records/{pirate.id}",
                         json={"instructions": "Changed.", "note": "nul \x00 inside"})
    assert response.status_code == 400
    assert response.json["data"]["note"]["message"] == "Must not contain NUL characters."
    assert [v.version for v in versions_of(pirate)] == [1]


def test_the_diff_between_any_two_versions_is_escaped(gateway, admin):
    pirate = gateway.prompt
    save(pirate, instructions="Talk like a pirate.\nKeep it short.")
    save(pirate, instructions="<script>alert('pwned')</script> & talk like a pirate.\nKeep it short.")
    tools = [{"type": "function", "function": {"name": "<img src=x onerror=alert(1)>"}}]
    save(pirate, tools=tools)

    page = details(admin, pirate)  # by default: the latest against the one before (nothing is in production)
    diff = section(page, "diff")
    assert "<script>" not in diff and "<img" not in diff
    assert "&lt;img src=x onerror=alert(1)&gt;" in diff
    lines = re.findall(r'<span class="pp-diff-(\w+)">(.*?)</span>', diff)
    assert [(kind, html.unescape(line)) for kind, line in lines][:3] == [
        ("head", "--- version 3: Tools"), ("head", "+++ version 4: Tools"), ("hunk", "@@ -0,0 +1,8 @@")]

    page = details(admin, pirate, old=2, new=3)
    lines = [(kind, html.unescape(line)) for kind, line in
             re.findall(r'<span class="pp-diff-(\w+)">(.*?)</span>', section(page, "diff"))]
    assert lines == [
        ("head", "--- version 2: Instructions"), ("head", "+++ version 3: Instructions"), ("hunk", "@@ -1,2 +1,2 @@"),
        ("del", "-Talk like a pirate."), ("add", "+<script>alert('pwned')</script> & talk like a pirate."),
        ("same", " Keep it short.")]
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; &amp; talk like a pirate." in page
    assert "<script>alert(" not in page
    assert re.search(r'<option value="2" selected>', section(page, "diff-old"))
    assert re.search(r'<option value="3" selected>', section(page, "diff-new"))

    assert text(section(details(admin, pirate, old=1, new=1), "diff")) == \
        "Pick two different versions to see what changed between them."
    save(pirate, instructions="Talk like a pirate.\nKeep it short.", tools=None)  # version 5, as version 2
    assert text(section(details(admin, pirate, old=2, new=5), "diff")) == "Versions 2 and 5 have the same content."
    # Arguments that name no version fall back to the default pair, never an error page.
    assert section(details(admin, pirate, old="nine", new=99), "diff") == section(details(admin, pirate), "diff")


def test_promote_and_roll_back_through_the_buttons(gateway, admin):
    pirate = gateway.prompt
    save(pirate, by=ADMIN_EMAIL, instructions="Talk like a pirate captain.")
    page = press(admin, pirate, "promote", version=version_id(pirate, 1))
    assert messages(page) == [("success", "The label production is now on version 1 of pirate.")]
    assert table_rows(page, "prompt-versions", "version")["1"]["pp-labels"] == "production"
    assert served_instructions(gateway) == "Talk like a pirate."

    save(pirate, instructions="Talk like a pirate admiral.")  # version 3 waits for production
    assert served_instructions(gateway) == "Talk like a pirate."
    page = press(admin, pirate, "promote", version=version_id(pirate, 3))
    assert messages(page) == [("success", "The label production moved from version 1 to version 3 of pirate.")]
    assert served_instructions(gateway) == "Talk like a pirate admiral."
    assert "Roll back production to version 1" in page  # where it was before, not version 2
    page = press(admin, pirate, "promote", version=version_id(pirate, 3))
    assert messages(page) == [("info", "The label production was already on version 3 of pirate.")]

    page = press(admin, pirate, "rollback", id=pirate.id, label="production")
    assert messages(page) == [("success", "Rolled back the label production of pirate from version 3 to version 1.")]
    assert served_instructions(gateway) == "Talk like a pirate."
    assert [v.labels for v in versions_of(pirate)] == [["production"], [], []]
    assert "no earlier version to roll back to" in text(section(page, "labels"))
    page = press(admin, pirate, "rollback", id=pirate.id, label="production")  # as a stale page would
    assert messages(page) == [("danger", "Could not roll back: The label 'production' is on version 1, the first "
                                         "one: there is no earlier version to roll back to.")]
    assert [row.prompt_version for row in gateway.rows(4)] == [1, 1, 3, 1]


def test_set_any_label_through_the_button(gateway, admin):
    pirate = gateway.prompt
    save(pirate, instructions="Talk like a pirate captain.")
    page = press(admin, pirate, "promote", version=version_id(pirate, 2), label=" staging ")
    assert messages(page) == [("success", "The label staging is now on version 2 of pirate.")]
    assert served_instructions(gateway, "gpt:pirate@staging") == "Talk like a pirate captain."
    assert served_instructions(gateway) == "Talk like a pirate captain."  # the latest: production is on none
    page = press(admin, pirate, "promote", version=version_id(pirate, 1), label="staging")
    assert messages(page) == [("success", "The label staging moved from version 2 to version 1 of pirate.")]
    assert served_instructions(gateway, "gpt:pirate@staging") == "Talk like a pirate."

    for label, problem in (("not a label!", "'not a label!' is not a label"), ("42", "'42' is not a label"),
                           ("x" * 41, "at most 40 characters")):
        page = press(admin, pirate, "promote", version=version_id(pirate, 2), label=label)
        assert [category for category, _ in messages(page)] == ["danger"]
        assert problem in messages(page)[0][1]
    assert [v.labels for v in versions_of(pirate)] == [["staging"], []]

    page = press(admin, pirate, "promote", version="no-such-version")
    assert messages(page) == [("danger", "That version no longer exists.")]
    page = press(admin, pirate, "rollback", id="no-such-prompt")
    assert messages(page) == [("danger", "That prompt no longer exists.")]


def test_the_buttons_need_the_csrf_token_and_a_login(gateway, admin, app):
    pirate = gateway.prompt
    one = version_id(pirate, 1)
    assert admin.post("/_/prompts/promote/", data={"version": one}).status_code == 400
    assert admin.post("/_/prompts/rollback/", data={"id": pirate.id}).status_code == 400
    stranger = app.test_client()  # not logged in, with the login page's token
    response = stranger.post("/_/prompts/promote/", data={"version": one,
                                                         "csrf_token": csrf_token(stranger, "/_/login")})
    assert response.status_code == 302 and "/_/login" in response.headers["Location"]
    assert versions_of(pirate)[0].labels == []


def test_the_comparison_equals_counts_from_the_rows(gateway, admin):
    pirate = gateway.prompt
    save(pirate, instructions="Talk like a pirate captain.")
    save(pirate, instructions="Talk like a pirate admiral.")
    client = gateway.client()
    for n in range(24):
        number = (1, 2, 2, 3)[n % 4]
        if n % 5 == 0:
            gateway.upstream.script(status=500)
        try:
            call = client.chat.completions.with_raw_response.create(
                model=f"gpt:pirate@{number}", messages=[{"role": "user", "content": "ahoy " * (n % 3 + 1)}])
        except openai.InternalServerError:
            continue
        if n % 3:
            give(client, call.headers[REQUEST_ID], (n % 4) / 4)
    rows = [row for row in gateway.rows(24) if row.prompt == pirate.id]
    with db.connection_context():
        scores = {f.request: f.score for f in BY_NAME["feedback"].model.select()}

    shown = table_rows(details(admin, pirate), "comparison", "version")
    assert list(shown) == ["1", "2", "3"]
    for number in (1, 2, 3):
        mine = [row for row in rows if row.prompt_version == number]
        latencies = sorted(row.latency_ms for row in mine)
        given = [scores[row.id] for row in mine if row.id in scores]
        assert shown[str(number)] == {
            "calls": str(len(mine)), "errors": str(sum(row.status >= 400 for row in mine)),
            "tokens": str(sum(row.total_tokens or 0 for row in mine)),
            "input_tokens": str(sum(row.input_tokens or 0 for row in mine)),
            "output_tokens": str(sum(row.output_tokens or 0 for row in mine)),
            "p50_latency_ms": f"{latencies[(len(latencies) - 1) // 2]} ms",
            "average_score": shown[str(number)]["average_score"], "scores": str(len(given))}
        assert abs(float(shown[str(number)]["average_score"]) - statistics.fmean(given)) <= 0.005 + 1e-9  # 2 places
    assert sum(int(row["calls"]) for row in shown.values()) == 24
    assert sum(int(row["errors"]) for row in shown.values()) == 5
    assert all(int(row["scores"]) and int(row["tokens"]) for row in shown.values())


def test_the_playground_pins_a_version_or_label_and_fills_variables(gateway, admin):
    pirate = gateway.prompt
    save(pirate, instructions="Talk like a pirate of the {{ship}}, {{mood}}.",
         variables={"ship": None, "mood": "cheerful"})
    with db.connection_context():
        records.promote(versions_of(pirate)[0], "production")

    page = admin.get("/_/playground/?model=gpt&prompt=pirate&version=2").get_data(as_text=True)
    config = page_config(page)
    assert config["version"] == "2"
    assert config["prompts"]["pirate"] == {
        "ref": "pirate", "title": "pirate", "versions": [2, 1], "labels": {"production": 1},
        "variables": {"ship": None, "mood": "cheerful"}}
    assert '"model": "gpt:pirate@2"' in snippet(page, "pg-curl")
    assert 'model="gpt:pirate@2"' in snippet(page, "pg-python")
    for asked in ("production", "9", "nope"):
        config = page_config(admin.get(f"/_/playground/?model=gpt&prompt=pirate&version={asked}")
                             .get_data(as_text=True))
        assert config["version"] == ("production" if asked == "production" else "")

    # What the page's script sends for version 2 with a ship: the proxy fills it in.
    playground = openai.OpenAI(base_url=gateway.url + "/v1", api_key=page_config(page)["key"], max_retries=0)
    playground.chat.completions.create(model="gpt:pirate@2", messages=HI,
                                       extra_body={"prompt_variables": {"ship": "Flying Dutchman"}})
    sent = gateway.upstream.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Talk like a pirate of the Flying Dutchman, cheerful."}
    assert "prompt_variables" not in sent and sent["messages"][1:] == HI
