"""How the prompt part of `model:prompt@pin` is read, on a snapshot as the catalog
builds it (no database, no server): the name whole first, then split at its last
`@`; digits are a version, anything else a label."""

from types import SimpleNamespace

import pytest

from promptproxy.data.catalog import Snapshot, with_versions
from promptproxy.errors import ProxyError
from promptproxy.prompting import chosen_version, referenced_prompt


def version(number, labels=(), weight=None):
    return SimpleNamespace(version=number, labels=list(labels), weight=weight)


def snapshot(*prompts):
    snap = Snapshot()
    for name, versions, active in prompts:
        row = with_versions(SimpleNamespace(id=f"id-{name}", name=name, created=None, active=active), versions)
        snap.prompts[row.id] = snap.prompts[row.name] = row
    return snap


SNAP = snapshot(("pirate", [version(1, ["production"]), version(2, ["staging"]), version(3)], True),
                ("mail@home", [version(1), version(2)], True),
                ("pirate@2", [version(1)], True),
                ("retired", [version(1)], False))


@pytest.mark.parametrize("ref, prompt, pinned", [
    ("pirate", "pirate", None),
    ("pirate@3", "pirate", 3),
    ("pirate@staging", "pirate", 2),
    ("pirate@production", "pirate", 1),
    ("id-pirate@3", "pirate", 3),
    ("pirate@2", "pirate@2", None),  # a prompt of that very name wins
    ("mail@home", "mail@home", None),
    ("mail@home@1", "mail@home", 1),
])
def test_references(ref, prompt, pinned):
    found = referenced_prompt(SNAP, ref)
    assert (found.name, found.pinned.version if found.pinned else None) == (prompt, pinned)


@pytest.mark.parametrize("ref, status, message", [
    ("pirate@4", 404, "The prompt 'pirate' has no version 4."),
    ("pirate@04", 404, "The prompt 'pirate' has no version 04."),
    ("pirate@canary", 404, "The prompt 'pirate' has no version labelled 'canary'."),
    ("pirate@", 404, "The prompt 'pirate' has no version labelled ''."),
    ("@3", 404, "The prompt '@3' does not exist or is not available."),
    ("ghost@1", 404, "The prompt 'ghost@1' does not exist or is not available."),
    ("retired@1", 404, "The prompt 'retired@1' does not exist or is not available."),
])
def test_refusals(ref, status, message):
    with pytest.raises(ProxyError) as refused:
        referenced_prompt(SNAP, ref)
    assert (refused.value.status, refused.value.message) == (status, message)


def test_without_a_pin_production_then_the_latest_serves():
    assert chosen_version(referenced_prompt(SNAP, "pirate"), None, "k").version == 1
    assert chosen_version(referenced_prompt(SNAP, "mail@home"), None, "k").version == 2
    weighted = snapshot(("ab", [version(1, ["production"], 0), version(2, weight=5), version(3, weight=5)], True))
    drawn = {chosen_version(referenced_prompt(weighted, "ab"), f"u{n}", "k").version for n in range(50)}
    assert drawn == {2, 3}  # weights win over production; a weight of 0 is no share
    assert chosen_version(referenced_prompt(weighted, "ab@1"), "u1", "k").version == 1
