"""Operator actions on outbox rows, shared by the admin and management commands.

Each is one conditional UPDATE or DELETE, so it never races a flusher: a row a flusher has
claimed (status "sending") is skipped, and the WHERE clause is re-checked against rows that
change while the statement waits for their locks. Each returns how many rows it changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from django_klaviyo.invalid_rows import REFUSED_ON_SAVE_CODES
from django_klaviyo.models import OutboxEvent

Status = OutboxEvent.Status


def _requeue(queryset: QuerySet[OutboxEvent], statuses: Iterable[str]) -> int:
    # Rows refused on save never held a valid payload (see invalid_rows): nothing to retry.
    queryset = queryset.exclude(last_error_code__in=REFUSED_ON_SAVE_CODES)
    return queryset.filter(status__in=list(statuses)).update(
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
    """Delete rows for good; rows being sent right now are left alone."""
    deleted, _ = queryset.exclude(status=Status.SENDING).delete()
    return deleted


@dataclass
class QueueStats:
    """What the outbox dashboard shows; a handful of aggregate queries on indexed columns."""

    now: dt.datetime
    by_status: dict[str, int]
    by_kind: dict[str, dict[str, int]]  # kind -> status -> count
    oldest_due_since: dt.datetime | None
    sent_last_hour: int
    sent_last_day: int
    top_error_codes: list[tuple[str, int]]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def oldest_due_age(self) -> dt.timedelta | None:
        return None if self.oldest_due_since is None else self.now - self.oldest_due_since


def queue_stats(*, now: dt.datetime | None = None, top: int = 5) -> QueueStats:
    now = now or timezone.now()
    by_status: dict[str, int] = {}
    by_kind: dict[str, dict[str, int]] = {}
    # Grouped on (status, kind): the composite index serves it.
    for row in OutboxEvent.objects.order_by().values("status", "kind").annotate(n=Count("pk")):
        by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
        by_kind.setdefault(row["kind"], {})[row["status"]] = row["n"]
    # The partial "due" index holds exactly these rows, ordered by next_attempt_at.
    oldest_due_since = OutboxEvent.objects.filter(
        status__in=OutboxEvent.DUE_STATUSES, next_attempt_at__lte=now
    ).aggregate(oldest=Min("next_attempt_at"))["oldest"]
    sent = OutboxEvent.objects.filter(
        status=Status.SENT, sent_at__gte=now - dt.timedelta(days=1)
    ).aggregate(
        day=Count("pk"), hour=Count("pk", filter=Q(sent_at__gte=now - dt.timedelta(hours=1)))
    )
    # Rows still failing, not the history of rows that went through in the end.
    top_error_codes = [
        (row["last_error_code"], row["n"])
        for row in OutboxEvent.objects.filter(status__in=(Status.RETRYING, Status.DEAD))
        .exclude(last_error_code="")
        .order_by()
        .values("last_error_code")
        .annotate(n=Count("pk"))
        .order_by("-n", "last_error_code")[:top]
    ]
    return QueueStats(
        now=now,
        by_status=by_status,
        by_kind=by_kind,
        oldest_due_since=oldest_due_since,
        sent_last_hour=sent["hour"],
        sent_last_day=sent["day"],
        top_error_codes=top_error_codes,
    )
