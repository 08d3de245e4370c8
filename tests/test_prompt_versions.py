"""Prompt versions through the official openai SDK against a real upstream: an edit
makes a version without reaching callers until it is promoted, `@3` and `@label`
pin one, rolling back serves the old wording again, and rows say which version
served. What the upstream received is what is asserted."""

import anthropic
import openai
import pytest

from promptproxy.collections import BY_NAME
from promptproxy.data import records
from promptproxy.data.db import db
from promptproxy.data.versions import NoEarlierVersion

HI = [{"role": "user", "content": "hi"}]


def versions_of(prompt):
    model = BY_NAME["prompt_versions"].model
    with db.connection_context():
        return list(model.select().where(model.prompt == prompt.id).order_by(model.version))


def version(prompt, number):
    return next(v for v in versions_of(prompt) if v.version == number)


def promote(prompt, number, label="production"):
    with db.connection_context():
        return records.promote(version(prompt, number), label)


def rollback(prompt, label="production"):
    with db.connection_context():
        return records.rollback(prompt, label)


def served_instructions(gateway, model="gpt:pirate", **kwargs):
    """The system message the upstream received for one call to `model`."""
    gateway.client().chat.completions.create(model=model, messages=HI, **kwargs)
    messages = gateway.upstream.requests[-1].json["messages"]
    assert messages[0]["role"] == "system" and messages[1:] == HI
    return messages[0]["content"]


def edit(gateway, prompt, instructions, **data):
    return gateway.update("prompts", prompt, instructions=instructions, **data)


def test_an_edit_makes_version_2_while_production_serves_version_1_until_it_is_promoted(gateway):
    pirate = gateway.prompt
    assert [(v.version, v.instructions) for v in versions_of(pirate)] == [(1, "Talk like a pirate.")]
    promote(pirate, 1)

    edit(gateway, pirate, "Talk like a pirate captain.")
    assert [(v.version, v.instructions, v.labels) for v in versions_of(pirate)] == [
        (1, "Talk like a pirate.", ["production"]), (2, "Talk like a pirate captain.", [])]
    assert served_instructions(gateway) == "Talk like a pirate."

    promote(pirate, 2)
    assert served_instructions(gateway) == "Talk like a pirate captain."
    assert [v.labels for v in versions_of(pirate)] == [[], ["production"]]
    assert [(row.prompt, row.prompt_version) for row in gateway.rows(2)] == [(pirate.id, 1), (pirate.id, 2)]


def test_without_labels_every_edit_serves_at_once(gateway):
    """Installs that never use labels see no change: the latest version serves."""
    assert served_instructions(gateway) == "Talk like a pirate."
    edit(gateway, gateway.prompt, "Talk like a parrot.")
    assert served_instructions(gateway) == "Talk like a parrot."
    assert [row.prompt_version for row in gateway.rows(2)] == [1, 2]


def test_only_a_change_of_content_makes_a_version(gateway):
    pirate = gateway.prompt
    gateway.update("prompts", pirate, description="For the sea shanty bot.", name="pirate")
    gateway.update("prompts", pirate, instructions="Talk like a pirate.")  # the same words
    assert [v.version for v in versions_of(pirate)] == [1]
    gateway.update("prompts", pirate, replace_system=True)
    tools = [{"type": "function", "function": {"name": "plunder", "parameters": {"type": "object"}}}]
    gateway.update("prompts", pirate, tools=tools)
    assert [(v.version, v.replace_system, v.tools) for v in versions_of(pirate)] == [
        (1, False, None), (2, True, None), (3, True, tools)]


def test_a_version_number_or_label_pins_the_version(gateway):
    pirate = gateway.prompt
    edit(gateway, pirate, "Version two.")
    edit(gateway, pirate, "Version three.")
    promote(pirate, 1)
    promote(pirate, 2, "staging")
    assert served_instructions(gateway, "gpt:pirate@3") == "Version three."
    assert served_instructions(gateway, "gpt:pirate@staging") == "Version two."
    assert served_instructions(gateway, f"gpt:{pirate.id}@1") == "Talk like a pirate."
    assert served_instructions(gateway, "gpt:pirate@production") == "Talk like a pirate."
    assert served_instructions(gateway, "gpt:pirate") == "Talk like a pirate."
    assert [row.prompt_version for row in gateway.rows(5)] == [3, 2, 1, 1, 1]
    assert all(row.prompt == pirate.id for row in gateway.rows(5))


def test_an_unknown_version_or_label_is_a_404_naming_it(gateway):
    client = gateway.client()
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt:pirate@7", messages=HI)
    assert missing.value.body["message"] == "The prompt 'pirate' has no version 7."
    assert missing.value.body["code"] == "prompt_version_not_found"
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="gpt:pirate@staging", prompt="hi")
    assert missing.value.body["message"] == "The prompt 'pirate' has no version labelled 'staging'."
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt:nobody@1", messages=HI)
    assert missing.value.body["message"] == "The prompt 'nobody@1' does not exist or is not available."

    claude = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0, timeout=20)
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="gpt:pirate@staging", max_tokens=10, messages=HI)
    assert missing.value.body == {"type": "error", "error": {
        "type": "not_found_error", "message": "The prompt 'pirate' has no version labelled 'staging'."}}
    assert gateway.upstream.requests == []
    assert [row.status for row in gateway.rows(4)] == [404] * 4


def test_a_prompt_named_with_an_at_sign(gateway):
    team = gateway.create("prompts", name="team@home", instructions="Speak for the team.")
    edit(gateway, team, "Speak for the whole team.")
    literal = gateway.create("prompts", name="pirate@2", instructions="I am a prompt named pirate@2.")
    edit(gateway, gateway.prompt, "Pirate, version two.")
    assert served_instructions(gateway, "gpt:team@home") == "Speak for the whole team."
    assert served_instructions(gateway, "gpt:team@home@1") == "Speak for the team."
    assert served_instructions(gateway, "gpt:pirate@2") == "I am a prompt named pirate@2."  # looked up whole first
    assert served_instructions(gateway, "llama3:8b:team@home@2") == "Speak for the whole team."
    assert [(row.prompt, row.prompt_version) for row in gateway.rows(4)] == [
        (team.id, 2), (team.id, 1), (literal.id, 1), (team.id, 2)]


def test_rolling_back_moves_production_back_and_the_next_call_serves_the_old_wording(gateway):
    pirate = gateway.prompt
    promote(pirate, 1)
    edit(gateway, pirate, "Talk like a pirate, arr.")
    edit(gateway, pirate, "Talk like a robot.")  # version 3, never in production
    promote(pirate, 2)
    promote(pirate, 3)
    assert served_instructions(gateway) == "Talk like a robot."

    assert rollback(pirate).version == 2  # where production was before
    assert served_instructions(gateway) == "Talk like a pirate, arr."
    assert rollback(pirate).version == 1
    assert served_instructions(gateway) == "Talk like a pirate."
    assert [v.labels for v in versions_of(pirate)] == [["production"], [], []]
    with pytest.raises(NoEarlierVersion):
        rollback(pirate)
    assert [row.prompt_version for row in gateway.rows(3)] == [3, 2, 1]


def test_rolling_back_a_prompt_that_never_had_production_serves_the_version_before_the_latest(gateway):
    pirate = gateway.prompt
    edit(gateway, pirate, "Talk like a buccaneer.")
    assert served_instructions(gateway) == "Talk like a buccaneer."
    assert rollback(pirate).version == 1
    assert served_instructions(gateway) == "Talk like a pirate."
    edit(gateway, pirate, "Talk like a corsair.")  # production stays where it was put
    assert served_instructions(gateway) == "Talk like a pirate."


def test_a_label_is_on_one_version_of_a_prompt_at_most(gateway):
    pirate, other = gateway.prompt, gateway.create("prompts", name="other", instructions="Other.")
    edit(gateway, pirate, "Two.")
    promote(pirate, 1, "staging")
    promote(other, 1, "staging")  # another prompt's label is its own
    with db.connection_context():
        records.save(BY_NAME["prompt_versions"], {"labels": ["staging", "canary"]}, row=version(pirate, 2))
    assert [v.labels for v in versions_of(pirate)] == [[], ["staging", "canary"]]
    assert [v.labels for v in versions_of(other)] == [["staging"]]
    assert served_instructions(gateway, "gpt:pirate@canary") == "Two."


def test_deleting_a_prompt_deletes_its_versions(gateway):
    doomed = gateway.create("prompts", name="doomed", instructions="One.")
    edit(gateway, doomed, "Two.")
    with db.connection_context():
        records.delete(BY_NAME["prompts"], doomed)
    assert versions_of(doomed) == [] and len(versions_of(gateway.prompt)) == 1
