"""Proactive rate limiting: sliding guarantees, throughput, sharing, holds, the spec table."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
import responses
from django.core.cache import caches

from django_klaviyo.client import KlaviyoClient
from django_klaviyo.client.ratelimit import (
    OPERATION_LIMITS,
    RateLimiter,
    Window,
    account_scope,
    parse_rate,
)
from django_klaviyo.exceptions import KlaviyoRateLimitError
from django_klaviyo.testing.openapi import SPEC_PATH
from tests.fakes import FakeClock, FixedRandom

SPEC_SUBSET = SPEC_PATH
API_KEY = "pk_ratelimit_test_key_0123456789"


def max_in_any_interval(times: list[float], seconds: float) -> int:
    """The most starts inside any half-open interval [s, s + seconds)."""
    times = sorted(times)
    best = j = 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + seconds:
            j += 1
        best = max(best, j - i)
    return best


@pytest.fixture(autouse=True)
def _clear_cache():
    caches["default"].clear()
    yield
    caches["default"].clear()


def limiter(clock: FakeClock, limits=None, scope: str | None = None) -> RateLimiter:
    return RateLimiter(
        scope=scope or uuid.uuid4().hex, limits=limits, clock=clock, sleep=clock.sleep
    )


def test_table_equals_the_spec_for_every_operation():
    spec = json.loads(SPEC_SUBSET.read_text())
    from_spec = {}
    for item in spec["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                raw = operation["x-klaviyo-ratelimit"]
                rates = [raw["burst"], raw["steady"]] + ([raw["daily"]] if "daily" in raw else [])
                from_spec[operation["operationId"]] = tuple(parse_rate(r) for r in rates)
    assert set(OPERATION_LIMITS) <= set(from_spec)
    for operation, windows in OPERATION_LIMITS.items():
        assert windows == from_spec[operation], operation
    assert OPERATION_LIMITS["create_event"] == (Window(350, 1.0), Window(3500, 60.0))
    assert OPERATION_LIMITS["create_list"][2] == Window(150, 86400.0)


def test_parse_rate_rejects_garbage():
    assert parse_rate("15/m") == Window(15, 60.0)
    with pytest.raises(ValueError):
        parse_rate("fast")


def test_thousand_create_events_respect_burst_and_steady_in_any_sliding_window():
    clock = FakeClock()
    starts: list[float] = []
    client = KlaviyoClient(
        API_KEY, clock=clock, sleep=clock.sleep, random=FixedRandom(), max_attempts=1
    )
    with responses.RequestsMock() as mock:
        mock.add_callback(
            responses.POST,
            "https://a.klaviyo.com/api/events",
            callback=lambda request: starts.append(clock()) or (202, {}, ""),
        )
        for n in range(1000):
            client.create_event(metric="Viewed", profile={"external_id": str(n)}, unique_id=str(n))
    assert len(starts) == 1000
    assert max_in_any_interval(starts, 1.0) <= 350
    assert max_in_any_interval(starts, 60.0) <= 3500
    # Throughput approaches the limit: 350 + 350 + 300 in three consecutive seconds.
    assert max_in_any_interval(starts, 1.0) == 350
    assert starts[-1] - starts[0] == pytest.approx(2.0)


def test_steady_window_is_sliding_and_reaches_its_limit():
    clock = FakeClock()
    rl = limiter(clock, limits={"op": (Window(5, 1.0), Window(20, 60.0))})
    starts = []
    for _ in range(100):
        rl.acquire("op")
        starts.append(clock())
    assert max_in_any_interval(starts, 1.0) == 5
    assert max_in_any_interval(starts, 60.0) == 20
    # The 21st start waits for the 1st to be one minute old, not for a "next minute".
    assert starts[20] - starts[0] == pytest.approx(60.0)
    assert starts[4] == starts[0] and starts[5] == pytest.approx(starts[0] + 1.0)


def test_real_create_event_table_steady_window_over_7001_starts():
    clock = FakeClock()
    rl = limiter(clock)
    starts = []
    for _ in range(7001):
        rl.acquire("create_event")
        starts.append(clock())
    assert max_in_any_interval(starts, 1.0) == 350
    assert max_in_any_interval(starts, 60.0) == 3500
    assert starts[3500] - starts[0] == pytest.approx(60.0)


def test_two_limiters_on_one_cache_share_the_budget_like_two_processes():
    clock = FakeClock()
    limits = {"op": (Window(3, 1.0), Window(100, 60.0))}
    first = limiter(clock, limits, scope="acct")
    second = limiter(clock, limits, scope="acct")
    starts = []
    for n in range(12):
        (first if n % 2 else second).acquire("op")
        starts.append(clock())
    assert max_in_any_interval(starts, 1.0) == 3
    other_account = limiter(clock, limits, scope="other")
    before = clock()
    other_account.acquire("op")
    assert clock() == before


def test_threads_never_lose_a_recorded_start():
    clock = FakeClock()
    rl = limiter(clock, limits={"op": (Window(1000, 1.0),)})

    def worker():
        for _ in range(50):
            rl.acquire("op")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    state = caches["default"].get(rl._key("op"))
    assert len(state["logs"]["1.0"]) == 200
    assert rl.wait_time("op") == 0.0


def test_hold_and_rate_limit_headers_pause_an_operation():
    clock = FakeClock()
    rl = limiter(clock)
    rl.observe("get_lists", {"RateLimit-Remaining": "3", "RateLimit-Reset": "40"})
    assert rl.wait_time("get_lists") == 0.0
    rl.observe(
        "get_lists",
        {
            "RateLimit-Limit": "75, 75;w=1, 750;w=60",
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": "7",
        },
    )
    assert rl.wait_time("get_lists") == pytest.approx(7.0)
    assert rl.wait_time("get_profiles") == 0.0  # other operations are not held
    start = clock()
    rl.acquire("get_lists")
    assert clock() - start == pytest.approx(7.0)


def test_a_wait_longer_than_max_wait_raises_without_waiting():
    clock = FakeClock()
    rl = limiter(clock)
    rl.hold("create_list", 120)
    with pytest.raises(KlaviyoRateLimitError) as info:
        rl.acquire("create_list", max_wait=60)
    assert info.value.retry_after == pytest.approx(120)
    assert info.value.retryable is True
    assert clock.sleeps == []


def test_unknown_operation_is_a_clear_error():
    with pytest.raises(LookupError, match="no_such_op"):
        limiter(FakeClock()).acquire("no_such_op")


def test_account_scope_hides_the_key():
    scope = account_scope(API_KEY)
    assert API_KEY not in scope and len(scope) == 16
    assert scope != account_scope(API_KEY + "x")
    assert API_KEY not in repr(RateLimiter(scope=scope))
