"""Operator actions on outbox rows, shared by the admin and management commands.

Each is one conditional UPDATE or DELETE, so it never races a flusher: a row a flusher has
claimed (status "sending") is skipped, and the WHERE clause is re-checked against rows that
change while the statement waits for their locks. Each returns how many rows it changed.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from django_klaviyo.models import KlaviyoCouponCode, OutboxEvent
from django_klaviyo.outbox.refused import REFUSED_ON_SAVE_CODES

Status = OutboxEvent.Status


def _requeue(queryset: QuerySet[OutboxEvent], statuses: Iterable[str]) -> int:
    # Rows refused on save never held a valid payload (see invalid_rows): nothing to retry.
    queryset = queryset.exclude(last_error_code__in=REFUSED_ON_SAVE_CODES)
    requeued = queryset.filter(status__in=list(statuses))
    with transaction.atomic(using=queryset.db):
        # A failed coupon code whose row goes back to the queue is queued again.
        KlaviyoCouponCode.objects.using(queryset.db).filter(
            status=KlaviyoCouponCode.Status.FAILED, outbox_id__in=requeued.values("pk")
        ).update(status=KlaviyoCouponCode.Status.QUEUED)
        return requeued.update(
            status=Status.PENDING,
            attempts=0,
            next_attempt_at=timezone.now(),
            locked_at=None,
            locked_by="",
            updated_at=timezone.now(),
        )


def retry_now(queryset: QuerySet[OutboxEvent]) -> int:
    """Make dead and retrying rows due immediately with a fresh attempt budget.

    The last error is kept so the operator still sees why a row failed before.
    """
    return _requeue(queryset, (Status.DEAD, Status.RETRYING))


def requeue_dead(queryset: QuerySet[OutboxEvent] | None = None) -> int:
    """Give dead rows (all of them when ``queryset`` is None) another full set of attempts."""
    if queryset is None:
        queryset = OutboxEvent.objects.all()
    return _requeue(queryset, (Status.DEAD,))


def discard(queryset: QuerySet[OutboxEvent]) -> int:
    """Delete rows for good; rows in flight are left alone: one being sent, or one whose
    Klaviyo job has not settled yet (Klaviyo has it, and the job's outcome, a dead row
    with Klaviyo's reason for each refused entry, is written on it)."""
    deleted, _ = queryset.exclude(status__in=OutboxEvent.IN_FLIGHT_STATUSES).delete()
    return deleted
