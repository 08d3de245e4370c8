"""The proxy's in-memory catalog: no database read per call, yet every admin edit
(a revoked key above all) reaches every worker within the catalog's TTL."""

import time

import openai
import psycopg
import pytest
import requests

from promptproxy.collections import BY_NAME
from promptproxy.config import DEFAULTS
from promptproxy.data import catalog as catalog_module
from promptproxy.data import records
from promptproxy.data.catalog import Catalog
from promptproxy.data.db import db, read_version

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


def test_an_announced_change_is_read_at_once_whatever_the_ttl(app):
    """What a PostgreSQL notification does (see db.ChangeListener): the next call
    reads the change counter, even deep inside the TTL."""
    now = [100.0]
    cat = Catalog(ttl=30, clock=lambda: now[0])
    with db.connection_context():
        user, _ = records.save(BY_NAME["users"], {"name": "Tom"})
        key, _ = records.save(BY_NAME["keys"], {"user": user.id})
    assert cat.current().keys[key.key].active
    with db.connection_context():
        records.save(BY_NAME["keys"], {"active": False}, row=key)
    now[0] += 1
    assert cat.current().keys[key.key].active  # 1 s into a 30 s TTL: not read yet
    cat.changed()
    assert not cat.current().keys[key.key].active
    with db.connection_context():
        records.save(BY_NAME["keys"], {"active": True}, row=key)
    now[0] += 1
    assert not cat.current().keys[key.key].active  # nothing announced: the TTL holds again


def test_after_a_reconnection_the_catalog_is_read_whole_whatever_the_counter(app):
    """A database that crashed may have lost its last commits, counter included,
    and the counter may then come back to the number a worker holds for other
    data. A worker whose listener reconnected therefore reloads everything."""
    now = [100.0]
    cat = Catalog(ttl=30, clock=lambda: now[0])
    with db.connection_context():
        user, _ = records.save(BY_NAME["users"], {"name": "Tom"})
        key, _ = records.save(BY_NAME["keys"], {"user": user.id})
        version = read_version()
    assert cat.current().keys[key.key].active and cat.current().version == version
    with db.connection_context():  # the same number, other data: what a lost commit and a new one leave
        BY_NAME["keys"].model.update(active=False).where(BY_NAME["keys"].model.id == key.id).execute()
    cat.changed()
    assert cat.current().keys[key.key].active  # the counter says nothing moved
    cat.changed(reconnected=True)
    assert not cat.current().keys[key.key].active


def wait_until_listening(cluster, *servers, timeout=30):
    """Wait until each server process listens for changes (again)."""
    names = {f"promptproxy-listener {server.process.pid}" for server in servers}
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            listening = {name for (name,) in conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE query LIKE 'LISTEN%%' AND state = 'idle'")}
        if names <= listening:
            return
        assert time.monotonic() < deadline, f"not listening: {names - listening}"
        time.sleep(0.05)


@pytest.mark.postgresql
@pytest.mark.slow
def test_a_key_revoked_on_one_instance_is_refused_on_another_at_once(gateway, served, postgres_cluster,
                                                                    database_url):
    """Two instances (`python app.py serve`, on gevent) on one PostgreSQL database,
    each with a catalog TTL of 30 s: a key revoked through one is refused by the
    other at once, because each change is announced as it commits. After the
    database restarts, every instance listens again and the next change arrives
    just as fast."""
    one = served(PROMPTPROXY_CATALOG_TTL="30")
    other = served(PROMPTPROXY_CATALOG_TTL="30")
    make_admin()
    token = requests.post(one.url + "/api/collections/_superusers/auth-with-password",
                          json={"identity": ADMIN_EMAIL, "password": ADMIN_PASSWORD}, timeout=10).json()["token"]
    keys = one.url + "/api/collections/keys/records"

    def new_key():
        created = requests.post(keys, json={"user": gateway.user.id}, headers={"Authorization": token}, timeout=10)
        assert created.status_code == 200, created.text
        return created.json()

    def status_on_other(key):
        return requests.get(other.url + "/v1/models", headers={"Authorization": f"Bearer {key['key']}"},
                            timeout=10).status_code

    def seconds_until_refused_on_other(key):
        deadline = time.monotonic() + 10
        while True:  # just after a restart, a connection the server held may fail once (503): try again
            revoked = requests.patch(f"{keys}/{key['id']}", json={"active": False},
                                     headers={"Authorization": token}, timeout=10)
            if revoked.status_code != 503 or time.monotonic() > deadline:
                break
        assert revoked.status_code == 200, revoked.text
        start = time.monotonic()
        while status_on_other(key) == 200:
            assert time.monotonic() - start < 5, "still admitted:\n" + other.log()[-6000:]
        assert status_on_other(key) == 401
        return time.monotonic() - start

    first, second = new_key(), new_key()
    assert status_on_other(first) == status_on_other(second) == 200  # both in the other's catalog
    wait_until_listening(postgres_cluster, one, other)
    assert seconds_until_refused_on_other(first) < 1
    assert status_on_other(second) == 200

    # The test server runs without fsync and with asynchronous commits: a checkpoint
    # first, so that the crash below loses none of the commits made so far.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    postgres_cluster.restart()
    wait_until_listening(postgres_cluster, one, other)
    assert seconds_until_refused_on_other(second) < 1
