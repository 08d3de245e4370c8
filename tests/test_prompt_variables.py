"""{{Variables}} in stored prompts, through the official SDKs against a real
upstream: values from `prompt_variables` (never forwarded), defaults declared on
the prompt, the built-ins, and a 400 naming a required one that is missing. Values
are text: nothing in them is read as a placeholder."""

import datetime as dt
import re

import anthropic
import openai
import pytest

HI = [{"role": "user", "content": "hi"}]
LETTER = "Write to {{name}} in a {{ tone }} tone. Signed {{user.name}} <{{user.email}}> for {{end_user}}."


@pytest.fixture
def letter(gateway):
    gateway.create("prompts", name="letter", instructions=LETTER, variables={"name": None, "tone": "warm"})
    return gateway


def system_sent(gateway):
    sent = gateway.upstream.requests[-1].json
    assert "prompt_variables" not in sent
    return sent["messages"][0]["content"] if "messages" in sent else sent["prompt"]


def test_values_defaults_and_built_ins(letter):
    client = letter.client()
    client.chat.completions.create(model="gpt:letter", messages=HI, user="alice@shop",
                                   extra_body={"prompt_variables": {"name": "Ada", "tone": "formal"}})
    assert system_sent(letter) == ("Write to Ada in a formal tone. Signed Tom <tom@example.com> "
                                   "for alice@shop.")
    client.chat.completions.create(model="gpt:letter", messages=HI, extra_body={"prompt_variables": {"name": 7}})
    assert system_sent(letter) == "Write to 7 in a warm tone. Signed Tom <tom@example.com> for ."
    rows = letter.rows(2)
    assert [row.system_prompt for row in rows] == [
        "Write to Ada in a formal tone. Signed Tom <tom@example.com> for alice@shop.",
        "Write to 7 in a warm tone. Signed Tom <tom@example.com> for ."]
    assert rows[0].request_body["prompt_variables"] == {"name": "Ada", "tone": "formal"}  # what the client sent


def test_dates_are_utc(gateway):
    gateway.create("prompts", name="today", instructions="Today is {{date}}; now is {{datetime}}.")
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    gateway.client().chat.completions.create(model="gpt:today", messages=HI)
    after = dt.datetime.now(dt.UTC)
    match = re.fullmatch(r"Today is (\d{4}-\d\d-\d\d); now is (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\.",
                         system_sent(gateway))
    assert match, system_sent(gateway)
    now = dt.datetime.strptime(match[2], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert before <= now <= after and match[1] == now.date().isoformat()


def test_a_missing_required_variable_is_a_400_naming_it(letter):
    with pytest.raises(openai.BadRequestError) as refused:
        letter.client().chat.completions.create(model="gpt:letter", messages=HI,
                                                extra_body={"prompt_variables": {"tone": "dry"}})
    assert refused.value.body["message"] == "The prompt variable 'name' is required: give it in 'prompt_variables'."
    assert refused.value.body["param"] == "prompt_variables"
    with pytest.raises(openai.BadRequestError) as refused:
        letter.client().chat.completions.create(model="gpt:letter", messages=HI,
                                                extra_body={"prompt_variables": ["Ada"]})
    assert "'prompt_variables' must be an object" in refused.value.body["message"]
    claude = anthropic.Anthropic(base_url=letter.url, api_key=letter.key, max_retries=0, timeout=20)
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="gpt:letter", max_tokens=10, messages=HI)
    assert refused.value.body["error"]["message"] == \
        "The prompt variable 'name' is required: give it in 'prompt_variables'."
    assert letter.upstream.requests == []
    assert [row.status for row in letter.rows(3)] == [400] * 3


def test_values_are_inserted_as_text_never_read_again(letter):
    letter.client().chat.completions.create(model="gpt:letter", messages=HI, extra_body={"prompt_variables": {
        "name": "{{user.email}} {% if 1 %}x{% endif %} ${HOME}", "tone": "{{tone}}", "user.email": "spoofed"}})
    assert system_sent(letter) == ("Write to {{user.email}} {% if 1 %}x{% endif %} ${HOME} in a {{tone}} tone. "
                                   "Signed Tom <tom@example.com> for .")


def test_text_that_is_no_variable_of_the_prompt_is_left_as_written(gateway):
    gateway.create("prompts", name="braces", instructions="Answer in {{format}}; keep {{ this }}.")
    gateway.client().chat.completions.create(model="gpt:braces", messages=HI,
                                             extra_body={"prompt_variables": {"format": "JSON"}})
    assert system_sent(gateway) == "Answer in JSON; keep {{ this }}."


def test_completions_and_messages_fill_variables_too(letter):
    letter.client().completions.create(model="gpt:letter", prompt="Dear", user="bob",
                                       extra_body={"prompt_variables": {"name": "Bea"}})
    assert system_sent(letter) == "Write to Bea in a warm tone. Signed Tom <tom@example.com> for bob.\n\nDear"

    claude = anthropic.Anthropic(base_url=letter.url, api_key=letter.key, max_retries=0, timeout=20)
    claude.messages.create(model="gpt:letter", max_tokens=10, messages=HI, system="Be short.",
                           extra_body={"prompt_variables": {"name": "Cy"}})
    sent = letter.upstream.requests[-1].json
    assert "prompt_variables" not in sent
    assert sent["messages"][0] == {"role": "system", "content": "Write to Cy in a warm tone. Signed Tom "
                                                                "<tom@example.com> for .\n\nBe short."}


def test_prompt_variables_never_reach_the_upstream_without_a_prompt(gateway):
    gateway.client().chat.completions.create(model="gpt", messages=HI,
                                             extra_body={"prompt_variables": {"name": "Ada"}})
    assert gateway.upstream.requests[-1].json == {"model": "gpt-4o-mini", "messages": HI}


def test_a_version_serves_its_own_words_with_the_prompts_variables(letter):
    prompt = letter.create("prompts", name="hello", instructions="Hello {{name}}.", variables={"name": "you"})
    letter.update("prompts", prompt, instructions="Goodbye {{name}}.")
    letter.client().chat.completions.create(model="gpt:hello@1", messages=HI)
    assert system_sent(letter) == "Hello you."
    letter.client().chat.completions.create(model="gpt:hello", messages=HI,
                                            extra_body={"prompt_variables": {"name": "Ada"}})
    assert system_sent(letter) == "Goodbye Ada."
