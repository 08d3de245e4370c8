"""A request's details page says why its bodies are empty: they are stored only for
keys with Track on, and it links to the key (or says it was deleted)."""

import html
import re

from promptproxy.collections import BY_NAME
from promptproxy.data import records
from promptproxy.data.db import db


def call(gateway, key):
    gateway.client(key).chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])


def note(admin, row):
    """The details page's note about missing bodies, as text, and the page."""
    page = admin.get(f"/_/requests/details/?id={row.id}").get_data(as_text=True)
    match = re.search(r'id="no-bodies">(.*?)</div>', page, re.DOTALL)
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split()) if match else None
    return text, page


def test_details_of_an_untracked_call_say_why_and_link_to_the_key(admin, gateway):
    quiet_key = gateway.create("keys", user=gateway.user.id, label="quiet")
    call(gateway, gateway.key)  # Track on
    call(gateway, quiet_key)
    tracked, untracked = gateway.rows(2)
    quiet = BY_NAME["keys"].model
    with db.connection_context():
        quiet_row = quiet.get(quiet.label == "quiet")
    assert untracked.key == quiet_row.id and untracked.request_body is None

    text, page = note(admin, untracked)
    assert text.startswith("No request or response body was stored for this call. "
                           "Bodies are stored only for keys with Track on.")
    assert "Turn it on for the key quiet to store the next calls' bodies." in text
    assert f'href="/_/keys/edit/?id={quiet_row.id}' in page

    assert note(admin, tracked)[0] is None  # a tracked call shows its bodies, with no note
    assert "echo: hi" in note(admin, tracked)[1]

    gateway.update("keys", quiet_row, track=True)
    assert "(it is on now, but was off for this call)" in note(admin, untracked)[0]


def test_details_say_when_the_calls_key_was_deleted(admin, gateway):
    gone = gateway.create("keys", user=gateway.user.id, label="gone")
    call(gateway, gone)
    (row,) = gateway.rows(1)
    with db.connection_context():
        records.delete(BY_NAME["keys"], BY_NAME["keys"].model.get_by_id(row.key))

    text, page = note(admin, row)
    assert "Bodies are stored only for keys with Track on." in text
    assert f"The key this call used ({row.key}) has since been deleted." in text
    assert "/_/keys/edit/" not in page
