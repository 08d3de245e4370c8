"""The order in which candidates are tried, and the shared cooldown state, as units."""

import random
from types import SimpleNamespace

import pytest

from promptproxy import routing
from promptproxy.accounting.limits import Limiter
from promptproxy.accounting.upstreams import Upstreams
from promptproxy.data.catalog import Snapshot


def model(id_, api, name=None, weight=1, fallbacks=()):
    return SimpleNamespace(id=id_, api=api, name=name, weight=weight, fallbacks=list(fallbacks))


def snapshot(*models):
    snap = Snapshot()
    for m in models:
        snap.models[m.id] = m
        snap.model_list.append(m)
        if m.name:
            snap.models.setdefault(m.name, m)
            snap.groups.setdefault(m.name, []).append(m)
    return snap


def test_candidates_are_the_group_by_weight_then_each_fallback_with_its_group():
    a, b = model("a", "x", "pool", fallbacks=["c"]), model("b", "y", "pool", weight=0, fallbacks=["d"])
    c, c2, d = model("c", "z", "cheap"), model("c2", "w", "cheap"), model("d", "v")
    snap = snapshot(a, b, c, c2, d)
    order = routing.candidates(snap, snap.groups["pool"], lambda m: True, random.Random(1))
    assert [m.id for m in order] == ["a", "b", "c", "c2", "d"]
    assert [m.id for m in routing.candidates(snap, snap.groups["pool"], lambda m: m.id != "a")] == ["b", "d"]


def test_weights_draw_in_proportion_and_zero_comes_last():
    a, b, z = model("a", "x", weight=3), model("b", "y", weight=1), model("z", "q", weight=0)
    rng = random.Random(7)
    firsts = [routing.by_weight([a, b, z], rng)[0].id for _ in range(4000)]
    assert 0.72 <= firsts.count("a") / 4000 <= 0.78
    assert all(routing.by_weight([a, b, z], rng)[-1] is z for _ in range(50))


def test_members_cooling_down_are_skipped_unless_all_are():
    a, b = model("a", "x"), model("b", "y")
    assert routing.without_cooling([a, b], {"x": 50.0}) == [b]
    assert routing.without_cooling([a, b], {"x": 50.0, "y": 20.0}) == [b, a]


@pytest.mark.parametrize(("header", "seconds"), [
    ("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), ("", None), ("nan", None), ("1e9", 86400.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
])
def test_retry_after_is_read_as_seconds_or_a_date(header, seconds):
    assert routing.retry_after(header) == seconds


def test_backoff_honours_retry_after_else_doubles_up_to_2_s():
    assert [routing.backoff(n) for n in range(5)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert routing.backoff(0, 3.0) == 3.0


def test_three_failures_within_60_s_start_a_cooldown_and_a_429_at_once(tmp_path):
    now = [1000.0]
    limiter = Limiter(str(tmp_path / "limits.db"))
    upstreams = Upstreams(limiter, clock=lambda: now[0])
    api = SimpleNamespace(id="api1", name="Local", cooldown=30)
    try:
        assert upstreams.failed(api, "HTTP 503") is None
        now[0] += 61  # the first failure is out of the window
        assert upstreams.failed(api, "HTTP 503") is None
        assert upstreams.failed(api, "HTTP 502") is None
        assert upstreams.failed(api, "timeout") == 1091.0
        assert upstreams.cooling(["api1", "other"]) == {"api1": 1091.0}
        now[0] = 1091.5
        assert upstreams.cooling(["api1"]) == {}
        assert upstreams.failed(api, "HTTP 429", retry_after=120) == now[0] + 120
        state = upstreams.state()["api1"]
        assert state["until"] == now[0] + 120
        assert [e["error"] for e in state["errors"]] == ["HTTP 429", "timeout", "HTTP 502", "HTTP 503", "HTTP 503"]
        upstreams.clear("api1")
        assert upstreams.cooling(["api1"]) == {} and upstreams.state() == {}
    finally:
        limiter.stop()
