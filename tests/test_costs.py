"""What each call cost, on its request row: its tokens at the prices of the model
that answered, as they were when it ended, with the input the upstream read from
its prompt cache (and, on Anthropic, wrote to it) priced apart. Through the
official SDKs against real loopback upstreams, for every endpoint and stream."""

from fractions import Fraction
from types import SimpleNamespace

import anthropic
import pytest

from promptproxy.accounting import costs
from promptproxy.providers.anthropic.responses import anthropic_usage, openai_usage

from .anthropic_upstream import AnthropicUpstream

CLAUDE_KEY = "sk-ant-upstream-" + "k3y" * 8
SIX = [{"role": "user", "content": "one two three four five six"}]  # 6 input tokens, "echo: ..." 7 output
PRICES = {"input_price": 2.5, "cached_input_price": 1.25, "output_price": 10}


def expected(prompt, completion, read=0, written=0, prices=PRICES):
    """What the issue says a call costs, worked out here from the figures and prices:
    tokens times price per million, cache reads at the cached price, cache writes
    at 1.25 times the input price."""
    per_million = {name: Fraction(str(value)) / 1_000_000 for name, value in prices.items()}
    return float((prompt - read - written) * per_million["input_price"] + read * per_million["cached_input_price"]
                 + written * per_million["input_price"] * Fraction(5, 4)
                 + completion * per_million["output_price"])


@pytest.fixture
def priced(gateway):
    gateway.model = gateway.update("models", gateway.model, **PRICES)
    return gateway


@pytest.fixture
def claude(priced):
    with AnthropicUpstream() as server:
        priced.claude_upstream = server
        api = priced.create("apis", name="Anthropic", base_url=server.base_url, api_key=CLAUDE_KEY,
                            protocol="anthropic", timeout=5)
        priced.create("models", api=api.id, model="claude-sonnet-4-6", name="sonnet", **PRICES)
        yield priced


def anthropic_client(gateway):
    return anthropic.Anthropic(base_url=gateway.url, api_key=gateway.key, max_retries=0)


# -- OpenAI-format calls to an OpenAI-compatible upstream ---------------------------------

def test_chat_with_cached_input(priced):
    priced.upstream.script(usage={"prompt_tokens_details": {"cached_tokens": 4}})
    reply = priced.client().chat.completions.create(model="gpt", messages=SIX)
    assert reply.usage.prompt_tokens_details.cached_tokens == 4  # passed through as it came
    (row,) = priced.rows(1)
    assert (row.input_tokens, row.output_tokens) == (6, 7)
    assert row.cost == expected(6, 7, read=4) == 0.00008


def test_chat_stream_whose_usage_the_client_did_not_ask_for(priced):
    priced.upstream.script(usage={"prompt_tokens_details": {"cached_tokens": 2}})
    chunks = list(priced.client().chat.completions.create(model="gpt", messages=SIX, stream=True))
    assert all(chunk.usage is None for chunk in chunks)
    (row,) = priced.rows(1)
    assert row.stream and row.cost == expected(6, 7, read=2)


def test_completions_and_their_streams(priced):
    client = priced.client()
    client.completions.create(model="gpt", prompt="say three words")
    list(client.completions.create(model="gpt", prompt="say three words", stream=True))
    rows = priced.rows(2)
    assert [(row.input_tokens, row.output_tokens, row.stream) for row in rows] == [(3, 4, False), (3, 4, True)]
    assert [row.cost for row in rows] == [expected(3, 4)] * 2


def test_cached_tokens_without_a_cached_price_cost_the_input_price(priced):
    priced.update("models", priced.model, cached_input_price=None)
    priced.upstream.script(usage={"prompt_tokens_details": {"cached_tokens": 4}})
    priced.client().chat.completions.create(model="gpt", messages=SIX)
    assert priced.rows(1)[0].cost == expected(6, 7)


def test_a_price_change_affects_only_later_rows(priced):
    client = priced.client()
    client.chat.completions.create(model="gpt", messages=SIX)
    priced.update("models", priced.model, input_price=5, output_price=20)
    client.chat.completions.create(model="gpt", messages=SIX)
    first, second = priced.rows(2)
    assert first.cost == expected(6, 7)  # written before the change, and left as it was
    assert second.cost == expected(6, 7, prices={**PRICES, "input_price": 5, "output_price": 20})
    assert second.cost == 2 * first.cost


def test_a_free_model_costs_nothing_and_a_call_without_usage_has_no_cost(gateway):
    client = gateway.client()
    client.chat.completions.create(model="llama3:8b", messages=SIX)  # no prices: free
    gateway.upstream.script(status=400)
    with pytest.raises(Exception):  # noqa: B017 -- the SDK's BadRequestError; the row is what matters
        client.chat.completions.create(model="gpt", messages=SIX)
    free, failed = gateway.rows(2)
    assert (free.cost, failed.status, failed.cost) == (0, 400, None)


@pytest.mark.parametrize("usage, cost", [
    # text where numbers belong is read as the number it holds, as the token columns read it
    ({"prompt_tokens": "6", "completion_tokens": "7"}, expected(6, 7)),
    ({"prompt_tokens": 6, "completion_tokens": "many", "prompt_tokens_details": "none"}, expected(6, 0)),
    ({"prompt_tokens": -50, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 100}},
     expected(0, 7)),
    ({"prompt_tokens": 6, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}},
     expected(6, 7, read=6)),  # no more cached than input
    ({"prompt_tokens": 6.4, "completion_tokens": True, "prompt_tokens_details": {"cached_tokens": [1]}},
     expected(6, 0)),
    ({"prompt_tokens": 10 ** 30, "completion_tokens": 7}, expected(0, 7)),
])
def test_untrusted_usage_never_costs_a_row(priced, usage, cost):
    priced.upstream.script(usage=usage)
    priced.client().chat.completions.with_raw_response.create(model="gpt", messages=SIX)
    (row,) = priced.rows(1)
    assert row.status == 200 and row.cost == cost


# -- Anthropic on either side ----------------------------------------------------------------

CACHED = {"cache_read_input_tokens": 6, "cache_creation_input_tokens": 4}


@pytest.mark.parametrize("stream", [False, True])
def test_messages_to_anthropic_price_cache_reads_and_writes_apart(claude, stream):
    claude.claude_upstream.script(usage=CACHED)
    client = anthropic_client(claude)
    if stream:
        with client.messages.stream(model="sonnet", max_tokens=50, messages=SIX) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(model="sonnet", max_tokens=50, messages=SIX)
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (6, 4)
    (row,) = claude.rows(1)
    assert (row.input_tokens, row.output_tokens) == (6 + 10, 7)
    assert row.cost == expected(16, 7, read=6, written=4)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_through_anthropic_keeps_the_cached_figures(claude, stream):
    claude.claude_upstream.script(usage=CACHED)
    client = claude.client()
    if stream:
        chunks = list(client.chat.completions.create(model="sonnet", messages=SIX, stream=True,
                                                     stream_options={"include_usage": True}))
        usage = chunks[-1].usage
    else:
        usage = client.chat.completions.create(model="sonnet", messages=SIX).usage
    assert usage.prompt_tokens == 16 and usage.prompt_tokens_details.cached_tokens == 6
    assert usage.prompt_tokens_details.model_extra == {"cache_creation_tokens": 4}
    (row,) = claude.rows(1)
    assert row.cost == expected(16, 7, read=6, written=4)


@pytest.mark.parametrize("stream", [False, True])
def test_messages_through_an_openai_upstream(claude, stream):
    claude.upstream.script(usage={"prompt_tokens_details": {"cached_tokens": 4}})
    client = anthropic_client(claude)
    if stream:
        with client.messages.stream(model="gpt", max_tokens=50, messages=SIX) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(model="gpt", max_tokens=50, messages=SIX)
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (2, 4)
    (row,) = claude.rows(1)
    assert row.cost == expected(6, 7, read=4)


def test_anthropic_cache_figures_survive_both_ways():
    usage = {"input_tokens": 5, "cache_read_input_tokens": 6, "cache_creation_input_tokens": 4, "output_tokens": 7}
    shaped = openai_usage(usage)
    assert shaped == {"prompt_tokens": 15, "completion_tokens": 7, "total_tokens": 22,
                      "prompt_tokens_details": {"cached_tokens": 6, "cache_creation_tokens": 4}}
    assert anthropic_usage(shaped) == usage
    assert openai_usage({"input_tokens": 5, "output_tokens": 7}) == {
        "prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}  # no details when there are none


# -- the arithmetic ------------------------------------------------------------------------------

def model(**prices):
    return SimpleNamespace(**{"input_price": None, "cached_input_price": None, "output_price": None, **prices})


def test_prices_are_read_as_typed_and_rounded_once_to_a_nano_unit():
    usage = {"prompt_tokens": 3, "completion_tokens": 1}
    assert costs.cost(usage, model(input_price=0.15)) == 450  # 0.15 is not exactly 0.15 as a double
    assert costs.cost(usage, model(input_price=0.0000001)) == 0  # 0.0003 nano-units
    assert costs.cost(usage, model(input_price=0.0002)) == 1  # 0.6, rounded up
    assert costs.cost(usage, model(output_price=0.01875)) == 19  # 18.75
    assert costs.cost(usage, model(cached_input_price=0, output_price=1)) == 1000  # input left free
    assert costs.cost({"prompt_tokens": 2 ** 62}, model(input_price=1)) == costs.MAX_NANOS  # absurd: capped
    assert costs.cost(None, model(input_price=1)) is None
    assert costs.cost(usage, None) is None


def test_amounts_as_text():
    assert [costs.amount_text(n) for n in (0, 4_000_000, 12 * costs.NANOS, 1, 10_000_000_500)] == [
        "0", "0.004", "12", "0.000000001", "10.0000005"]
    assert costs.nanos(0.01) == 10_000_000 and costs.nanos(0.3) == 300_000_000
