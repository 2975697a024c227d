"""Failures the sandbox injects on demand, so retries and idempotency get exercised.

Each API request draws one outcome from the configured shares (they must add up to at
most 1): an injected 429 (with Retry-After), 500 or 503, a slow answer (after
``slow_seconds``, meant to exceed the client's read timeout), or a dropped connection
(closed with no answer). Slow and dropped requests are still processed with probability
``process_probability`` before the client is let down, as a real network failure after the
request reached Klaviyo would be: only ``unique_id`` keeps the retry from doubling the event.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

OUTCOMES = ("429", "500", "503", "slow", "drop")


@dataclass(frozen=True)
class FaultConfig:
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_slow: float = 0.0
    rate_drop: float = 0.0
    slow_seconds: float = 35.0  # longer than the client's default read timeout (30 s)
    latency: float = 0.0  # seconds added to every API request
    process_probability: float = 0.5  # share of slow/dropped requests processed anyway
    retry_after: int = 1  # Retry-After of injected 429s, in seconds
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "rate_429",
            "rate_500",
            "rate_503",
            "rate_slow",
            "rate_drop",
            "process_probability",
        ):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{name} must be a number between 0 and 1, not {value!r}")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value!r}")
        total = self.rate_429 + self.rate_500 + self.rate_503 + self.rate_slow + self.rate_drop
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {total:g}; at most 1 is possible")
        for name in ("slow_seconds", "latency"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number of seconds, not {value!r}")
        if not isinstance(self.retry_after, int) or self.retry_after < 0:
            raise ValueError(
                f"retry_after must be a non-negative integer, not {self.retry_after!r}"
            )
        if self.seed is not None and not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, not {self.seed!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultConfig:
        """Build from JSON (POST /__sandbox__/faults); unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ValueError("faults must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault settings {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    def updated(self, **changes: Any) -> FaultConfig:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def active(self) -> bool:
        return (self.rate_429 + self.rate_500 + self.rate_503 + self.rate_slow + self.rate_drop) > 0


@dataclass(frozen=True)
class FaultDecision:
    outcome: str | None  # one of OUTCOMES, or None for a normal answer
    process: bool  # whether the request is processed (always True when outcome is None)


class FaultInjector:
    """Draws an outcome per request from a seeded RNG (thread-safe)."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self._config = config
            self._random = random.Random(config.seed)

    @property
    def config(self) -> FaultConfig:
        return self._config

    def decide(self) -> FaultDecision:
        with self._lock:
            config = self._config
            if not config.active:
                return FaultDecision(None, True)
            draw = self._random.random()
            threshold = 0.0
            for outcome in OUTCOMES:
                threshold += getattr(config, f"rate_{outcome}")
                if draw < threshold:
                    processed = outcome in ("slow", "drop") and (
                        self._random.random() < config.process_probability
                    )
                    return FaultDecision(outcome, processed)
            return FaultDecision(None, True)
