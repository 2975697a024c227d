"""Klaviyo-style fixed-window rate limiting for the sandbox (its own; not the client's).

Klaviyo counts requests per account and operation in fixed windows: a burst window of
1 s and a steady window of 60 s (some operations also have a daily cap). A request is
allowed only when every window still has room; only allowed requests are counted.

``time_scale`` shrinks every window: with 0.1 the burst window lasts 0.1 s and the steady
window 6 s, so benchmarks can hit the steady limit without waiting whole minutes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class WindowState:
    name: str
    limit: int
    window_seconds: int
    remaining: int
    reset_after: float  # real (scaled) seconds until this window starts over


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    windows: tuple[WindowState, ...]
    retry_after: float = 0.0  # real seconds until the blocking window resets

    def tightest(self) -> WindowState | None:
        """The window closest to exhaustion (ties: the shorter window)."""
        if not self.windows:
            return None
        return min(self.windows, key=lambda w: (w.remaining, w.window_seconds))


class FixedWindowLimiter:
    """Thread-safe fixed-window counters keyed by (operation, window name)."""

    def __init__(self, *, time_scale: float = 1.0, clock: Callable[[], float] | None = None):
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self._clock = clock or time.monotonic
        self._lock = threading.Lock()
        # (operation, window name) -> (window index, count)
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def hit(self, operation: str, limits: dict[str, tuple[int, int]]) -> RateDecision:
        """Count one request against every window of ``operation`` if all have room."""
        now = self._clock()
        with self._lock:
            current: list[tuple[str, int, int, int, int, float]] = []
            blocked_for = 0.0
            for name, (limit, seconds) in limits.items():
                length = seconds * self.time_scale
                index = math.floor(now / length)
                stored_index, count = self._counts.get((operation, name), (index, 0))
                if stored_index != index:
                    count = 0
                reset_after = (index + 1) * length - now
                if count >= limit:
                    blocked_for = max(blocked_for, reset_after)
                current.append((name, limit, seconds, index, count, reset_after))
            allowed = blocked_for == 0.0
            windows = []
            for name, limit, seconds, index, count, reset_after in current:
                if allowed:
                    count += 1
                    self._counts[(operation, name)] = (index, count)
                windows.append(
                    WindowState(name, limit, seconds, max(limit - count, 0), reset_after)
                )
            return RateDecision(allowed, tuple(windows), blocked_for)
