"""Webhook volume: how long a 5,000-item signed delivery takes to be acknowledged.

Ours: the delivery is verified, stored in one bulk INSERT with its items pending, and
answered; the worker (``dispatch.process_pending``, as ``klaviyo_flush`` runs it) handles
the items afterwards, which is timed separately. Baseline: the same delivery handled
item by item inside the request (``WEBHOOK_INLINE_ITEMS`` above the item count: the
behaviour before issue 10). Items are consent events (unsubscribes) naming profiles the
store knows, so the built-in consent handler does its real work. The request goes
through Django's full stack (test client, middleware-free URLconf). Target: acknowledged
in under 2 s.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import time

from bench.common import median, parse_args, print_header, print_result, setup_django, sized

ITEMS = int(os.environ.get("BENCH_WEBHOOK_ITEMS", "5000"))
RUNS = 5
LINKS = 1000
TARGET_SECONDS = 2.0
SECRET = "bench-secret"
WEBHOOK_ID = "01BENCHWEBHOOK0000000000000"
TOPIC = "event:klaviyo.unsubscribed_from_email_marketing"


def delivery(run: str) -> bytes:
    now = dt.datetime.now(dt.timezone.utc)
    items = [
        {
            "topic": TOPIC,
            "external_id": f"{run}-{n}",
            "payload": {
                "data": {
                    "type": "event",
                    "id": f"{run}-{n}",
                    "attributes": {
                        "datetime": (now - dt.timedelta(seconds=ITEMS - n)).isoformat(),
                        "event_properties": {
                            "method": "PROFILE_PAGE",
                            "email_address": f"customer{n % (LINKS * 2)}@example.com",
                        },
                    },
                    "relationships": {
                        "metric": {"data": {"type": "metric", "id": "SHi67A"}},
                        "profile": {"data": {"type": "profile", "id": f"01PROFILE{n:08d}"}},
                    },
                }
            },
        }
        for n in range(ITEMS)
    ]
    document = {
        "meta": {
            "timestamp": now.isoformat(),
            "klaviyo_webhook_id": WEBHOOK_ID,
            "klaviyo_account_id": "BENCH1",
            "version": "2024-06-28",
        },
        "data": items,
    }
    return json.dumps(document).encode()


def post(client: object, body: bytes) -> tuple[float, dict]:
    timestamp = "Fri, 04 Sep 2026 18:16:52 GMT"
    signature = hmac.new(SECRET.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()
    headers = {
        "Klaviyo-Webhook-Id": WEBHOOK_ID,
        "Klaviyo-Timestamp": timestamp,
        "Klaviyo-Signature": signature,
    }
    from django.urls import reverse

    url = reverse("klaviyo-webhook")
    start = time.perf_counter()
    response = client.generic(  # type: ignore[attr-defined]
        "POST", url, body, content_type="application/json", headers=headers
    )
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"delivery refused: {response.status_code} {response.content[:200]!r}")
    return elapsed, response.json()


def reset() -> None:
    from django_klaviyo.models import KlaviyoProfileLink, WebhookDelivery, WebhookItem

    WebhookItem.objects.all().delete()
    WebhookDelivery.objects.all().delete()
    KlaviyoProfileLink.objects.all().delete()
    KlaviyoProfileLink.objects.bulk_create(
        KlaviyoProfileLink(email=f"customer{n}@example.com") for n in range(LINKS)
    )


def drain() -> int:
    from django_klaviyo.webhooks.dispatch import process_pending

    handled = 0
    while batch := process_pending().handled:
        handled += batch
    return handled


def main() -> None:
    global ITEMS, RUNS, LINKS
    args = parse_args("Acknowledging a 5,000-item webhook delivery.")
    # Smoke: still above WEBHOOK_INLINE_ITEMS (100), so the delivery is queued as at full size.
    ITEMS, RUNS, LINKS = sized(ITEMS, 150), sized(RUNS, 1), sized(LINKS, 10)
    setup_django(args.db)
    from django.conf import settings
    from django.test import Client
    from django.test.utils import override_settings

    from django_klaviyo.models import WebhookItem

    print_header(f"webhook volume ({args.db}), {ITEMS} items per delivery")
    client = Client()
    ours = []
    for run in range(RUNS):
        reset()
        seconds, answer = post(client, delivery(f"ours{run}"))
        assert answer["pending"] == ITEMS, answer
        ours.append(seconds)
    # The worker's side, once (the handlers' own cost; minutes, not the point here).
    start = time.perf_counter()
    handled = drain()
    drained = time.perf_counter() - start
    assert handled == ITEMS and WebhookItem.objects.filter(processed=True).count() == ITEMS
    reset()
    with override_settings(KLAVIYO={**settings.KLAVIYO, "WEBHOOK_INLINE_ITEMS": ITEMS}):
        inline, answer = post(client, delivery("inline"))
    assert answer["pending"] == 0 and answer["failed"] == 0, answer
    size = len(delivery("size"))
    print_result(
        "webhook_ack_seconds",
        db=args.db,
        items=ITEMS,
        body_bytes=size,
        median=median(ours),
        runs=[round(s, 3) for s in ours],
        target=TARGET_SECONDS,
        met=median(ours) < TARGET_SECONDS,
    )
    print_result(
        "webhook_worker_drain_seconds",
        db=args.db,
        items=ITEMS,
        seconds=drained,
        items_per_second=ITEMS / drained,
    )
    print_result("webhook_inline_seconds (baseline)", db=args.db, items=ITEMS, seconds=inline)
    print(f"RATIO inline / ours = {inline / median(ours):.1f}x")


if __name__ == "__main__":
    main()
