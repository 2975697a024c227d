"""The example shop's subscriptions (example_project/shop) with its own TRACKED_MODELS
entry: it passes ``check``, and ``demo_subscriptions`` lands Subscription Started, Paused
and Cancelled in the sandbox, as the demo's summary shows."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from shop.models import Subscription
from shop_site.settings import KLAVIYO as SHOP_KLAVIYO

from django_klaviyo.checks import check_klaviyo_settings
from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent
from django_klaviyo.tracking import receivers

pytestmark = pytest.mark.django_db


@pytest.fixture
def shop_tracking(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "TRACKED_MODELS": SHOP_KLAVIYO["TRACKED_MODELS"]}
    receivers.connect()
    yield
    receivers.disconnect(Subscription)


def test_the_shop_entry_passes_check(shop_tracking):
    assert [m.id for m in check_klaviyo_settings() if "TRACKED_MODELS" in m.msg] == []


def test_demo_subscriptions_reach_the_sandbox(shop_tracking, klaviyo_sandbox):
    for i in range(3):
        get_user_model().objects.create(username=f"c{i}", email=f"c{i}@example.com")
    call_command("demo_subscriptions", stdout=StringIO())
    flush_outbox()
    assert OutboxEvent.objects.exclude(status="sent").count() == 0
    metrics = klaviyo_sandbox.state.events
    assert len(metrics(metric="Subscription Started")) == 3
    assert len(metrics(metric="Subscription Paused")) == 1
    (cancelled,) = metrics(metric="Subscription Cancelled")
    assert cancelled["value"] == 29.0 and cancelled["properties"]["Plan"] == "Coffee Club Plus"
