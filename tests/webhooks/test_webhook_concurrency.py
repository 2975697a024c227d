"""Two deliveries of the same item at the same moment: stored once, processed once."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections
from django.db.models.signals import post_save
from django.test import Client

from django_klaviyo.models import WebhookDelivery, WebhookItem
from django_klaviyo.webhooks.signals import klaviyo_webhook_event
from tests.webhooks.test_webhooks import delivery_body, event_item, post


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_the_same_item_process_it_once():
    assert connection.vendor == "postgresql"
    # Both requests stop after creating their delivery row, inside their transactions, and
    # go on together: both then insert the same item while the other's insert is uncommitted.
    both_inside = threading.Barrier(2, timeout=10)
    processed: list[str] = []
    lock = threading.Lock()

    def hold(sender, instance, created, **kwargs):
        if created:
            both_inside.wait()

    def count(sender, item, **kwargs):
        with lock:
            processed.append(item.external_id)

    post_save.connect(hold, sender=WebhookDelivery, dispatch_uid="test-hold")
    klaviyo_webhook_event.connect(count, dispatch_uid="test-count")
    responses: list[dict] = []
    errors: list[BaseException] = []

    def deliver(body: bytes) -> None:
        try:
            response = post(Client(), body)
            responses.append({"status": response.status_code, **response.json()})
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    # Different deliveries (a shared and an own item each), so both delivery rows are new.
    bodies = [
        delivery_body(event_item("shared-1"), event_item("own-a")),
        delivery_body(event_item("shared-1"), event_item("own-b")),
    ]
    threads = [threading.Thread(target=deliver, args=(body,)) for body in bodies]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    finally:
        post_save.disconnect(dispatch_uid="test-hold")
        klaviyo_webhook_event.disconnect(dispatch_uid="test-count")
    assert not errors, errors
    assert sorted(r["status"] for r in responses) == [200, 200]
    assert sorted(r["new"] for r in responses) == [1, 2]
    assert sorted(r["duplicates"] for r in responses) == [0, 1]
    assert sorted(processed) == ["own-a", "own-b", "shared-1"]
    assert WebhookItem.objects.filter(external_id="shared-1").count() == 1
    assert WebhookItem.objects.filter(processed=True).count() == 3
