"""Flush CPU cost per event vs a bare baseline.

Ours: ``flush_outbox`` over EVENTS due event rows. Baseline: read the same rows (one
SELECT per 1000), group them per profile into the same JSON:API bulk bodies, encode them
and POST the same bytes with ``requests`` to the same sandbox. Both against a sandbox in
another process with no rate limits and no latency; CPU is this process's
``time.process_time()``. Runs alternate; medians. Target: ours / baseline <= 2.
"""

from __future__ import annotations

import json
import time
from typing import Any

import requests

from bench.common import (
    median,
    parse_args,
    print_header,
    print_result,
    sandbox_process,
    setup_django,
    sized,
)

EVENTS = 10_000
ROUNDS = 3
TARGET = 2.0
REVISION = "2026-07-15"


def seed_events(count: int, prefix: str = "cpu") -> None:
    from django.db import transaction

    from django_klaviyo.outbox import build_event, enqueue_many

    rows = [
        build_event(
            metric="Placed Order",
            profile={"email": f"customer{i % 2000}@example.com", "first_name": "Ada"},
            properties={"OrderId": f"{prefix}-{i}", "Items": ["Tea", "Cup", "Pot"], "Total": 52},
            value=52.0,
            value_currency="USD",
            unique_id=f"{prefix}-{i}",
        )
        for i in range(count)
    ]
    with transaction.atomic():
        for start in range(0, count, 2000):
            enqueue_many(rows[start : start + 2000])


def reset(url: str) -> None:
    from django_klaviyo.models import OutboxEvent

    OutboxEvent.objects.update(
        status="pending", attempts=0, sent_at=None, locked_at=None, locked_by=""
    )
    requests.post(f"{url}/__sandbox__/reset", timeout=30).raise_for_status()


def bulk_body(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    entries: dict[str, list[dict[str, Any]]] = {}
    profiles: dict[str, dict[str, Any]] = {}
    for _pk, payload, unique_id in rows:
        if isinstance(payload, str):
            payload = json.loads(payload)
        profile = payload["profile"]
        key = profile.get("email") or json.dumps(profile, sort_keys=True)
        profiles[key] = profile
        attributes = {
            "properties": payload["properties"],
            "metric": {"data": {"type": "metric", "attributes": {"name": payload["metric"]}}},
            "unique_id": unique_id,
        }
        for name in ("time", "value", "value_currency"):
            if payload.get(name) is not None:
                attributes[name] = payload[name]
        entries.setdefault(key, []).append({"type": "event", "attributes": attributes})
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {
                "events-bulk-create": {
                    "data": [
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "profile": {
                                    "data": {"type": "profile", "attributes": profiles[key]}
                                },
                                "events": {"data": events},
                            },
                        }
                        for key, events in entries.items()
                    ]
                }
            },
        }
    }


def bare_flush(url: str, key: str) -> int:
    """Read rows 1000 at a time, encode the bulk body, POST it: nothing else."""
    from django.db import connection

    from django_klaviyo.models import OutboxEvent

    table = OutboxEvent._meta.db_table
    session = requests.Session()
    headers = {
        "Authorization": f"Klaviyo-API-Key {key}",
        "revision": REVISION,
        "Content-Type": "application/vnd.api+json",
        "Accept": "application/vnd.api+json",
    }
    sent = 0
    last = None
    while True:
        with connection.cursor() as cursor:
            if last is None:
                cursor.execute(
                    f"SELECT id, payload, unique_id FROM {table} "
                    "WHERE status = 'pending' ORDER BY id LIMIT 1000"
                )
            else:
                cursor.execute(
                    f"SELECT id, payload, unique_id FROM {table} "
                    "WHERE status = 'pending' AND id > %s ORDER BY id LIMIT 1000",
                    [last],
                )
            rows = cursor.fetchall()
        if not rows:
            return sent
        last = rows[-1][0]
        body = json.dumps(bulk_body(rows)).encode()
        response = session.post(
            f"{url}/api/event-bulk-create-jobs", data=body, headers=headers, timeout=60
        )
        response.raise_for_status()
        sent += len(rows)


def our_flush(url: str) -> int:
    from django_klaviyo.client import KlaviyoClient, UnlimitedRateLimiter
    from django_klaviyo.flush import flush_outbox

    client = KlaviyoClient(api_url=url, rate_limiter=UnlimitedRateLimiter())
    report = flush_outbox(client=client)
    assert report.sent == EVENTS and report.dead == 0, report.summary_lines()
    return report.sent


def main() -> None:
    global EVENTS, ROUNDS
    args = parse_args(__doc__)
    EVENTS, ROUNDS = sized(EVENTS, 300), sized(ROUNDS, 1)  # --smoke: seconds
    setup_django(args.db)
    from django.conf import settings

    print_header(f"flush CPU per event vs bare baseline ({args.db})")
    seed_events(EVENTS)
    key = settings.KLAVIYO["PRIVATE_API_KEY"]
    cpu: dict[str, list[float]] = {"ours": [], "bare": []}
    wall: dict[str, list[float]] = {"ours": [], "bare": []}
    with sandbox_process(enforce_rate_limits=False) as url:
        for round_ in range(ROUNDS):
            order = [("ours", lambda: our_flush(url)), ("bare", lambda: bare_flush(url, key))]
            for name, run in order if round_ % 2 == 0 else reversed(order):
                reset(url)
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                sent = run()
                cpu[name].append((time.process_time() - start_cpu) / sent)
                wall[name].append((time.perf_counter() - start_wall) / sent)
    ours, bare = median(cpu["ours"]), median(cpu["bare"])
    ratio = ours / bare
    print_result(
        f"flush_cpu_{args.db}",
        ours_cpu_us_per_event=ours * 1e6,
        bare_cpu_us_per_event=bare * 1e6,
        ours_wall_events_per_s=1 / median(wall["ours"]),
        bare_wall_events_per_s=1 / median(wall["bare"]),
        RATIO=ratio,
        target=f"<= {TARGET:g}",
        met=ratio <= TARGET,
        events=EVENTS,
        ours_cpu_us_rounds=[round(x * 1e6, 1) for x in cpu["ours"]],
        ours_wall_s_rounds=[round(x * EVENTS, 2) for x in wall["ours"]],
    )


if __name__ == "__main__":
    main()
