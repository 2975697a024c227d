"""Operator actions on the outbox and the dashboard numbers."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from django_klaviyo import operations
from django_klaviyo.models import OutboxEvent

pytestmark = pytest.mark.django_db
S = OutboxEvent.Status


def row(status: str, *, kind: str = OutboxEvent.Kind.EVENT, **fields) -> OutboxEvent:
    defaults = {
        "payload": {"metric": "Placed Order", "profile": {"email": "a@example.com"}},
        "profile_key": "email:a@example.com",
        "attempts": 5,
        "next_attempt_at": timezone.now() + dt.timedelta(hours=1),
    }
    return OutboxEvent.objects.create(kind=kind, status=status, **{**defaults, **fields})


def test_retry_now_resets_dead_and_retrying_rows_only():
    dead = row(S.DEAD, last_error_code="invalid", locked_by="old-worker")
    retrying = row(S.RETRYING)
    sending = row(S.SENDING, locked_at=timezone.now(), locked_by="w1")
    sent = row(S.SENT)
    before = timezone.now()
    assert operations.retry_now(OutboxEvent.objects.all()) == 2
    for obj in (dead, retrying):
        obj.refresh_from_db()
        assert obj.status == S.PENDING and obj.attempts == 0
        assert before <= obj.next_attempt_at <= timezone.now()
        assert obj.locked_by == "" and obj.locked_at is None
    dead.refresh_from_db()
    assert dead.last_error_code == "invalid"  # history kept
    sending.refresh_from_db()
    sent.refresh_from_db()
    assert (sending.status, sending.attempts, sending.locked_by) == (S.SENDING, 5, "w1")
    assert sent.status == S.SENT


def test_retry_now_respects_the_selection():
    chosen, other = row(S.DEAD), row(S.DEAD)
    assert operations.retry_now(OutboxEvent.objects.filter(pk=chosen.pk)) == 1
    other.refresh_from_db()
    assert other.status == S.DEAD


def test_requeue_dead_touches_dead_rows_only():
    dead, retrying = row(S.DEAD), row(S.RETRYING)
    assert operations.requeue_dead(OutboxEvent.objects.all()) == 1
    dead.refresh_from_db()
    retrying.refresh_from_db()
    assert dead.status == S.PENDING and dead.attempts == 0
    assert retrying.status == S.RETRYING and retrying.attempts == 5
    row(S.DEAD)
    assert operations.requeue_dead() == 1  # all dead rows


def test_discard_deletes_all_but_rows_being_sent():
    rows = [row(s) for s in (S.DEAD, S.PENDING, S.SENT, S.SENDING)]
    assert operations.discard(OutboxEvent.objects.all()) == 3
    assert list(OutboxEvent.objects.values_list("pk", flat=True)) == [rows[3].pk]


def test_queue_stats_counts_by_status_kind_and_time():
    now = timezone.now()
    row(S.PENDING, next_attempt_at=now - dt.timedelta(minutes=30))
    row(S.RETRYING, next_attempt_at=now - dt.timedelta(minutes=5), last_error_code="rate_limited")
    row(S.PENDING, next_attempt_at=now + dt.timedelta(minutes=5))  # not due yet
    row(S.DEAD, kind=OutboxEvent.Kind.SUBSCRIBE, last_error_code="invalid")
    row(S.DEAD, kind=OutboxEvent.Kind.SUBSCRIBE, last_error_code="invalid")
    row(S.SENT, sent_at=now - dt.timedelta(minutes=10), last_error_code="old_error")
    row(S.SENT, sent_at=now - dt.timedelta(hours=5))
    row(S.SENT, sent_at=now - dt.timedelta(days=3))
    stats = operations.queue_stats(now=now)
    assert stats.by_status == {"pending": 2, "retrying": 1, "dead": 2, "sent": 3}
    assert stats.total == 8
    assert stats.by_kind == {
        "event": {"pending": 2, "retrying": 1, "sent": 3},
        "subscribe": {"dead": 2},
    }
    assert stats.oldest_due_age == dt.timedelta(minutes=30)
    assert (stats.sent_last_hour, stats.sent_last_day) == (1, 2)
    assert stats.top_error_codes == [("invalid", 2), ("rate_limited", 1)]


def test_queue_stats_on_an_empty_queue():
    stats = operations.queue_stats()
    assert stats.total == 0 and stats.oldest_due_age is None and stats.top_error_codes == []
