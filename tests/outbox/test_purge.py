"""Purging finished outbox rows: only sent and dead ones, only when old enough."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_klaviyo.models import OutboxEvent, WebhookDelivery, WebhookItem
from django_klaviyo.outbox.purge import purge

Status = OutboxEvent.Status

pytestmark = pytest.mark.django_db


def row(status: str, *, age_days: float, sent_days: float | None = None, touched_days=None):
    now = timezone.now()
    created = OutboxEvent.objects.create(
        kind=OutboxEvent.Kind.EVENT,
        payload={"metric": "M", "profile": {"email": "a@example.com"}},
        status=status,
        created_at=now - timedelta(days=age_days),
        sent_at=None if sent_days is None else now - timedelta(days=sent_days),
    )
    # updated_at is auto_now; set it the way an old row would carry it.
    touched = age_days if touched_days is None else touched_days
    OutboxEvent.objects.filter(pk=created.pk).update(updated_at=now - timedelta(days=touched))
    return created


def test_purge_deletes_only_old_sent_and_dead_rows():
    old_sent = row(Status.SENT, age_days=40, sent_days=39)
    old_dead = row(Status.DEAD, age_days=40)
    kept = [
        row(Status.PENDING, age_days=400),
        row(Status.RETRYING, age_days=400),
        row(Status.SENDING, age_days=400),
        row(Status.SENT, age_days=40, sent_days=2),  # delivered recently after retries
        row(Status.SENT, age_days=5, sent_days=5),
        row(Status.DEAD, age_days=5),
        row(Status.DEAD, age_days=40, touched_days=1),  # dead-lettered only yesterday
    ]

    assert purge(older_than=timedelta(days=30)) == {"outbox": 2, "webhook_deliveries": 0}

    remaining = set(OutboxEvent.objects.values_list("pk", flat=True))
    assert remaining == {r.pk for r in kept}
    assert old_sent.pk not in remaining and old_dead.pk not in remaining


def test_purge_works_in_batches_and_dry_run_deletes_nothing():
    for _ in range(5):
        row(Status.SENT, age_days=10, sent_days=10)

    assert purge(older_than=timedelta(days=2), dry_run=True)["outbox"] == 5
    assert OutboxEvent.objects.count() == 5
    assert purge(older_than=timedelta(days=2), batch_size=2)["outbox"] == 5
    assert OutboxEvent.objects.count() == 0


@pytest.mark.parametrize("bad", [{"older_than": timedelta(days=-1)}, {"batch_size": 0}])
def test_purge_rejects_bad_arguments(bad):
    kwargs = {"older_than": timedelta(days=1), **bad}
    with pytest.raises(ValueError):
        purge(**kwargs)


def test_purge_command_prints_counts():
    row(Status.DEAD, age_days=100)
    row(Status.PENDING, age_days=100)
    out = StringIO()

    call_command("klaviyo_purge", "--older-than", "30", "--dry-run", stdout=out)
    assert "Would delete 1 outbox row(s)." in out.getvalue()
    assert OutboxEvent.objects.count() == 2

    out = StringIO()
    call_command("klaviyo_purge", "--older-than", "30", "--batch-size", "10", stdout=out)
    assert "Deleted 1 outbox row(s)." in out.getvalue()
    assert OutboxEvent.objects.get().status == Status.PENDING


@pytest.mark.parametrize("args", [["--older-than", "-3"], ["--older-than", "x"], []])
def test_purge_command_rejects_bad_options(args):
    with pytest.raises(CommandError):
        call_command("klaviyo_purge", *args)


def delivery(*, age_days: float, processed: list[bool]) -> WebhookDelivery:
    stored = WebhookDelivery.objects.create(valid=True, item_count=len(processed))
    WebhookDelivery.objects.filter(pk=stored.pk).update(
        received_at=timezone.now() - timedelta(days=age_days)
    )
    for done in processed:
        WebhookItem.objects.create(
            delivery=stored,
            external_id=f"{stored.pk.hex[:8]}-{WebhookItem.objects.count()}",
            topic="event:klaviyo.bounced_email",
            processed=done,
        )
    return stored


def test_purge_deletes_old_webhook_deliveries_whose_items_were_all_processed():
    old_done = delivery(age_days=40, processed=[True, True])
    old_failed = delivery(age_days=40, processed=[True, False])  # kept for "reprocess"
    recent = delivery(age_days=2, processed=[True])

    counts = purge(older_than=timedelta(days=30))

    assert counts == {"outbox": 0, "webhook_deliveries": 1}
    assert set(WebhookDelivery.objects.values_list("pk", flat=True)) == {old_failed.pk, recent.pk}
    assert not WebhookItem.objects.filter(delivery_id=old_done.pk).exists()
    assert WebhookItem.objects.count() == 3
