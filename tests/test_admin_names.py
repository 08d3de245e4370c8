"""The admin names records where it refers to them, keeps ids one click away, and
its forms and messages say what they are about: grouped fields, required marks,
messages naming the record, the field and the value."""

import html
import re

from promptproxy.collections import BY_NAME
from promptproxy.data.db import db

from .test_admin_collections import delete, submit


def call(gateway, model):
    reply = gateway.client().chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content


def test_requests_list_and_dashboard_show_names_not_ids(gateway, admin):
    unnamed = gateway.create("prompts", instructions="Answer like a sailor.\nKeep it short.")
    call(gateway, "gpt:pirate")
    call(gateway, f"gpt:{unnamed.id}")
    gateway.rows(2)

    listing = admin.get("/_/requests/").get_data(as_text=True)
    for collection, row, title in [("users", gateway.user, "Tom"), ("models", gateway.model, "gpt"),
                                   ("prompts", gateway.prompt, "pirate"),
                                   ("prompts", unnamed, "Answer like a sailor.")]:
        link = f'<a href="/_/{collection}/details/?id={row.id}" title="{row.id}">{title}</a>'
        assert link in listing, title
    assert f">{unnamed.id}<" not in listing  # its id is the link's title, not its text

    top = admin.get("/_/stats.json?range=24h").get_json()["breakdowns"]
    assert {e["name"] for e in top["prompt"]["top"]} == {"pirate", "Answer like a sailor."}
    assert {e["id"] for e in top["prompt"]["top"]} == {gateway.prompt.id, unnamed.id}
    assert [e["name"] for e in top["user"]["top"]] == ["Tom"]
    assert [e["name"] for e in top["model"]["top"]] == ["gpt"]
    assert [e["name"] for e in top["api"]["top"]] == ["Local"]


def test_relation_dropdowns_show_titles(gateway, admin):
    form = admin.get("/_/keys/new/").get_data(as_text=True)
    assert f'<option value="{gateway.user.id}">Tom</option>' in form
    assert re.search(rf'<option[^>]*value="{gateway.llama.id}"[^>]*>llama3:8b</option>', form)
    assert re.search(rf'<option[^>]*value="{gateway.prompt.id}"[^>]*>pirate</option>', form)


def copy_buttons(page):
    return [html.unescape(text) for text in re.findall(r'class="[^"]*pp-copy[^"]*" data-copy="([^"]*)"', page)]


def test_model_and_prompt_lists_have_copy_buttons_for_id_and_reference(gateway, admin):
    unnamed = gateway.create("models", api=gateway.api.id, model="o3")
    models = admin.get("/_/models/").get_data(as_text=True)
    buttons = copy_buttons(models)
    for row in (gateway.model, gateway.llama, unnamed):
        assert row.id in buttons
    assert "gpt" in buttons and "llama3:8b" in buttons  # the name a client sends
    assert buttons.count(unnamed.id) == 2  # no name: clients send its id
    assert "Reference" in models

    prompts = admin.get("/_/prompts/").get_data(as_text=True)
    assert {gateway.prompt.id, "pirate"} <= set(copy_buttons(prompts))
    assert "&lt;model&gt;:</span>" in prompts

    script = re.search(r'<script src="(/_/assets/copy\.js\?v=\w+)"', models).group(1)
    source = admin.get(script)
    assert source.status_code == 200
    assert b"navigator.clipboard.writeText" in source.data and b"execCommand" in source.data


def group(page, name):
    """The <details> (or basics <div>) of one form group, and whether it is open."""
    found = re.search(rf'<(?:details|div) class="pp-group[^"]*" id="group-{name}"([^>]*)>'
                      r'(.*?)(?=class="pp-group|class="form-group submit-row")', page, re.S)
    assert found, name
    return found.group(2), "open" in found.group(1)


def test_forms_are_grouped_with_required_marks(admin, gateway):
    page = admin.get("/_/users/new/").get_data(as_text=True)
    order = [page.index(f'id="group-{name}"') for name in ("basics", "access", "limits")]
    assert order == sorted(order)
    basics, _ = group(page, "basics")
    assert 'id="name"' in basics and 'id="email"' in basics and 'id="rpm"' not in basics
    access, opened = group(page, "access")
    assert 'id="apis"' in access and 'id="require_prompt"' in access and not opened
    limits, opened = group(page, "limits")
    assert all(f'id="{n}"' in limits for n in ("rpm", "tpm", "rpd", "concurrency")) and not opened
    assert "<summary" in page and "Access rules" in page and "Limits" in page
    name_input = re.search(r'<input[^>]*id="name"[^>]*>', page).group(0)
    assert "required" in name_input and 'aria-required="true"' in name_input
    assert re.search(r'for="name"[^>]*>Name\s*<strong class="text-danger">&#42;</strong>', page)
    assert 'id="required-note"' in page
    email_input = re.search(r'<input[^>]*id="email"[^>]*>', page).group(0)
    assert "required" not in email_input
    cancel = re.search(r'<a [^>]*id="cancel"[^>]*>', page).group(0)
    assert "btn-outline-secondary" in cancel and "btn-danger" not in cancel

    api_form = admin.get("/_/apis/new/").get_data(as_text=True)
    advanced, opened = group(api_form, "advanced")
    assert 'id="timeout"' in advanced and 'id="headers"' in advanced
    assert not opened  # the default timeout is not a value someone set


def test_groups_open_when_they_hold_a_value_or_an_error(admin, gateway):
    limited = gateway.create("users", name="Ann", rpm=10)
    page = admin.get(f"/_/users/edit/?id={limited.id}").get_data(as_text=True)
    assert group(page, "limits")[1] and not group(page, "access")[1]
    page = admin.get(f"/_/users/edit/?id={gateway.user.id}").get_data(as_text=True)
    assert not group(page, "limits")[1]

    page = submit(admin, "users", {"name": "Bob", "rpm": "lots"}).get_data(as_text=True)
    limits, opened = group(page, "limits")
    assert opened and "Must be a whole number." in limits
    assert not group(page, "access")[1]

    page = admin.get(f"/_/apis/edit/?id={gateway.api.id}").get_data(as_text=True)
    assert group(page, "advanced")[1]  # its timeout of 5 differs from the default


def alerts(page):
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", "", text)).replace("×", "").split())
            for text in re.findall(r'(?s)<div class="alert alert-\w+ alert-dismissable">(.*?)</div>', page)]


def test_messages_name_the_record(admin, gateway):
    page = submit(admin, "users", {"name": "Tom B", "active": "y"}).get_data(as_text=True)
    assert alerts(page) == ["Created user Tom B"]
    with db.connection_context():
        key = BY_NAME["keys"].model.get()
    page = submit(admin, "keys", {"user": gateway.user.id, "label": "sdk", "active": "y"},
                  record_id=key.id).get_data(as_text=True)
    assert alerts(page) == ["Saved key sdk"]
    unused = gateway.create("apis", name="OpenAI", base_url="https://api.openai.com/v1")
    page = delete(admin, "apis", unused.id).get_data(as_text=True)
    assert alerts(page) == ["Deleted api OpenAI"]


def test_a_duplicate_names_the_field_and_value_in_the_admin_and_rest(admin, gateway, api):
    page = submit(admin, "users", {"name": "Tim", "email": "tom@example.com"}).get_data(as_text=True)
    assert "A user with the email tom@example.com already exists." in page
    duplicate = api.post("/api/collections/users/records", json={"name": "Tim", "email": "tom@example.com"})
    assert duplicate.status_code == 400
    assert duplicate.json["data"]["email"] == {
        "code": "validation_not_unique", "message": "A user with the email tom@example.com already exists."}


def test_a_refused_delete_links_to_its_dependents(admin, gateway, api):
    gateway.create("users", name="Ann", models=[gateway.model.id])
    page = delete(admin, "apis", gateway.api.id).get_data(as_text=True)
    assert (f'Cannot delete api Local: still used by models (<a href="/_/models/details/?id={gateway.model.id}">'
            f'gpt</a>, <a href="/_/models/details/?id={gateway.llama.id}">llama3:8b</a>). '
            "Delete or change those first.") in page
    with db.connection_context():
        ann = BY_NAME["users"].model.get(BY_NAME["users"].model.name == "Ann")
    page = delete(admin, "models", gateway.model.id).get_data(as_text=True)
    assert f'still used by users (<a href="/_/users/details/?id={ann.id}">Ann</a>)' in page

    refused = api.delete(f"/api/collections/apis/records/{gateway.api.id}")
    assert refused.status_code == 400
    assert refused.json["message"] == ("Cannot delete api Local: still used by models (gpt, llama3:8b). "
                                       "Delete or change those first.")
