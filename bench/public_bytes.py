"""Bytes one client address can store through the storefront endpoint per minute.

An anonymous script posts the largest Started Checkout the endpoint accepts, from one
address (a new session every time, as a script that drops its cookies), for
``--seconds``; the figure is the outbox payload bytes stored (JSON text), per minute.
Before issue 19's byte budgets the fattest event was about 1.8 MB (100 items of the
largest fields); after, an event is at most ``limits.MAX_PUBLIC_EVENT_BYTES`` and an
address at most ``STOREFRONT_ADDRESS_BYTES_PER_MINUTE`` in any 60 s.

    .venv/bin/python -m bench.public_bytes --db postgres --seconds 60
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.common import (
    default_sizes,
    parse_bench_args,
    print_header,
    print_result,
    setup_django,
)

ADDRESS = "203.0.113.1"


def item(n: int, categories: int) -> dict[str, Any]:
    url = "https://shop.example.com/" + "p" * 1970 + f"/{n:04d}"
    return {
        "product_id": f"P{n}",
        "sku": f"P{n}",
        "name": "N" * 500,
        "price": "1.00",
        "quantity": 1,
        "product_url": url,
        "image_url": url,
        "categories": [f"{c:02d}" + "C" * 253 for c in range(categories)],
        "brand": "B" * 255,
    }


def checkout(items: int, categories: int) -> str:
    body = {
        "event": "started_checkout",
        "checkout_id": "c-1",
        "items": [item(n, categories) for n in range(items)],
    }
    return json.dumps(body)


def post(body: str) -> int:
    from django.test import Client

    client = Client(REMOTE_ADDR=ADDRESS)  # a new session every time
    answer = client.post("/klaviyo/storefront/events/", body, content_type="application/json")
    return answer.status_code


def stored_bytes() -> tuple[int, int]:
    from django.core.serializers.json import DjangoJSONEncoder

    from django_klaviyo.models import OutboxEvent

    rows = OutboxEvent.objects.values_list("payload", flat=True)
    sizes = [len(json.dumps(p, cls=DjangoJSONEncoder).encode()) for p in rows.iterator()]
    return sum(sizes), len(sizes)


def largest_accepted() -> tuple[str, str]:
    """The issue's 100-item event if accepted, else the largest accepted one."""
    from django.core.cache import cache

    from bench.common import truncate

    candidates = [(100, 50, "issue's 100 items x 50 categories")]
    candidates += [
        (n, c, f"{n} items x {c} categories") for c in (10, 2, 0) for n in (20, 8, 4, 2, 1)
    ]
    for items, categories, label in candidates:
        body = checkout(items, categories)
        status = post(body)
        truncate()
        cache.clear()
        if status == 202:
            return body, label
    raise SystemExit("no started_checkout was accepted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--seconds", type=float, default=None, help="default 60 (smoke: 1)")
    args = default_sizes(parse_bench_args(parser), seconds=(60.0, 1.0))
    setup_django(args.db)
    from django.core.cache import cache

    print_header(f"Bytes one address stores per minute ({args.db})")
    body, label = largest_accepted()
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        # A new checkout id each time: Started Checkout is stored once per checkout.
        n = sum(statuses.values())
        status = post(body.replace('"checkout_id": "c-1"', f'"checkout_id": "c-{n}"', 1))
        statuses[status] = statuses.get(status, 0) + 1
    elapsed = time.perf_counter() - started
    total, rows = stored_bytes()
    cache.clear()
    print(f"event: started_checkout, {label}; body {len(body)} bytes")
    print(f"{elapsed:.1f} s: answers {statuses}; {rows} rows, {total:,} bytes stored")
    print_result(
        "public_bytes_per_minute",
        db=args.db,
        seconds=round(elapsed, 1),
        event=label,
        body_bytes=len(body),
        answers=statuses,
        rows=rows,
        stored_bytes=total,
        bytes_per_minute=round(total * 60 / elapsed),
    )


if __name__ == "__main__":
    main()
