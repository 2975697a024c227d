"""The webhook log: one WebhookDelivery per accepted request, one WebhookItem per event.

What is stored: only deliveries that passed every check (signature or token, freshness,
shape). Rejected requests are logged, not stored, so forged traffic cannot fill the
database. A delivery whose items were all seen before (a re-send or a replay) stores nothing
new either: it is acknowledged and logged at INFO.

Items are unique on ``(account, external_id)``. They are inserted in one bulk INSERT ... ON CONFLICT
DO NOTHING and the inserter learns which rows are its own by reading back the ids of the
rows that point at its delivery; under concurrent deliveries of the same item exactly one
transaction inserts it. New items are stored pending; ``dispatch`` runs their handlers.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

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


def insert_items(delivery: WebhookDelivery, items: Sequence[WebhookEventItem]) -> list[int]:
    """Insert ``items`` (distinct external ids) pending, skipping ids already stored;
    returns the ids of the rows inserted, in order.

    One hand-written ``INSERT ... ON CONFLICT (account, external_id) DO NOTHING RETURNING id``
    (on SQLite one per 99 rows): ``bulk_create`` on PostgreSQL sends arrays whose
    client-side quoting alone took 1.7 s for 5,000 items.
    """
    connection = connections[delivery._state.db or DEFAULT_DB_ALIAS]
    if connection.vendor not in ("postgresql", "sqlite") or (
        connection.vendor == "sqlite" and sqlite3.sqlite_version_info < (3, 35)
    ):
        WebhookItem.objects.bulk_create(
            [
                WebhookItem(
                    delivery=delivery,
                    external_id=item.external_id,
                    account=delivery.account,
                    topic=item.topic,
                    payload=item.payload,
                )
                for item in items
            ],
            ignore_conflicts=True,
        )
        mine = WebhookItem.objects.filter(delivery=delivery).order_by("pk")
        return list(mine.values_list("pk", flat=True))
    qn = connection.ops.quote_name
    meta = WebhookItem._meta
    columns = ", ".join(
        qn(c)
        for c in (
            "delivery_id",
            "account",
            "external_id",
            "topic",
            "payload",
            "processed",
            "processed_at",
            "attempts",
            "error",
            "traceback",
            "created_at",
        )
    )
    created_at = meta.get_field("created_at").get_db_prep_save(timezone.now(), connection)
    delivery_id = meta.get_field("delivery").get_db_prep_save(delivery.pk, connection)
    conflict = f"ON CONFLICT ({qn('account')}, {qn('external_id')}) DO NOTHING RETURNING {qn('id')}"
    ids: list[int] = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The items travel as one JSON parameter that PostgreSQL unpacks itself: a
            # statement with 10 placeholders per item costs more to bind than to run.
            rows = json.dumps([{"e": i.external_id, "t": i.topic, "p": i.payload} for i in items])
            cursor.execute(
                f"INSERT INTO {qn(meta.db_table)} ({columns}) "  # noqa: S608
                "SELECT %s, %s, x.e, x.t, x.p, false, NULL, 0, '', '', %s "
                "FROM jsonb_to_recordset(CAST(%s AS jsonb)) AS x(e text, t text, p jsonb) "
                + conflict,
                [delivery_id, delivery.account, created_at, rows],
            )
            ids = [pk for (pk,) in cursor.fetchall()]
        else:
            per_statement = max(1, (connection.features.max_query_params or 999) // 11)
            row_sql = "(" + ", ".join(["%s"] * 11) + ")"
            for start in range(0, len(items), per_statement):
                chunk = items[start : start + per_statement]
                params: list[Any] = []
                for item in chunk:
                    params += [
                        delivery_id,
                        delivery.account,
                        item.external_id,
                        item.topic,
                        json.dumps(item.payload),
                        False,
                        None,
                        0,
                        "",
                        "",
                        created_at,
                    ]
                cursor.execute(
                    f"INSERT INTO {qn(meta.db_table)} ({columns}) "  # noqa: S608
                    f"VALUES {', '.join([row_sql] * len(chunk))} {conflict}",
                    params,
                )
                ids += [pk for (pk,) in cursor.fetchall()]
    return sorted(ids)


def store_delivery(
    *,
    source: str,
    webhook_id: str,
    headers: Mapping[str, str],
    body: str,
    remote_addr: str,
    items: Sequence[WebhookEventItem],
    account: str = "",
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
            account=account,
            valid=True,
            item_count=len(items),
        )
        new_ids = insert_items(delivery, unique_items)
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
