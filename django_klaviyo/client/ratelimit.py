"""Proactive, cross-process rate limiting per Klaviyo operation.

Klaviyo limits every operation with a burst (1 s) and a steady (60 s) window, some also
daily, counted per account in fixed windows whose alignment we cannot see. The only
safe guarantee is a sliding one: in ANY interval of a window's length at most ``limit``
requests start. A sliding log of start times per operation and window gives exactly
that while letting throughput reach the limit: a request may start at ``t`` when the
``limit``-th most recent start is at least one window old. Each log is truncated to
``limit`` entries, so memory stays bounded.

The logs live in Django's cache (alias from the RATE_LIMIT_CACHE setting) so that all
processes of a deployment share them; LocMem suffices for one process, Redis or the
database cache serve many. A short ``cache.add()`` lock (plus a ``threading.Lock`` in
process) makes read-modify-write of a log atomic.

Klaviyo's ``RateLimit-Remaining``/``RateLimit-Reset`` response headers and ``Retry-After``
on a 429 put an operation on hold for every process, on top of the logs.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import re
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoRateLimitError

logger = logging.getLogger("django_klaviyo.client")


@dataclass(frozen=True)
class Window:
    limit: int
    seconds: float


_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smhd])\s*$")


def parse_rate(text: str) -> Window:
    """``"350/s"`` -> ``Window(350, 1.0)``: the notation of the spec's x-klaviyo-ratelimit."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"Not a rate like '75/s': {text!r}")
    return Window(int(match.group(1)), _UNIT_SECONDS[match.group(2)])


def _windows(burst: str, steady: str, daily: str | None = None) -> tuple[Window, ...]:
    rates = (burst, steady) if daily is None else (burst, steady, daily)
    return tuple(parse_rate(r) for r in rates)


# From x-klaviyo-ratelimit of revision 2026-07-15, one entry per operation the client
# calls; tests/client/test_client_ratelimit.py checks it against the spec file.
OPERATION_LIMITS: dict[str, tuple[Window, ...]] = {
    "create_event": _windows("350/s", "3500/m"),
    "bulk_create_events": _windows("10/s", "150/m"),
    "create_or_update_profile": _windows("75/s", "750/m"),
    "get_profiles": _windows("75/s", "750/m"),
    "get_profile": _windows("75/s", "750/m"),
    "update_profile": _windows("75/s", "750/m"),
    "bulk_import_profiles": _windows("10/s", "150/m"),
    "get_bulk_import_profiles_job": _windows("10/s", "150/m"),
    "get_errors_for_bulk_import_profiles_job": _windows("10/s", "150/m"),
    "bulk_subscribe_profiles": _windows("75/s", "750/m"),
    "bulk_unsubscribe_profiles": _windows("75/s", "750/m"),
    "create_list": _windows("10/s", "150/m", "150/d"),
    "get_lists": _windows("75/s", "750/m"),
    "add_profiles_to_list": _windows("10/s", "150/m"),
    "remove_profiles_from_list": _windows("10/s", "150/m"),
    "get_profiles_for_list": _windows("75/s", "750/m"),
    "get_campaigns": _windows("10/s", "150/m"),
    "get_flows": _windows("3/s", "60/m"),
    "create_webhook": _windows("1/s", "15/m"),
    "get_webhooks": _windows("1/s", "15/m"),
    "get_webhook": _windows("1/s", "15/m"),
    "delete_webhook": _windows("1/s", "15/m"),
    "get_webhook_topics": _windows("1/s", "15/m"),
    "request_profile_deletion": _windows("3/s", "60/m"),
    # Catalog bulk jobs: creating a job is 75/s; polling it depends on the kind.
    **{
        op: _windows("75/s", "750/m")
        for op in (
            "bulk_create_catalog_items",
            "bulk_update_catalog_items",
            "bulk_delete_catalog_items",
            "bulk_create_catalog_variants",
            "bulk_update_catalog_variants",
            "bulk_delete_catalog_variants",
            "bulk_create_catalog_categories",
            "bulk_update_catalog_categories",
            "bulk_delete_catalog_categories",
            "get_bulk_create_catalog_items_job",
            "get_bulk_update_catalog_items_job",
            "get_bulk_create_variants_job",
            "get_bulk_update_variants_job",
            "bulk_create_coupon_codes",
            "get_bulk_create_coupon_codes_job",
        )
    },
    **{
        op: _windows("350/s", "3500/m")
        for op in (
            "get_bulk_delete_catalog_items_job",
            "get_bulk_delete_variants_job",
            "get_bulk_create_categories_job",
            "get_bulk_update_categories_job",
            "get_bulk_delete_categories_job",
            "create_back_in_stock_subscription",
        )
    },
    "create_coupon": _windows("3/s", "60/m"),
    # Insights (insights/reports.py): the reporting API is the tightest Klaviyo has.
    "get_metrics": _windows("10/s", "150/m"),
    "query_campaign_values": _windows("1/s", "2/m", "225/d"),
    "query_flow_values": _windows("1/s", "2/m", "225/d"),
    "query_flow_series": _windows("1/s", "2/m", "225/d"),
    "query_metric_aggregates": _windows("3/s", "60/m"),
    # Segments (klaviyo_sync segments).
    "get_segments": _windows("75/s", "750/m"),
    "get_profiles_for_segment": _windows("75/s", "750/m"),
    "query_segment_series": _windows("1/s", "2/m", "225/d"),
}

# Requests whose limits the spec states in an operation's description rather than in its
# x-klaviyo-ratelimit: an additional field that costs more than the plain read. Keyed
# "operation:variant"; each has its own windows.
VARIANT_LIMITS: dict[str, tuple[Window, ...]] = {
    # "Rate limits when using the additional-fields[segment]=profile_count parameter".
    "get_segment:profile_count": _windows("1/s", "15/m"),
}

# One in-process lock per cache alias: threads of one process queue here instead of
# spinning on the cache lock.
_PROCESS_LOCKS: dict[str, threading.Lock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _process_lock(alias: str) -> threading.Lock:
    with _PROCESS_LOCKS_GUARD:
        return _PROCESS_LOCKS.setdefault(alias, threading.Lock())


def account_scope(api_key: str) -> str:
    """Limits are per Klaviyo account: key the shared state by a digest of the API key
    (never the key itself, which must not reach the cache)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]


def _first_number(value: str | None) -> float | None:
    """``"75, 75;w=1, 750;w=60"`` -> 75.0 (the IETF draft's leading value)."""
    if not value:
        return None
    match = re.match(r"\s*(\d+(?:\.\d+)?)", value)
    return float(match.group(1)) if match else None


class RateLimiter:
    """Sliding-log limiter shared through the Django cache.

    ``clock`` must be comparable across processes (wall-clock seconds, the default);
    ``sleep`` is called with the seconds to wait. Tests inject a fake clock whose
    ``sleep`` advances it.
    """

    def __init__(
        self,
        *,
        cache_alias: str | None = None,
        scope: str = "default",
        limits: Mapping[str, tuple[Window, ...]] | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        lock_timeout: float = 2.0,
    ) -> None:
        self.cache_alias = cache_alias or klaviyo_settings.RATE_LIMIT_CACHE
        self.scope = scope
        self.limits = dict({**OPERATION_LIMITS, **VARIANT_LIMITS} if limits is None else limits)
        self.clock = clock or time.time
        self.sleep = sleep or time.sleep
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cache_alias={self.cache_alias!r}, scope={self.scope!r})"

    @property
    def cache(self) -> Any:
        return caches[self.cache_alias]

    def windows(self, operation: str) -> tuple[Window, ...]:
        try:
            return self.limits[operation]
        except KeyError:
            raise LookupError(
                f"No rate limit is known for Klaviyo operation {operation!r}; add it to "
                "OPERATION_LIMITS."
            ) from None

    def _key(self, operation: str) -> str:
        return f"django_klaviyo:ratelimit:{self.scope}:{operation}"

    @contextmanager
    def _locked(self, operation: str) -> Iterator[None]:
        key = self._key(operation) + ":lock"
        token = uuid.uuid4().hex
        with _process_lock(self.cache_alias):
            # Real time, not the injected clock: the lock guards real concurrency.
            deadline = time.monotonic() + self.lock_timeout
            acquired = self.cache.add(key, token, timeout=max(1, int(self.lock_timeout) + 1))
            while not acquired:
                if time.monotonic() >= deadline:
                    # The holder died mid-update; its lock expires with the cache
                    # timeout anyway, so go ahead rather than stall every process.
                    logger.warning("Rate-limit lock %s looks stale; proceeding.", key)
                    break
                time.sleep(0.005)
                acquired = self.cache.add(key, token, timeout=max(1, int(self.lock_timeout) + 1))
            try:
                yield
            finally:
                if acquired and self.cache.get(key) == token:
                    self.cache.delete(key)

    def _load(self, operation: str) -> dict[str, Any]:
        state = self.cache.get(self._key(operation))
        return state if isinstance(state, dict) else {}

    def _store(self, operation: str, state: dict[str, Any], now: float) -> None:
        longest = max(w.seconds for w in self.windows(operation))
        hold = max(0.0, float(state.get("hold", 0.0)) - now)
        self.cache.set(self._key(operation), state, timeout=int(max(longest, hold)) + 60)

    @staticmethod
    def _live(log: Any, window: Window, now: float) -> array:
        # A start at e still counts at now while e > now - window: intervals are
        # half-open, [s, s + window). Logs are arrays of doubles: they pickle ~50x
        # faster than lists of floats, which matters at 350 requests a second.
        if not isinstance(log, array):
            log = array("d", log)
        cut = bisect.bisect_right(log, now - window.seconds)
        return log[cut:]

    def _wait(self, state: dict[str, Any], windows: tuple[Window, ...], now: float) -> float:
        wait = float(state.get("hold", 0.0)) - now
        logs = state.get("logs", {})
        for window in windows:
            log = self._live(logs.get(str(window.seconds), ()), window, now)
            if len(log) >= window.limit:
                wait = max(wait, log[-window.limit] + window.seconds - now)
        return wait

    def wait_time(self, operation: str) -> float:
        """Seconds until ``operation`` may start (0 when it may start now)."""
        windows = self.windows(operation)
        with self._locked(operation):
            return max(0.0, self._wait(self._load(operation), windows, self.clock()))

    def acquire(self, operation: str, *, max_wait: float | None = None) -> float:
        """Block until a request of ``operation`` may start, record its start, and return
        the seconds waited. Raises ``KlaviyoRateLimitError`` (nothing sent) when the wait
        would exceed ``max_wait``, so the caller can reschedule instead of blocking."""
        windows = self.windows(operation)
        waited = 0.0
        while True:
            with self._locked(operation):
                now = self.clock()
                state = self._load(operation)
                wait = self._wait(state, windows, now)
                if wait <= 0:
                    logs = state.setdefault("logs", {})
                    for window in windows:
                        log = self._live(logs.get(str(window.seconds), ()), window, now)
                        bisect.insort(log, now)
                        logs[str(window.seconds)] = log[-window.limit :]
                    self._store(operation, state, now)
                    return waited
            if max_wait is not None and waited + wait > max_wait:
                raise KlaviyoRateLimitError(
                    f"Klaviyo {operation}: the rate limit allows the next request in "
                    f"{wait:.1f}s, longer than this client waits ({max_wait:.1f}s).",
                    status=429,
                    code="client_rate_limited",
                    title="Rate limit reached (client side).",
                    detail="Reschedule the request; nothing was sent.",
                    retryable=True,
                    retry_after=wait,
                    operation=operation,
                )
            self.sleep(wait)
            waited += wait

    def hold(self, operation: str, seconds: float) -> None:
        """Let no request of ``operation`` start for ``seconds`` (in any process)."""
        if seconds <= 0:
            return
        self.windows(operation)
        with self._locked(operation):
            now = self.clock()
            state = self._load(operation)
            state["hold"] = max(float(state.get("hold", 0.0)), now + seconds)
            self._store(operation, state, now)

    def observe(self, operation: str, headers: Mapping[str, str]) -> None:
        """Read Klaviyo's RateLimit-* headers: with nothing Remaining, hold until Reset."""
        remaining = _first_number(headers.get("RateLimit-Remaining"))
        if remaining is None or remaining > 0:
            return
        reset = _first_number(headers.get("RateLimit-Reset"))
        if reset:
            self.hold(operation, reset)


class UnlimitedRateLimiter(RateLimiter):
    """Never waits; for tests of code that uses the client and for the sandbox."""

    def wait_time(self, operation: str) -> float:
        return 0.0

    def acquire(self, operation: str, *, max_wait: float | None = None) -> float:
        return 0.0

    def hold(self, operation: str, seconds: float) -> None:
        return None

    def observe(self, operation: str, headers: Mapping[str, str]) -> None:
        return None
