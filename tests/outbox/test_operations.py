"""Operator actions on the outbox and the dashboard numbers."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from django_klaviyo.models import OutboxEvent
from django_klaviyo.outbox import actions as operations

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


def test_discard_deletes_all_but_rows_in_flight():
    rows = [row(s) for s in (S.DEAD, S.PENDING, S.SENT, S.SENDING, S.AWAITING_JOB)]
    assert operations.discard(OutboxEvent.objects.all()) == 3
    # Being sent, or awaiting the Klaviyo job that will say which entries it refused.
    assert set(OutboxEvent.objects.values_list("pk", flat=True)) == {rows[3].pk, rows[4].pk}
