"""A project with ``USE_TZ = False`` (Django 4.2's default when unset): its datetimes are
naive, read in TIME_ZONE. ``manage.py check`` says it is not supported (E014), but a
project that goes on regardless must not have its saves broken or its orders misdated."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import override_settings
from shop import services

from django_klaviyo.models import OutboxEvent
from tests.klaviyo_fixtures import flush_now

pytestmark = pytest.mark.django_db

LINES = [{"sku": "TEE", "name": "T-shirt", "quantity": 2, "unit_price": Decimal("10.00")}]


@override_settings(USE_TZ=False, TIME_ZONE="Europe/Paris")
def test_an_order_placed_with_naive_times_is_enqueued_and_sent(klaviyo_sandbox):
    order = services.place_order(email="naive@example.com", lines=LINES, number="N-1")

    row = OutboxEvent.objects.get(metric="Placed Order")
    assert row.status == OutboxEvent.Status.PENDING
    # The naive placed_at is Paris time: Klaviyo gets it in UTC (one or two hours earlier).
    sent_time = row.payload["time"]
    assert sent_time.endswith("+00:00")
    assert sent_time[:13] != order.placed_at.isoformat()[:13]

    flush_now()

    row.refresh_from_db()
    assert row.status == OutboxEvent.Status.SENT
    assert klaviyo_sandbox.state.request_counts()["bulk_create_events"] == {202: 1}
