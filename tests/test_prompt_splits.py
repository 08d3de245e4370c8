"""A/B splits: versions with weights share the calls that pin no version, each end
user (or key, without one) staying on one version while the weights stay. Through
the openai SDK; the version served is read from what the upstream received."""

from types import SimpleNamespace

import pytest

from promptproxy.collections import BY_NAME
from promptproxy.data import records
from promptproxy.data.db import db
from promptproxy.prompting import drawn

HI = [{"role": "user", "content": "hi"}]
WORDS = {"Talk like a pirate.": 1, "Talk like a sailor.": 2}


def weigh(prompt, weights):
    """Set each version's weight ({number: weight}), as an admin does over REST."""
    model = BY_NAME["prompt_versions"].model
    with db.connection_context():
        for row in model.select().where(model.prompt == prompt.id):
            records.save(BY_NAME["prompt_versions"], {"weight": weights.get(row.version)}, row=row)


def served(gateway, model="gpt:pirate", **kwargs):
    """The instructions one call was served, as the upstream received them."""
    if not hasattr(gateway, "sdk"):
        gateway.sdk = gateway.client()  # one client: its connections are kept alive
    gateway.sdk.chat.completions.create(model=model, messages=HI, **kwargs)
    return gateway.upstream.requests[-1].json["messages"][0]["content"]


@pytest.mark.slow
def test_a_50_50_split_over_200_end_users_and_two_who_stay_on_their_version(gateway):
    gateway.update("prompts", gateway.prompt, instructions="Talk like a sailor.")
    weigh(gateway.prompt, {1: 50, 2: 50})
    versions = [WORDS[served(gateway, user=f"end-user-{n}")] for n in range(200)]
    assert 70 <= versions.count(1) <= 130 and versions.count(1) + versions.count(2) == 200  # 50% ± 4.2 sd
    assert [row.prompt_version for row in gateway.rows(200)] == versions

    stays = {name: {WORDS[served(gateway, user=name)] for _ in range(10)} for name in ("alice", "bob")}
    assert all(len(seen) == 1 for seen in stays.values()), stays
    without = {WORDS[served(gateway)] for _ in range(10)}  # no end user: the key stays on one version
    assert len(without) == 1
    again = [WORDS[served(gateway, user=f"end-user-{n}")] for n in range(50)]
    assert again == versions[:50]  # the same people, the same versions

    assert {WORDS[served(gateway, "gpt:pirate@2", user=f"end-user-{n}")] for n in range(20)} == {2}  # pinned

    weigh(gateway.prompt, {1: 0, 2: 100})
    assert {WORDS[served(gateway, user=f"end-user-{n}")] for n in range(30)} == {2}
    weigh(gateway.prompt, {})  # the experiment is over: the latest serves again
    gateway.update("prompts", gateway.prompt, instructions="Talk like a pirate.")  # version 3, back to the old words
    assert {served(gateway, user=f"end-user-{n}") for n in range(20)} == {"Talk like a pirate."}


def test_draws_follow_the_weights_and_change_only_with_them():
    one, two = SimpleNamespace(version=1, weight=75), SimpleNamespace(version=2, weight=25)
    counts = {1: 0, 2: 0}
    for n in range(20_000):
        counts[drawn([one, two], f"prompt\x1fuser:{n}").version] += 1
    assert abs(counts[1] / 20_000 - 0.75) < 0.015  # 5 standard deviations
    assert drawn([one, two], "p\x1fuser:ada") is drawn([one, two], "p\x1fuser:ada")
    moved = sum(drawn([one, two], f"p\x1f{n}").version != drawn([one, SimpleNamespace(version=2, weight=26)],
                                                                 f"p\x1f{n}").version for n in range(2000))
    assert moved > 500  # new weights deal everyone again, not just the margin
