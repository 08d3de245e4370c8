"""Prompt versions as records: made by every save that changes a prompt's content,
from the REST API, the admin and the command line alike, with who saved them; read
only over REST but for their labels and weight; version 1 for prompts made before
versions existed."""

from promptproxy import create_app, stop
from promptproxy.collections import BY_NAME
from promptproxy.data import records
from promptproxy.data.db import db
from promptproxy.data.migrations import MIGRATIONS

from .conftest import ADMIN_EMAIL, csrf_token

VERSIONS = "/api/collections/prompt_versions/records"


def versions(api, prompt_id):
    listed = api.get(VERSIONS, query_string={"filter": f'prompt = "{prompt_id}"', "sort": "version"})
    assert listed.status_code == 200, listed.json
    return listed.json["items"]


def test_rest_saves_make_versions_with_who_saved_them_and_a_note(api):
    prompt = api.create("prompts", name="pirate", instructions="Talk like a pirate.", note="First words.")
    assert "note" not in prompt  # a save's note is the version's, not the prompt's
    changed = api.patch(f"/api/collections/prompts/records/{prompt['id']}",
                        json={"instructions": "Talk like a pirate captain.", "note": "Promoted the pirate."})
    assert changed.status_code == 200, changed.json
    assert api.patch(f"/api/collections/prompts/records/{prompt['id']}",
                     json={"description": "No new version for this."}).status_code == 200
    assert [(v["version"], v["instructions"], v["note"], v["saved_by"], v["labels"], v["weight"])
            for v in versions(api, prompt["id"])] == [
        (1, "Talk like a pirate.", "First words.", ADMIN_EMAIL, [], None),
        (2, "Talk like a pirate captain.", "Promoted the pirate.", ADMIN_EMAIL, [], None)]


def test_versions_are_read_only_over_rest_but_for_labels_and_weight(api):
    prompt = api.create("prompts", name="pirate", instructions="One.")
    api.patch(f"/api/collections/prompts/records/{prompt['id']}", json={"instructions": "Two."})
    first, second = versions(api, prompt["id"])

    created = api.post(VERSIONS, json={"prompt": prompt["id"], "instructions": "Sneaked in."})
    assert created.status_code == 403
    assert "created and deleted by PromptProxy only" in created.json["message"]
    assert api.delete(f"{VERSIONS}/{first['id']}").status_code == 403
    changed = api.patch(f"{VERSIONS}/{first['id']}", json={"instructions": "Rewritten history.", "version": 9})
    assert changed.status_code == 400
    assert changed.json["data"] == {name: {"code": "validation_read_only",
                                           "message": "Set by PromptProxy; cannot be changed."}
                                    for name in ("version", "instructions")}

    # A record sent back as it was read changes nothing it may not change.
    labelled = api.patch(f"{VERSIONS}/{first['id']}", json={**first, "labels": ["production"], "weight": 30})
    assert labelled.status_code == 200, labelled.json
    assert (labelled.json["labels"], labelled.json["weight"], labelled.json["instructions"]) == \
        (["production"], 30, "One.")
    moved = api.patch(f"{VERSIONS}/{second['id']}", json={"labels": "production, staging"})
    assert moved.json["labels"] == ["production", "staging"]
    assert [v["labels"] for v in versions(api, prompt["id"])] == [[], ["production", "staging"]]
    assert versions(api, prompt["id"])[1]["promoted"].keys() == {"production", "staging"}

    for bad in (["12"], ["no spaces"], [""], [7], "x" * 41):
        refused = api.patch(f"{VERSIONS}/{first['id']}", json={"labels": bad})
        assert refused.status_code == 400 and refused.json["data"]["labels"]["code"] == "validation_invalid_label"
    refused = api.patch(f"{VERSIONS}/{first['id']}", json={"weight": -1})
    assert refused.status_code == 400 and "weight" in refused.json["data"]


def test_prompt_variables_are_checked_when_saved(api):
    ok = api.create("prompts", name="letter", instructions="Dear {{name}}, {{tone}}.",
                    variables={"name": None, "tone": "kindly", "count": 3})
    assert ok["variables"] == {"name": None, "tone": "kindly", "count": 3}
    for variables, words in (({"user.email": "x"}, "built in"), ({"two words": "x"}, "not a variable name"),
                             ({"name": ["a"]}, "must be text, a number, or null"), (["name"], "JSON object")):
        refused = api.post("/api/collections/prompts/records",
                           json={"name": "bad", "instructions": "x", "variables": variables})
        assert refused.status_code == 400 and words in refused.json["data"]["variables"]["message"]


def test_admin_saves_record_the_admin(admin):
    created = admin.post("/_/prompts/new/", data={"csrf_token": csrf_token(admin, "/_/prompts/new/"),
                                                  "name": "pirate", "instructions": "Arr.", "active": "y"})
    assert created.status_code == 302
    model = BY_NAME["prompt_versions"].model
    with db.connection_context():
        (version,) = model.select()
    assert (version.version, version.instructions, version.saved_by) == (1, "Arr.", ADMIN_EMAIL)


def test_the_admin_edits_only_a_versions_labels_and_weight(admin):
    with db.connection_context():
        prompt, _ = records.save(BY_NAME["prompts"], {"name": "pirate", "instructions": "Arr."})
        records.save(BY_NAME["prompts"], {"instructions": "Arr, matey."}, row=prompt)
        model = BY_NAME["prompt_versions"].model
        first, second = model.select().order_by(model.version)
    records.promote(first, "staging")
    url = f"/_/prompt_versions/edit/?id={second.id}"
    page = admin.get(url).get_data(as_text=True)
    assert 'name="labels"' in page and 'name="weight"' in page and 'name="instructions"' not in page
    saved = admin.post(url, data={"csrf_token": csrf_token(admin, url), "labels": "production, staging",
                                  "weight": "10", "instructions": "Sneaked in."})
    assert saved.status_code == 302
    with db.connection_context():
        first, second = model.select().order_by(model.version)
    assert (first.labels, second.labels, second.weight, second.instructions) == \
        ([], ["production", "staging"], 10, "Arr, matey.")


def test_the_admin_offers_no_create_or_delete_for_versions(admin):
    assert admin.get("/_/prompt_versions/new/").status_code == 302  # Flask-Admin's way of refusing
    listed = admin.get("/_/prompt_versions/").get_data(as_text=True)
    assert "/_/prompt_versions/new/" not in listed


def test_prompts_made_before_versions_get_version_1(tmp_path, monkeypatch):
    """An install upgraded from before versions: its prompts as they are become
    version 1, and calls go on being served that content."""
    data_dir = tmp_path / "pb_data"
    app = create_app({"DATA_DIR": str(data_dir)})
    prompts, versions_model = BY_NAME["prompts"].model, BY_NAME["prompt_versions"].model
    tools = [{"type": "function", "function": {"name": "look"}}]
    with db.connection_context():
        records.save(BY_NAME["prompts"], {"name": "old", "instructions": "Old words.", "tools": tools})
        # back to the database as the previous release left it: no versions, one migration fewer
        db.drop_tables([versions_model])
        number = MIGRATIONS.index(next(m for m in MIGRATIONS if m.__name__ == "prompt_versions")) + 1
        db.execute_sql(f"DELETE FROM _migrations WHERE version >= {number}")
        old_id = prompts.get(prompts.name == "old").id
    stop(app)
    db.close()

    app = create_app({"DATA_DIR": str(data_dir)})
    try:
        with db.connection_context():
            (version,) = versions_model.select()
            assert (version.prompt, version.version, version.instructions, version.tools, version.labels) == \
                (old_id, 1, "Old words.", tools, [])
    finally:
        stop(app)
        db.close()

