"""The webhook log: one WebhookDelivery per accepted request, one WebhookItem per event.

What is stored: only deliveries that passed every check (signature or token, freshness,
shape). Rejected requests are logged, not stored, so forged traffic cannot fill the
database. A delivery whose items were all seen before (a re-send or a replay) stores nothing
new either: it is acknowledged and logged at INFO.

Items are unique on ``external_id``. They are inserted in one bulk INSERT ... ON CONFLICT
DO NOTHING and the inserter learns which rows are its own by reading back the ids of the
rows that point at its delivery; under concurrent deliveries of the same item exactly one
transaction inserts it. New items are stored pending; ``dispatch`` runs their handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from django.db import transaction

from django_klaviyo.models import WebhookDelivery, WebhookItem
from django_klaviyo.webhooks.verify import WebhookEventItem, storable_text

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
# Any header whose name contains one of these may carry a credential.
SENSITIVE_HEADER_PARTS = (
    "signature",
    "authorization",
    "cookie",
    "token",
    "secret",
    "api-key",
    "apikey",
    "password",
    "session",
)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers fit for the log: credentials replaced by ``[redacted]``."""
    redacted: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        sensitive = any(part in lowered for part in SENSITIVE_HEADER_PARTS)
        redacted[storable_text(name)] = REDACTED if sensitive else storable_text(value)
    return redacted


@dataclass
class StoredDelivery:
    """What :func:`store_delivery` wrote: the delivery (None when nothing was new) and the
    ids of the items this call inserted, all pending."""

    delivery: WebhookDelivery | None
    new_ids: list[int] = field(default_factory=list)
    duplicates: int = 0


def _first_of_each(items: Sequence[WebhookEventItem]) -> list[WebhookEventItem]:
    seen: set[str] = set()
    unique = []
    for item in items:
        if item.external_id not in seen:
            seen.add(item.external_id)
            unique.append(item)
    return unique


def store_delivery(
    *,
    source: str,
    webhook_id: str,
    headers: Mapping[str, str],
    body: str,
    remote_addr: str,
    items: Sequence[WebhookEventItem],
) -> StoredDelivery:
    """Durably store a verified delivery and its not-yet-seen items, pending.

    Commits before returning (call it outside any transaction, as the views do), so a
    later handler error cannot erase the log.
    """
    unique_items = _first_of_each(items)
    with transaction.atomic():
        delivery = WebhookDelivery.objects.create(
            source=source,
            webhook_id=webhook_id[:64],
            headers=redact_headers(headers),
            body=body,
            remote_addr=remote_addr[:64],
            valid=True,
            item_count=len(items),
        )
        WebhookItem.objects.bulk_create(
            [
                WebhookItem(
                    delivery=delivery,
                    external_id=item.external_id,
                    topic=item.topic,
                    payload=item.payload,
                )
                for item in unique_items
            ],
            ignore_conflicts=True,
        )
        new_ids = list(
            WebhookItem.objects.filter(delivery=delivery)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        duplicates = len(items) - len(new_ids)
        if not new_ids:
            # A pure re-send: nothing to keep, and replays cannot grow the table.
            delivery.delete()
            logger.info(
                "Klaviyo webhook %s delivery with %d item(s), all already received.",
                source,
                len(items),
            )
            return StoredDelivery(delivery=None, new_ids=[], duplicates=duplicates)
    if duplicates:
        logger.info(
            "Klaviyo webhook delivery %s: %d new item(s), %d already received.",
            delivery.pk,
            len(new_ids),
            duplicates,
        )
    return StoredDelivery(delivery=delivery, new_ids=new_ids, duplicates=duplicates)
