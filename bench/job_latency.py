"""First order event latency while catalog jobs are processing (issue 23).

Klaviyo keeps bulk jobs "processing" for a while under load. The sandbox (its own process)
is told to keep every bulk job processing for ``--job-seconds`` (30 by default; the
sandbox's ``job_seconds``). The outbox holds a category, an item in it and a variant
of the item (three catalog jobs, each needing the one before) and one Placed Order. The
figure: seconds from the flusher's first request to Klaviyo accepting the order event.
Target: within 5 s (90 s when the flusher waited for each job in line). The run then goes
on until the catalog is settled, and reports that time too.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from bench.common import (
    parse_bench_args,
    print_header,
    print_result,
    sandbox_process,
    setup_django,
    sized,
)

TARGET_SECONDS = 5.0


def seed() -> None:
    """The three catalog rows and the order, as the outbox writer stores them (rules
    version 0: the flusher cleans them once, as it does any row written by hand)."""
    from django.utils import timezone

    from django_klaviyo.models import OutboxEvent

    now = timezone.now()
    attributes = {
        "title": "Mug",
        "description": "A mug.",
        "url": "https://shop.example/mug",
        "price": 12.0,
    }
    rows = [
        OutboxEvent(
            kind="catalog_category",
            payload={
                "op": "upsert",
                "external_id": "kitchen",
                "create": True,
                "attributes": {"name": "Kitchen"},
            },
        ),
        OutboxEvent(
            kind="catalog_item",
            payload={
                "op": "upsert",
                "external_id": "MUG-1",
                "create": True,
                "categories": ["kitchen"],
                "attributes": attributes,
            },
        ),
        OutboxEvent(
            kind="catalog_variant",
            payload={
                "op": "upsert",
                "external_id": "MUG-1-S",
                "create": True,
                "item": "MUG-1",
                "attributes": {**attributes, "sku": "MUG-1-S", "inventory_quantity": 3},
            },
        ),
        OutboxEvent(
            kind="event",
            metric="Placed Order",
            unique_id="order-1",
            profile_key="email:ada@example.com",
            payload={
                "metric": "Placed Order",
                "profile": {"email": "ada@example.com"},
                "properties": {"OrderId": "order-1"},
                "time": now.isoformat(),
                "value": 12.0,
                "value_currency": "USD",
            },
        ),
    ]
    for row in rows:
        row.next_attempt_at = row.created_at = now
    OutboxEvent.objects.bulk_create(rows)


class TimedSession(requests.Session):
    """Records when each request left and, for bulk events, when Klaviyo accepted one."""

    def __init__(self) -> None:
        super().__init__()
        self.first_request: float | None = None
        self.event_accepted: float | None = None

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if self.first_request is None:
            self.first_request = time.monotonic()
        response = super().request(method, url, *args, **kwargs)
        if "event-bulk-create-jobs" in url and response.status_code == 202:
            self.event_accepted = self.event_accepted or time.monotonic()
        return response


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--job-seconds", type=float)
    args = parse_bench_args(parser)
    job_seconds = args.job_seconds if args.job_seconds is not None else sized(30.0, 1.0)
    setup_django(args.db)
    from django_klaviyo.client import KlaviyoClient, UnlimitedRateLimiter
    from django_klaviyo.flush import flush_outbox
    from django_klaviyo.models import OutboxEvent

    print_header(f"first order event with catalog jobs of {job_seconds:g} s ({args.db})")
    seed()
    with sandbox_process(job_seconds=job_seconds) as url:
        session = TimedSession()
        client = KlaviyoClient(
            api_url=url, rate_limiter=UnlimitedRateLimiter(), session=session, max_attempts=1
        )
        started = time.monotonic()
        report = flush_outbox(client=client, max_seconds=job_seconds * 3 + 60)
        settled = time.monotonic() - started
    assert session.first_request is not None and session.event_accepted is not None, (
        f"the order event was not accepted: {report.summary_lines()}"
    )
    latency = session.event_accepted - session.first_request
    unsent = OutboxEvent.objects.exclude(status="sent").count()
    print_result(
        f"job_latency_{args.db}",
        job_seconds=job_seconds,
        catalog_jobs=3,
        first_event_after_first_request_s=latency,
        target=f"<= {TARGET_SECONDS:g} s",
        met=latency <= TARGET_SECONDS,
        all_settled_s=settled,
        rows_not_sent=unsent,
        requests=report.requests,
    )
    assert unsent == 0, report.summary_lines()


if __name__ == "__main__":
    main()
