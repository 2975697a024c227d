"""Deleting old, finished records: sent and dead outbox rows (``manage.py klaviyo_purge``).

Each kind of record is a ``PurgeTarget`` in ``PURGE_TARGETS``; another app may append its
own (processed webhook deliveries, say). Deletion runs in batches by primary key so a
large purge never holds one long transaction or one huge ``IN`` list.

The webhook log is what recognises a replayed (or retried) signed delivery: its items'
stored ids make it a duplicate. A delivery is accepted while its ``meta.timestamp`` is
within WEBHOOK_TOLERANCE_SECONDS back (and ``MAX_FUTURE_SKEW_SECONDS`` ahead), so the log
must outlive that window: ``purge`` refuses an age below ``minimum_webhook_age()``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.models import OutboxEvent, WebhookDelivery
from django_klaviyo.orders.ledger import ledger_rows
from django_klaviyo.webhooks.verify import MAX_FUTURE_SKEW_SECONDS

# Beyond the replay window: for a slow clock and deliveries stored late in a request.
WEBHOOK_PURGE_MARGIN = timedelta(hours=1)
WEBHOOK_TARGET = "webhook_deliveries"


class PurgeRefused(ValueError):
    """The age would delete webhook deliveries a replay is still recognised by."""


def minimum_webhook_age() -> timedelta:
    """The smallest age ``purge`` accepts: a delivery received at time r can be replayed
    until its meta.timestamp (at most MAX_FUTURE_SKEW_SECONDS after r) is
    WEBHOOK_TOLERANCE_SECONDS old, so it is kept for both, plus WEBHOOK_PURGE_MARGIN."""
    tolerance = float(klaviyo_settings.WEBHOOK_TOLERANCE_SECONDS)
    return timedelta(seconds=tolerance + MAX_FUTURE_SKEW_SECONDS) + WEBHOOK_PURGE_MARGIN


def minimum_webhook_age_days() -> float:
    """``minimum_webhook_age()`` in days, rounded up to the hundredth (for messages)."""
    return math.ceil(minimum_webhook_age().total_seconds() / 864) / 100


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
    # An order's Cancelled and Refunded Order rows are its refund ledger: deleting them
    # would let a later "refund the rest" report the whole total again.
    return OutboxEvent.objects.filter(sent | dead).exclude(ledger_rows())


def _finished_webhook_deliveries(cutoff: datetime) -> QuerySet:
    # A delivery goes (with its items) only when every item was processed: a failed item
    # stays for the admin's "reprocess". Replays of purged items are refused anyway, their
    # meta.timestamp being outside WEBHOOK_TOLERANCE_SECONDS (purge's minimum age).
    return WebhookDelivery.objects.filter(received_at__lt=cutoff).exclude(items__processed=False)


PURGE_TARGETS: list[PurgeTarget] = [
    PurgeTarget("outbox", _finished_outbox_rows),
    PurgeTarget(WEBHOOK_TARGET, _finished_webhook_deliveries),
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

    Returns the number of rows per target name. Raises ``PurgeRefused`` (a ValueError)
    when the webhook log is a target and ``older_than`` is below ``minimum_webhook_age()``.
    """
    if older_than < timedelta(0):
        raise ValueError("older_than must not be negative.")
    chosen = PURGE_TARGETS if targets is None else targets
    if any(t.name == WEBHOOK_TARGET for t in chosen) and older_than < minimum_webhook_age():
        tolerance = int(float(klaviyo_settings.WEBHOOK_TOLERANCE_SECONDS))
        raise PurgeRefused(
            f"An age of {older_than.total_seconds() / 86400:g} days would delete webhook "
            "deliveries that a replay is still recognised by: a signed delivery is accepted "
            f"while its meta.timestamp is within WEBHOOK_TOLERANCE_SECONDS ({tolerance} s), "
            "and only its stored item ids make a replay (or Klaviyo's retry) a duplicate "
            f"instead of a new event. Use --older-than {minimum_webhook_age_days():.2f} "
            "or more (the window plus clock skew and a one-hour margin)."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, not {batch_size!r}.")
    cutoff = (now or timezone.now()) - older_than
    counts: dict[str, int] = {}
    for target in chosen:
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
