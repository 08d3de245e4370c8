"""What lands in pb_data: schema upgrades that keep rows, and no secret in clear."""


import pytest

from promptproxy import config, create_app
from promptproxy.collections import BY_NAME
from promptproxy.data.collection import Collection
from promptproxy.data.db import db, open_database
from promptproxy.data.fields import LongText, Text
from promptproxy.services import services

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, csrf_token, make_admin

UPSTREAM_KEY = "sk-proj-UPSTREAMsecret0123456789abcdef"


def test_adding_fields_to_a_declaration_keeps_existing_rows(data_dir):
    # An older PromptProxy whose prompts had only a name and instructions.
    old_prompts = Collection("prompts", Text("name", unique=True), LongText("instructions"))
    old_users = Collection("users", Text("name"))
    data_dir.mkdir(parents=True)
    open_database(config.from_environ({"DATA_DIR": str(data_dir)}))
    db.create_tables([old_prompts.model, old_users.model])  # as it did, before numbered migrations
    with db.connection_context():
        old_prompts.model.create(id="promptid0000001", name="translator", instructions="Translate.")
        old_users.model.create(id="userid000000001", name="Tom")
    db.close()

    app = create_app({"DATA_DIR": str(data_dir)})  # the restart with today's declarations
    with db.connection_context():
        columns = {column.name for column in db.get_columns("prompts")}
    assert {"tools", "description", "active"} <= columns
    client = app.test_client()
    make_admin()
    token = csrf_token(client, "/_/login")
    client.post("/_/login", data={"csrf_token": token, "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    listing = client.get("/_/prompts/").get_data(as_text=True)
    assert "translator" in listing
    with db.connection_context():
        prompt = BY_NAME["prompts"].model.get_by_id("promptid0000001")
        user = BY_NAME["users"].model.get_by_id("userid000000001")
    assert (prompt.name, prompt.instructions, prompt.tools) == ("translator", "Translate.", None)
    assert user.name == "Tom" and user.email is None
    # The new columns are usable straight away, on old rows too.
    edit = f"/_/prompts/edit/?id={prompt.id}"
    client.post(edit, data={"csrf_token": csrf_token(client, edit), "name": "translator",
                            "instructions": "Translate.", "tools": "[]", "active": "y"})
    with db.connection_context():
        assert BY_NAME["prompts"].model.get_by_id(prompt.id).tools == []

    # A second restart finds nothing to add and changes nothing.
    create_app({"DATA_DIR": str(data_dir)})
    with db.connection_context():
        assert BY_NAME["prompts"].model.select().count() == 1


def test_no_secret_is_stored_in_clear(app, api, data_dir, database_url):
    user = api.create("users", name="Tom")
    gateway_key = api.create("keys", user=user["id"])["key"]
    api.create("apis", name="OpenAI", base_url="https://api.openai.com/v1", api_key=UPSTREAM_KEY)
    if database_url:  # every row of every table, as text
        with db.connection_context():
            raw = "\n".join(str(row) for table in db.get_tables()
                            for row in db.execute_sql(f'SELECT * FROM "{table}"')).encode()
    else:  # the file's bytes, free pages and WAL included
        db.close()
        raw = b"".join(path.read_bytes() for path in data_dir.glob("data.db*"))
    assert raw  # the database (and its WAL) were read
    for secret in (UPSTREAM_KEY, gateway_key, gateway_key[10:]):
        assert secret.encode() not in raw
    assert b"sk-proj" not in raw


@pytest.mark.sqlite
def test_databases_are_private_to_the_servers_user(data_dir):
    import os

    files = [data_dir / name for name in ("data.db", "data.db-wal", "data.db-shm",
                                            "limits.db", "limits.db-wal", "limits.db-shm")]

    def modes():
        with db.connection_context():  # the -wal and -shm files exist while a connection is open
            BY_NAME["users"].model.select().count()
            return {path.name: path.stat().st_mode & 0o777 for path in files}

    old_umask = os.umask(0o022)  # a usual umask, which would make new files 0644
    try:
        app = create_app({"DATA_DIR": str(data_dir)})
        assert modes() == {path.name: 0o600 for path in files}
        services(app).recorder.stop()

        for path in files:  # files an earlier version left readable are made private on start
            if path.exists():
                path.chmod(0o644)
        app = create_app({"DATA_DIR": str(data_dir)})
        assert modes() == {path.name: 0o600 for path in files}
        services(app).recorder.stop()
    finally:
        os.umask(old_umask)
        db.close()
