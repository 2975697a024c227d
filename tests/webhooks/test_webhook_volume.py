"""Large webhook deliveries: stored in bulk and acknowledged with their items pending, then
handled by the worker, each item exactly once (see bench/webhook_volume.py for timings)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from django_klaviyo.client import KlaviyoClient
from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import WebhookDelivery, WebhookItem
from django_klaviyo.webhooks import dispatch
from django_klaviyo.webhooks.signals import klaviyo_webhook_event
from tests.webhooks.test_webhooks import delivery_body, event_item, post

ITEMS = 500
TOPIC = "event:klaviyo.opened_email"  # no built-in handler: only the test's receivers run


def large_body(count: int = ITEMS, prefix: str = "bulk") -> bytes:
    return delivery_body(*(event_item(f"{prefix}-{n}", TOPIC) for n in range(count)))


@pytest.fixture
def handled():
    """external_id of every item whose handlers ran (a thread-safe list)."""
    seen: list[str] = []
    lock = threading.Lock()

    def receiver(sender, item, **kwargs):
        with lock:
            seen.append(item.external_id)

    klaviyo_webhook_event.connect(receiver, dispatch_uid="test-volume-handled")
    yield seen
    klaviyo_webhook_event.disconnect(dispatch_uid="test-volume-handled")


def drain() -> dispatch.ProcessResult:
    total = dispatch.ProcessResult()
    while batch := dispatch.process_pending():
        if not batch.handled:
            break
        total.processed += batch.processed
        total.failed += batch.failed
    return total


@pytest.mark.django_db
def test_a_large_delivery_is_stored_in_bulk_and_acknowledged_with_its_items_pending(
    client, handled
):
    with CaptureQueriesContext(connection) as queries:
        response = post(client, large_body())

    assert response.status_code == 200
    assert response.json() == {
        "received": ITEMS,
        "new": ITEMS,
        "duplicates": 0,
        "failed": 0,
        "pending": ITEMS,
    }
    assert handled == []  # no handler ran inside the request
    table = WebhookItem._meta.db_table
    item_inserts = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("INSERT") and f'"{table}"' in q["sql"].split("(")[0]
    ]
    # One statement (a few on SQLite, whose statements take at most 999 parameters), not
    # one per item.
    assert 1 <= len(item_inserts) <= ITEMS // 50
    assert WebhookItem.objects.filter(processed=False, attempts=0).count() == ITEMS
    assert not WebhookDelivery.objects.get().processed


@pytest.mark.django_db
def test_the_worker_handles_each_pending_item_once(client, handled):
    post(client, large_body())

    result = drain()

    assert (result.processed, result.failed) == (ITEMS, 0)
    assert sorted(handled) == sorted(f"bulk-{n}" for n in range(ITEMS))
    assert WebhookItem.objects.filter(processed=True, attempts=1).count() == ITEMS
    delivery = WebhookDelivery.objects.get()
    assert delivery.processed and delivery.error == ""
    assert drain().handled == 0


@pytest.mark.django_db
def test_replays_of_a_large_delivery_stay_duplicates(client, handled):
    post(client, large_body())
    replay = post(client, large_body()).json()
    assert (replay["new"], replay["duplicates"], replay["pending"]) == (0, ITEMS, 0)
    drain()
    after = post(client, large_body()).json()
    assert (after["new"], after["duplicates"]) == (0, ITEMS)
    assert drain().handled == 0
    assert len(handled) == ITEMS
    assert WebhookItem.objects.count() == ITEMS


@pytest.mark.django_db
def test_failures_are_recorded_per_item_and_can_be_reprocessed(client, handled):
    broken = {"bulk-7", "bulk-300"}

    def fails_for_some(sender, item, **kwargs):
        if item.external_id in broken:
            raise RuntimeError(f"cannot handle {item.external_id}")

    post(client, large_body())
    klaviyo_webhook_event.connect(fails_for_some, dispatch_uid="test-volume-broken")
    try:
        result = drain()
    finally:
        klaviyo_webhook_event.disconnect(dispatch_uid="test-volume-broken")

    assert (result.processed, result.failed) == (ITEMS - 2, 2)
    failed = WebhookItem.objects.filter(processed=False)
    assert set(failed.values_list("external_id", flat=True)) == broken
    assert all(
        f"RuntimeError: cannot handle {item.external_id}" in item.error and item.attempts == 1
        for item in failed
    )
    delivery = WebhookDelivery.objects.get()
    assert not delivery.processed and delivery.error.startswith("2 item(s) failed")
    assert drain().handled == 0  # failed items are not retried on their own

    call_command("klaviyo_webhooks", "process", "--failed")  # the receiver is fixed now

    assert not WebhookItem.objects.filter(processed=False).exists()
    assert Counter(handled)["bulk-7"] == 2  # the failed run and the successful one
    delivery.refresh_from_db()
    assert delivery.processed and delivery.error == ""


@pytest.mark.django_db
def test_the_process_command_exits_non_zero_when_an_item_fails(client):
    def always_fails(sender, **kwargs):
        raise RuntimeError("handler down")

    post(client, large_body(count=150))
    klaviyo_webhook_event.connect(always_fails, dispatch_uid="test-volume-down")
    try:
        with pytest.raises(CommandError, match="150 webhook item"):
            call_command("klaviyo_webhooks", "process")
    finally:
        klaviyo_webhook_event.disconnect(dispatch_uid="test-volume-down")
    assert WebhookItem.objects.filter(processed=False, attempts=1).count() == 150


@pytest.mark.django_db
def test_the_flush_worker_handles_pending_items_too(client, handled):
    post(client, large_body())
    flush_outbox(client=KlaviyoClient())
    assert len(handled) == ITEMS
    assert WebhookItem.objects.filter(processed=True).count() == ITEMS
    # A flush restricted to some outbox kinds leaves webhooks alone.
    post(client, large_body(count=150, prefix="later"))
    flush_outbox(client=KlaviyoClient(), kinds=["event"])
    assert WebhookItem.objects.filter(processed=False, attempts=0).count() == 150


@pytest.mark.django_db
def test_small_deliveries_are_handled_before_the_answer_unless_configured(
    client, handled, settings
):
    small = post(client, large_body(count=100, prefix="small")).json()
    assert (small["new"], small["pending"]) == (100, 0)
    assert len(handled) == 100
    settings.KLAVIYO = {**settings.KLAVIYO, "WEBHOOK_INLINE_ITEMS": 0}
    deferred = post(client, large_body(count=1, prefix="deferred")).json()
    assert (deferred["new"], deferred["pending"]) == (1, 1)
    assert len(handled) == 100


class WorkerKilled(BaseException):
    """Not an Exception: escapes send_robust the way a SIGKILL'd worker's batch ends."""


@pytest.mark.django_db(transaction=True)
def test_a_worker_dying_mid_batch_leaves_its_items_pending(client, handled):
    post(client, large_body(count=150))

    def dies(sender, item, **kwargs):
        if item.external_id == "bulk-20":
            raise WorkerKilled

    klaviyo_webhook_event.connect(dies, dispatch_uid="test-volume-dies")
    try:
        with pytest.raises(WorkerKilled):
            dispatch.process_pending()
    finally:
        klaviyo_webhook_event.disconnect(dispatch_uid="test-volume-dies")
    # The batch rolled back: nothing it did is kept, everything is still pending.
    assert WebhookItem.objects.filter(processed=False, attempts=0).count() == 150
    handled.clear()
    assert drain().processed == 150
    assert sorted(handled) == sorted(f"bulk-{n}" for n in range(150))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_processors_never_handle_an_item_twice(client):
    assert connection.vendor == "postgresql"
    post(client, large_body())
    by_worker: dict[str, list[str]] = {"a": [], "b": []}
    b_has_handled_one = threading.Event()
    errors: list[BaseException] = []

    def record(sender, item, **kwargs):
        worker = threading.current_thread().name
        by_worker[worker].append(item.external_id)
        if worker == "b":
            b_has_handled_one.set()
        elif len(by_worker["a"]) == 1:
            # Worker a holds its first batch locked until b has claimed and handled items:
            # both are inside a batch at the same time.
            assert b_has_handled_one.wait(timeout=20), "worker b never got items"

    def work() -> None:
        try:
            drain()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    klaviyo_webhook_event.connect(record, dispatch_uid="test-volume-concurrent")
    a = threading.Thread(target=work, name="a")
    b = threading.Thread(target=work, name="b")
    try:
        a.start()
        b.start()
        a.join(timeout=60)
        b.join(timeout=60)
    finally:
        b_has_handled_one.set()
        klaviyo_webhook_event.disconnect(dispatch_uid="test-volume-concurrent")
    assert not a.is_alive() and not b.is_alive()
    assert not errors, errors
    everything = by_worker["a"] + by_worker["b"]
    assert by_worker["a"] and by_worker["b"]
    assert len(everything) == len(set(everything)) == ITEMS
    assert WebhookItem.objects.filter(processed=True, attempts=1).count() == ITEMS


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_reprocess_leaves_an_item_a_worker_holds_to_that_worker(client, handled):
    assert connection.vendor == "postgresql"
    post(client, large_body(count=2, prefix="held"))
    drain()
    held = WebhookItem.objects.get(external_id="held-0")
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        try:
            with transaction.atomic():
                WebhookItem.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(timeout=20)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(timeout=20)
        result = dispatch.process_items(WebhookItem.objects.all())
    finally:
        release.set()
        holder.join(timeout=20)
    assert result.processed == 1
    assert Counter(handled) == {"held-0": 1, "held-1": 2}


@pytest.mark.django_db
def test_the_admin_shows_pending_and_failed_items(client, settings):
    from django.contrib.auth import get_user_model
    from django.urls import reverse

    def fails_for_one(sender, item, **kwargs):
        if item.external_id == "bulk-1":
            raise RuntimeError("nope")

    post(client, large_body(count=150))
    klaviyo_webhook_event.connect(fails_for_one, dispatch_uid="test-volume-admin")
    try:
        dispatch.process_pending(limit=10)
    finally:
        klaviyo_webhook_event.disconnect(dispatch_uid="test-volume-admin")
    settings.KLAVIYO = {**settings.KLAVIYO, "TRACK_USERS": False}
    admin = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(admin)
    url = reverse("admin:django_klaviyo_webhookitem_changelist")

    def count(state: str) -> int:
        return client.get(url, {"state": state}).context["cl"].result_count

    assert (count("pending"), count("processed"), count("failed")) == (140, 9, 1)
