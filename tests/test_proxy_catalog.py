"""The proxy's in-memory catalog: no database read per call, yet every admin edit
(a revoked key above all) reaches every worker within the catalog's TTL."""

import time

import openai
import pytest
import requests

from promptproxy.collections import BY_NAME
from promptproxy.config import DEFAULTS
from promptproxy.data import catalog as catalog_module
from promptproxy.data import records
from promptproxy.data.catalog import Catalog
from promptproxy.data.db import db

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_admin
from .servers import dockerfile_cmd


def test_default_ttl_keeps_edits_within_a_second():
    assert 0 < DEFAULTS["CATALOG_TTL"] <= 0.5


def test_snapshot_is_reused_within_the_ttl_and_refreshed_after(app, monkeypatch):
    now = [100.0]
    loads = []
    real_load = catalog_module.load
    monkeypatch.setattr(catalog_module, "load", lambda version: loads.append(version) or real_load(version))
    cat = Catalog(ttl=0.5, clock=lambda: now[0])
    with db.connection_context():
        user, _ = records.save(BY_NAME["users"], {"name": "Tom"})
        key, revealed = records.save(BY_NAME["keys"], {"user": user.id})
    digest = key.key

    assert cat.current().keys[digest].active and len(loads) == 1
    with db.connection_context():
        records.save(BY_NAME["keys"], {"active": False}, row=key)
    now[0] += 0.4
    assert cat.current().keys[digest].active  # still the old snapshot: no read inside the TTL
    assert len(loads) == 1
    now[0] += 0.2
    assert not cat.current().keys[digest].active  # past the TTL: the revocation is seen
    assert len(loads) == 2
    now[0] += 1
    cat.current()
    assert len(loads) == 2  # nothing changed: the version check alone, no reload


@pytest.mark.slow
def test_a_revoked_key_is_refused_by_every_gunicorn_worker(gateway, served):
    """Two workers, each with its own catalog, the default TTL: once revoked through
    the REST API, the key is refused by whichever worker answers."""
    command = [arg if not arg.startswith("0.0.0.0:") else "127.0.0.1:{port}" for arg in dockerfile_cmd()]
    server = served(command, PROMPTPROXY_CATALOG_TTL=str(DEFAULTS["CATALOG_TTL"]))
    client = gateway.client()
    client.base_url = server.url + "/v1"
    for _ in range(10):  # both workers have loaded their catalog
        client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])

    make_admin()
    token = requests.post(server.url + "/api/collections/_superusers/auth-with-password",
                          json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, timeout=10).json()["token"]
    key_id = requests.get(server.url + "/api/collections/keys/records", headers={"Authorization": token},
                          timeout=10).json()["items"][0]["id"]
    assert requests.patch(f"{server.url}/api/collections/keys/records/{key_id}", json={"active": False},
                          headers={"Authorization": token}, timeout=10).status_code == 200

    # Poll until 20 calls in a row are refused (bounded; the TTL is half a second),
    # then every later call must be refused too.
    deadline, refused_in_a_row = time.monotonic() + 10, 0
    while refused_in_a_row < 20 and time.monotonic() < deadline:
        try:
            client.models.list()
            refused_in_a_row = 0
        except openai.AuthenticationError:
            refused_in_a_row += 1
    assert refused_in_a_row == 20
    for _ in range(20):
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "x"}])
