"""Fixtures shared by the flusher tests (a pytest plugin, registered in conftest.py).

- ``clock``: a ``FakeClock``, the flusher's and the client's wall clock; it moves only
  when something sleeps or the test advances it, so no test really waits.
- ``klaviyo_client``: a ``KlaviyoClient`` that sleeps and times its rate limits on ``clock``.
  (Not ``client``: that name is pytest-django's Django test client.)
- ``mocked``: a ``responses`` mock of Klaviyo's API; a test registers the answers it needs.
- ``fresh_rate_limits``: empties the default cache, where rate-limit windows and holds live.
  Not autouse: a module that wants it says ``pytest.mark.usefixtures("fresh_rate_limits")``.
  ``isolated_rate_limits`` also empties it after the test, for tests whose rate-limit logs
  (on a fake clock) must not reach the modules that run next.
- ``flush(client, clock, **kwargs)``: ``flush_outbox`` on the fake clock, without jitter.
- ``fast_client()`` and ``flush_now(**options)``: for tests that only need the rows sent
  (to the sandbox or a mock): no rate-limit waits, no retries, no sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import responses
from django.core.cache import caches
from django.utils import timezone

from django_klaviyo.client import KlaviyoClient, UnlimitedRateLimiter
from django_klaviyo.flush import flush_outbox


class FakeClock:
    """Wall clock for the flusher and the client; moves only when told."""

    def __init__(self) -> None:
        # A little ahead of the real clock, so rows created during the test are due.
        self.now = timezone.now() + timedelta(seconds=5)
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def monotonic(self) -> float:
        return self.now.timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def klaviyo_client(clock: FakeClock) -> KlaviyoClient:
    return KlaviyoClient(sleep=clock.sleep, clock=clock.monotonic)


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def fresh_rate_limits() -> None:
    """Rate-limit windows and holds live in the cache; each test starts from none."""
    caches["default"].clear()


@pytest.fixture
def isolated_rate_limits(fresh_rate_limits: None) -> Iterator[None]:
    """``fresh_rate_limits``, and the cache emptied again after the test."""
    yield
    caches["default"].clear()


def flush(client: KlaviyoClient, clock: FakeClock, **kwargs: Any) -> Any:
    """One ``flush_outbox`` pass on the fake clock; jitter is fixed so waits are exact."""
    kwargs.setdefault("jitter", lambda: 1.0)
    return flush_outbox(client=client, clock=clock, sleep=clock.sleep, **kwargs)


def fast_client() -> KlaviyoClient:
    """A client that never waits: no rate limiter, one attempt, no sleeps."""
    return KlaviyoClient(
        rate_limiter=UnlimitedRateLimiter(), sleep=lambda seconds: None, max_attempts=1
    )


def flush_now(**options: Any) -> Any:
    """One ``flush_outbox`` pass through ``fast_client()``, without sleeping between rounds."""
    return flush_outbox(client=fast_client(), sleep=lambda seconds: None, **options)
