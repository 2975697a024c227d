"""Test doubles shared by the client tests: a clock whose sleep() advances it, and a
deterministic jitter source, so no test ever really sleeps."""

from __future__ import annotations


class FakeClock:
    """Wall-clock seconds that only move when someone sleeps."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.sleeps.append(seconds)
        self.now += seconds


class FixedRandom:
    """``uniform(a, b)`` returns the same fraction of the range every time."""

    def __init__(self, fraction: float = 0.0) -> None:
        self.fraction = fraction
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return a + (b - a) * self.fraction
