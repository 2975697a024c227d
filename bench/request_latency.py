"""Request latency: the seed's inline Klaviyo calls vs the outbox, per order placement.

Inline (the seed's pattern): place the order, then synchronously upsert the profile
(POST /api/profile-import), update its properties (PATCH /api/profiles/{id}) and create
the event (POST /api/events) with plain ``requests`` against the sandbox with 50 ms of
added latency per request. Ours: the same order placement with the outbox on (Klaviyo
is called later by the flusher). Figures are medians per order. Target: inline / ours
>= 100.
"""

from __future__ import annotations

import time
import uuid

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
from bench.enqueue_overhead import LINES

INLINE_ORDERS = 25
OUR_ORDERS = 300
LATENCY = 0.05
TARGET = 100.0
REVISION = "2026-07-15"


def inline_sync(session: requests.Session, base: str, key: str, order: object) -> None:
    headers = {
        "Authorization": f"Klaviyo-API-Key {key}",
        "revision": REVISION,
        "Content-Type": "application/vnd.api+json",
        "Accept": "application/vnd.api+json",
    }
    email = order.email  # type: ignore[attr-defined]
    response = session.post(
        f"{base}/api/profile-import",
        json={"data": {"type": "profile", "attributes": {"email": email, "first_name": "Ada"}}},
        headers=headers,
        timeout=10,
    )
    response.raise_for_status()
    profile_id = response.json()["data"]["id"]
    response = session.patch(
        f"{base}/api/profiles/{profile_id}",
        json={
            "data": {
                "type": "profile",
                "id": profile_id,
                "attributes": {"properties": {"LastOrder": order.number}},  # type: ignore[attr-defined]
            }
        },
        headers=headers,
        timeout=10,
    )
    response.raise_for_status()
    response = session.post(
        f"{base}/api/events",
        json={
            "data": {
                "type": "event",
                "attributes": {
                    "properties": {"OrderId": order.number},  # type: ignore[attr-defined]
                    "value": float(order.total),  # type: ignore[attr-defined]
                    "unique_id": uuid.uuid4().hex,
                    "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
                    "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
                },
            }
        },
        headers=headers,
        timeout=10,
    )
    response.raise_for_status()


def main() -> None:
    args = parse_args(__doc__)
    setup_django(args.db)
    from django.conf import settings
    from django.test import override_settings
    from shop.services import place_order

    print_header(f"request latency, inline vs outbox ({args.db})")
    key = settings.KLAVIYO["PRIVATE_API_KEY"]
    with sandbox_process(latency=LATENCY) as base:
        session = requests.Session()
        inline: list[float] = []
        with override_settings(KLAVIYO={**settings.KLAVIYO, "ENABLED": False}):
            for i in range(sized(INLINE_ORDERS, 2) + 2):
                start = time.perf_counter()
                order = place_order(
                    email=f"inline{i}@example.com", lines=LINES, number=f"inline-{i}"
                )
                inline_sync(session, base, key, order)
                if i >= 2:  # the first two warm the connection
                    inline.append(time.perf_counter() - start)
        # Ours, interleaved with the bare order placement (tracking off) so that the part
        # of the latency that Klaviyo adds can be told apart from the order's own cost.
        ours: list[float] = []
        bare: list[float] = []
        off = {**settings.KLAVIYO, "ENABLED": False}
        for i in range(sized(OUR_ORDERS, 3) + 20):
            start = time.perf_counter()
            place_order(email=f"ours{i % 50}@example.com", lines=LINES, number=f"ours-{i}")
            if i >= 20:
                ours.append(time.perf_counter() - start)
            with override_settings(KLAVIYO=off):
                start = time.perf_counter()
                place_order(email=f"bare{i % 50}@example.com", lines=LINES, number=f"bare-{i}")
                if i >= 20:
                    bare.append(time.perf_counter() - start)
    inline_ms, ours_ms, bare_ms = (median(x) * 1000 for x in (inline, ours, bare))
    ratio = inline_ms / ours_ms
    added_ratio = (inline_ms - bare_ms) / max(ours_ms - bare_ms, 1e-6)
    print_result(
        f"request_latency_{args.db}",
        inline_ms=inline_ms,
        outbox_ms=ours_ms,
        untracked_order_ms=bare_ms,
        RATIO=ratio,
        target=f">= {TARGET:g}",
        met=ratio >= TARGET,
        klaviyo_added_ratio=added_ratio,
        added_latency_ms=LATENCY * 1000,
    )


if __name__ == "__main__":
    main()
