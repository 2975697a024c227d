"""Deleting old, finished records: sent and dead outbox rows (``manage.py klaviyo_purge``).

Each kind of record is a ``PurgeTarget`` in ``PURGE_TARGETS``; another app may append its
own (processed webhook deliveries, say). Deletion runs in batches by primary key so a
large purge never holds one long transaction or one huge ``IN`` list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from django_klaviyo.models import OutboxEvent, WebhookDelivery


@dataclass(frozen=True)
class PurgeTarget:
    name: str
    # Rows old enough to delete, given the cutoff; must select only finished records.
    queryset: Callable[[datetime], QuerySet]


def _finished_outbox_rows(cutoff: datetime) -> QuerySet:
    Status = OutboxEvent.Status
    # A sent row ages from its delivery; a dead row only once nobody has touched it
    # (requeued or inspected) for the whole period.
    sent = Q(status=Status.SENT) & (
        Q(sent_at__lt=cutoff) | Q(sent_at__isnull=True, created_at__lt=cutoff)
    )
    dead = Q(status=Status.DEAD, created_at__lt=cutoff, updated_at__lt=cutoff)
    return OutboxEvent.objects.filter(sent | dead)


def _finished_webhook_deliveries(cutoff: datetime) -> QuerySet:
    # A delivery goes (with its items) only when every item was processed: a failed item
    # stays for the admin's "reprocess". Replays of purged items are refused anyway,
    # their meta.timestamp being far outside WEBHOOK_TOLERANCE_SECONDS.
    return WebhookDelivery.objects.filter(received_at__lt=cutoff).exclude(items__processed=False)


PURGE_TARGETS: list[PurgeTarget] = [
    PurgeTarget("outbox", _finished_outbox_rows),
    PurgeTarget("webhook_deliveries", _finished_webhook_deliveries),
]


def purge(
    *,
    older_than: timedelta,
    batch_size: int = 1000,
    dry_run: bool = False,
    targets: Sequence[PurgeTarget] | None = None,
    now: datetime | None = None,
) -> dict[str, int]:
    """Delete (or, with ``dry_run``, count) finished records older than ``older_than``.

    Returns the number of rows per target name.
    """
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, not {batch_size!r}.")
    cutoff = (now or timezone.now()) - older_than
    counts: dict[str, int] = {}
    for target in PURGE_TARGETS if targets is None else targets:
        rows = target.queryset(cutoff)
        if dry_run:
            counts[target.name] = rows.count()
            continue
        deleted = 0
        while True:
            pks = list(rows.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not pks:
                break
            with transaction.atomic():
                # The filter is applied again at delete time: a row requeued meanwhile stays.
                removed, by_model = target.queryset(cutoff).filter(pk__in=pks).delete()
            # Count the target's own rows, not what cascades with them.
            deleted += by_model.get(rows.model._meta.label, removed)
            if len(pks) < batch_size:
                break
        counts[target.name] = deleted
    return counts
