"""Flush throughput against Klaviyo's real bulk-event limit, time-scaled.

The sandbox (its own process) enforces Klaviyo's per-endpoint limits with windows
scaled by time_scale; the client is given the same scale through its rate limiter's
windows (``RateLimiter(limits=...)``; there is no scale setting). The ceiling for bulk
events is 1000 events x 150 requests per scaled minute. A backlog larger than one
window's ceiling is flushed; the figure is the events accepted in requests started
within one scaled minute from the first, as a share of the ceiling. Target >= 95%.

The default scale is 1.0 (Klaviyo's real windows, 2,500 events/s): with a small scale
such as 0.05 the ceiling would be 50,000 events/s, far above what one flusher process can
prepare on 2 cores, and the share would measure the flusher's CPU instead of its pacing
(see docs/benchmarks.md). ``--time-scale 0.8`` (3,125 events/s) shows the headroom.
"""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from bench.common import (
    count_events,
    parse_bench_args,
    print_header,
    print_result,
    sandbox_process,
    sandbox_state,
    seed_placed_orders,
    setup_django,
    sized,
)

DEFAULT_TIME_SCALE = 1.0
EVENTS_PER_REQUEST = 1000
STEADY_REQUESTS = 150
TARGET = 0.95


def seed_backlog(count: int) -> None:
    """Rows as the outbox writer stores them, inserted in bulk (the writer's validation is
    not what this benchmark measures)."""
    seed_placed_orders(count, "tp")


class TimedSession(requests.Session):
    """Records when each bulk-event request left (after the client's rate limiter), whether
    Klaviyo accepted it and how many events it carried, read from the request itself so
    that no method of the client is assumed."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[float, int, int]] = []  # (start, status, events)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        started = time.monotonic()
        response = super().request(method, url, *args, **kwargs)
        if "event-bulk-create-jobs" in url:
            body = kwargs.get("data") or kwargs.get("json") or b"{}"
            events = count_events(json.loads(body) if isinstance(body, (bytes, str)) else body)
            self.sent.append((started, response.status_code, events))
        return response


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--time-scale", type=float)
    args = parse_bench_args(parser)
    # Smoke: a 3 s window and 3,000 events.
    time_scale = args.time_scale or sized(DEFAULT_TIME_SCALE, 0.05)
    setup_django(args.db)
    from django_klaviyo.client import KlaviyoClient
    from django_klaviyo.client.ratelimit import OPERATION_LIMITS, RateLimiter, Window
    from django_klaviyo.flush import flush_outbox

    print_header(f"flush throughput vs the bulk-event ceiling, time_scale {time_scale} ({args.db})")
    window = 60.0 * time_scale
    ceiling_per_window = EVENTS_PER_REQUEST * STEADY_REQUESTS
    backlog = sized(ceiling_per_window + 20 * EVENTS_PER_REQUEST, 3 * EVENTS_PER_REQUEST)
    seed_backlog(backlog)
    scaled = {
        op: tuple(Window(w.limit, w.seconds * time_scale) for w in windows)
        for op, windows in OPERATION_LIMITS.items()
    }
    with sandbox_process(time_scale=time_scale) as url:
        limiter = RateLimiter(scope="bench-throughput", limits=scaled)
        session = TimedSession()
        client = KlaviyoClient(api_url=url, rate_limiter=limiter, session=session)
        start = time.monotonic()
        report = flush_outbox(client=client, max_seconds=window * 1.2)
        elapsed = time.monotonic() - start
        state = sandbox_state(url)
    accepted = [(started, events) for started, status, events in session.sent if status == 202]
    assert accepted, f"Klaviyo accepted no bulk-event request: {report.summary_lines()}"
    first = accepted[0][0]
    in_window = sum(events for started, events in accepted if started < first + window)
    share = in_window / ceiling_per_window
    throttled = state["requests"].get("bulk_create_events", {}).get("429", 0)
    print_result(
        f"flush_throughput_{args.db}",
        time_scale=time_scale,
        window_s=window,
        ceiling_events_per_s=ceiling_per_window / window,
        events_in_first_window=in_window,
        achieved_events_per_s=in_window / window,
        RATIO=share,
        target=f">= {TARGET:.0%} of the ceiling",
        met=share >= TARGET,
        throttled_429=throttled,
        sent=report.sent,
        elapsed_s=elapsed,
    )


if __name__ == "__main__":
    main()
