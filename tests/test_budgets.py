"""Budgets: a user (or a key with a budget of its own) may spend so much per UTC day,
week or month, or in total; a call made once the period's spend is at or over the
budget is refused with OpenAI's `insufficient_quota`, whichever worker takes it."""

import calendar
import concurrent.futures
import datetime as dt
import threading

import anthropic
import openai
import pytest

from promptproxy import create_app, stop
from promptproxy.cli import main
from promptproxy.services import services

HI = [{"role": "user", "content": "hi"}]  # 1 input token, "echo: hi" 2 output tokens
COSTS_0_004 = {"input_price": 1000, "output_price": 1500}  # 1 * 1000 + 2 * 1500 per million: 0.004 a call
REMAINING = "x-promptproxy-budget-remaining"


@pytest.fixture
def budgeted(gateway):
    gateway.update("models", gateway.model, **COSTS_0_004)
    gateway.user = gateway.update("users", gateway.user, budget=0.01)
    return gateway


def call(gateway, key=None, **headers):
    return gateway.client(key, default_headers=headers).chat.completions.with_raw_response.create(
        model="gpt", messages=HI)


def refused(gateway, key=None):
    with pytest.raises(openai.RateLimitError) as raised:
        call(gateway, key)
    return raised.value


def at(text):
    """Epoch seconds of a UTC time written as 'YYYY-MM-DD HH:MM:SS'."""
    return calendar.timegm(tuple(map(int, text.replace("-", " ").replace(":", " ").split())) + (0, 0, 0))


@pytest.fixture
def clock(app):
    """Put the limiter on a clock the test moves."""
    now = [at("2023-11-30 23:59:50")]
    services(app).limiter.clock = lambda: now[0]
    return now


def test_three_calls_at_0_004_fit_a_budget_of_0_01_and_the_fourth_is_refused(budgeted):
    remaining = [call(budgeted).headers[REMAINING] for _ in range(3)]
    assert remaining == ["0.01", "0.006", "0.002"]  # what was left when each call began
    over = refused(budgeted)
    assert (over.status_code, over.code, over.type) == (429, "budget_exceeded", "insufficient_quota")
    today = dt.datetime.now(dt.UTC)
    next_month = dt.date(today.year + today.month // 12, today.month % 12 + 1, 1)
    assert over.body["message"] == ("Budget exceeded: this user has spent 0.012 USD of its budget of 0.01 USD "
                                    f"for this month (until {next_month} 00:00 UTC).")
    assert over.response.headers[REMAINING] == "0"
    assert 0 < int(over.response.headers["Retry-After"]) <= 31 * 86400
    assert len(budgeted.upstream.requests) == 3  # the refused call never went upstream
    rows = budgeted.rows(4)
    assert [(row.status, row.cost) for row in rows] == [(200, 0.004)] * 3 + [(429, None)]
    assert "Budget exceeded" in rows[3].error
    scraped, _ = services(budgeted.app).metrics.exposition()
    assert b'promptproxy_rate_limited_total{limit="budget"} 1.0' in scraped


def test_an_anthropic_client_is_refused_in_its_own_format(budgeted):
    budgeted.update("users", budgeted.user, budget=0)
    client = anthropic.Anthropic(base_url=budgeted.url, api_key=budgeted.key, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as raised:
        client.messages.create(model="gpt", max_tokens=10, messages=HI)
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "rate_limit_error"
    assert raised.value.body["error"]["message"].startswith("Budget exceeded: this user has spent 0 USD")
    assert raised.value.response.headers[REMAINING] == "0"


def test_no_budget_no_header_and_nothing_counted(gateway):
    gateway.update("models", gateway.model, **COSTS_0_004)
    assert REMAINING not in call(gateway).headers
    key, user = gateway.create("keys", user=gateway.user.id), gateway.user
    limiter = services(gateway.app).limiter
    snap = services(gateway.app).catalog.fresh()
    assert limiter.acquire(snap.find_key(key), snap.users[user.id]) is None  # costs the limiter nothing


def test_a_key_budget_counts_apart_from_its_users(budgeted):
    own = budgeted.create("keys", user=budgeted.user.id, label="own budget", budget=0.004, budget_period="day")
    assert call(budgeted, own).headers[REMAINING] == "0.004"
    over = refused(budgeted, own)
    assert "this key has spent 0.004 USD of its budget of 0.004 USD for today" in over.body["message"]
    assert [call(budgeted).headers[REMAINING] for _ in range(3)] == ["0.01", "0.006", "0.002"]
    refused(budgeted)


def test_calls_in_flight_when_the_budget_is_crossed_finish(budgeted):
    budgeted.update("users", budgeted.user, budget=0.005)
    hold = threading.Event()
    budgeted.upstream.script(chunks=["echo: ", "hi"], gate=hold)
    budgeted.upstream.script(chunks=["echo: ", "hi"], gate=hold)
    client = budgeted.client()
    streams = [client.chat.completions.create(model="gpt", messages=HI, stream=True) for _ in range(2)]
    for stream in streams:
        next(iter(stream))  # both admitted: nothing spent yet
    hold.set()
    assert ["".join(c.choices[0].delta.content or "" for c in stream if c.choices) for stream in streams] == [
        "hi"] * 2
    assert [row.cost for row in budgeted.rows(2)] == [0.004, 0.004]  # 0.008 spent of 0.005: both finished
    assert "has spent 0.008 USD" in refused(budgeted).body["message"]


@pytest.mark.parametrize("period, before, after", [
    ("month", "2023-11-30 23:59:50", "2023-12-01 00:00:00"),
    ("week", "2023-12-03 23:59:50", "2023-12-04 00:00:00"),  # Sunday, then Monday
    ("day", "2023-12-05 23:59:50", "2023-12-06 00:00:00"),
])
def test_a_budget_resets_when_its_period_ends(budgeted, clock, period, before, after):
    budgeted.update("users", budgeted.user, budget_period=period)
    clock[0] = at(before)
    for _ in range(3):
        call(budgeted)
    assert refused(budgeted).response.headers["Retry-After"] == "10"
    clock[0] = at(after) - 0.5
    refused(budgeted)
    clock[0] = at(after)
    assert [call(budgeted).headers[REMAINING] for _ in range(3)] == ["0.01", "0.006", "0.002"]
    refused(budgeted)


def test_a_total_budget_never_resets(budgeted, clock):
    budgeted.update("users", budgeted.user, budget_period="total")
    for _ in range(3):
        call(budgeted)
    over = refused(budgeted)
    assert "Retry-After" not in over.response.headers and over.body["message"].endswith("0.01 USD in total.")
    clock[0] += 400 * 86400
    refused(budgeted)


def forget_spends(app):
    """Lose every budget's count, as when limits.db is deleted."""
    limiter = services(app).limiter
    limiter.writer.run(lambda: limiter.counts.execute(f"DELETE FROM {limiter.counts.WINDOWS} WHERE kind LIKE ?",
                                                      ("spend-%",)))


def test_a_lost_count_starts_again_from_the_rows(budgeted):
    own = budgeted.create("keys", user=budgeted.user.id, budget=1)
    call(budgeted, own)  # counts on its key, never on the user
    call(budgeted)
    call(budgeted)
    budgeted.rows(3)
    forget_spends(budgeted.app)
    assert call(budgeted).headers[REMAINING] == "0.002"
    assert call(budgeted, own).headers[REMAINING] == "0.996"
    refused(budgeted)


@pytest.mark.sqlite  # app.py backup and restore are SQLite's
def test_after_a_restore_the_spend_starts_again_from_the_restored_rows(budgeted, data_dir, tmp_path):
    call(budgeted)
    budgeted.rows(1)
    taken = tmp_path / "taken.db"
    assert main(["--dir", str(data_dir), "backup", str(taken)]) == 0
    call(budgeted)
    call(budgeted)
    refused(budgeted)
    budgeted.rows(4)
    stop(budgeted.app)
    assert main(["--dir", str(data_dir), "restore", str(taken)]) == 0
    app = create_app({"DATA_DIR": str(data_dir)})
    try:
        again = app.test_client().post("/v1/chat/completions", json={"model": "gpt", "messages": HI},
                                       headers={"Authorization": f"Bearer {budgeted.key}"})
        assert again.status_code == 200 and again.headers[REMAINING] == "0.006"  # one call in the backup
    finally:
        stop(app)


def test_a_budget_set_mid_month_counts_the_calls_already_made(gateway):
    gateway.update("models", gateway.model, **COSTS_0_004)
    call(gateway)
    call(gateway)
    gateway.rows(2)
    gateway.update("users", gateway.user, budget=0.01)
    assert call(gateway).headers[REMAINING] == "0.002"


def test_the_spend_is_on_the_users_and_keys_pages(budgeted, admin):
    own = budgeted.create("keys", user=budgeted.user.id, label="own budget", budget=0.005, budget_period="week")
    call(budgeted)
    call(budgeted, own)
    budgeted.rows(2)
    user_page = admin.get(f"/_/users/details/?id={budgeted.user.id}").get_data(as_text=True)
    assert "0.004 of 0.01 USD this month" in user_page
    keys = services(budgeted.app).catalog.fresh().keys
    own_id = next(row.id for row in keys.values() if row.label == "own budget")
    key_page = admin.get(f"/_/keys/details/?id={own_id}").get_data(as_text=True)
    assert "0.004 of 0.005 USD this week" in key_page
    listing = admin.get("/_/keys/").get_data(as_text=True)
    assert "0.004 of 0.005 USD this week" in listing and "0.004 USD this month" in listing  # the other key
    call(budgeted, own)
    assert "budget reached" in admin.get(f"/_/keys/details/?id={own_id}").get_data(as_text=True)


def test_budgets_are_validated(api, gateway):
    user = gateway.user.id
    response = api.patch(f"/api/collections/users/records/{user}", json={"budget": -1, "budget_period": "year"})
    assert response.status_code == 400
    assert set(response.json["data"]) == {"budget", "budget_period"}
    response = api.patch(f"/api/collections/users/records/{user}", json={"budget": "2.50", "budget_period": "week"})
    assert (response.json["budget"], response.json["budget_period"]) == (2.5, "week")


@pytest.mark.slow
def test_a_budget_holds_across_two_gunicorn_workers_and_a_restart(budgeted, served):
    """The Docker image's command, two gevent workers: three calls fit, and every
    later call is refused whichever worker takes it, also after the server restarts."""
    from .test_metrics import KEPT_IN, TOKEN, image_command, per_process

    server = served(image_command(), PROMPTPROXY_METRICS_TOKEN=TOKEN)
    (directory,) = [match.group(1) for match in server.wait_for_log(KEPT_IN)]
    budgeted.url = server.url

    def one(_):  # a connection of its own, so either worker may take it
        try:
            return call(budgeted, Connection="close").headers[REMAINING]
        except openai.RateLimitError as over:
            assert over.code == "budget_exceeded"
            return None

    assert [one(n) for n in range(3)] == ["0.01", "0.006", "0.002"]
    before = per_process(directory)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(40))) == {None}
    after = per_process(directory)
    refused_by = {pid: after[pid] - before.get(pid, 0) for pid in after}
    assert len(refused_by) == 2 and all(count > 0 for count in refused_by.values()), refused_by
    assert len(budgeted.upstream.requests) == 3
    server.stop()
    budgeted.url = served(image_command()).url
    assert one(0) is None
