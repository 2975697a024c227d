"""``klaviyo_backfill tracked:<app_label.Model>``: each tracked object's current status as
a backfill event (no flows fire), with the live path's dedupe key, and its profile mirror."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from django_klaviyo.models import OutboxEvent
from tests.projects.subshop.models import Plan, Subscription

pytestmark = pytest.mark.django_db

SOURCE = "tracked:subshop.Subscription"


@pytest.fixture
def history():
    """Subscriptions saved before the model was tracked."""
    plan = Plan.objects.create(name="Pro")
    users = [
        get_user_model().objects.create(username=f"u{i}", email=f"u{i}@example.com")
        for i in range(3)
    ]
    return [
        Subscription.objects.create(customer=user, plan=plan, status=status, mrr=Decimal("10"))
        for user, status in zip(users, ("active", "cancelled", "trial"), strict=True)
    ]


def backfill(*args: str) -> str:
    out = StringIO()
    call_command("klaviyo_backfill", *args, "--no-progress", stdout=out, stderr=StringIO())
    return out.getvalue()


def tracked_rows():
    return OutboxEvent.objects.filter(dedupe_key__startswith="tracked:").order_by("metric")


def test_each_object_becomes_its_current_status_event_once(history, tracked):
    backfill(SOURCE)
    rows = list(tracked_rows())
    assert [r.metric for r in rows] == ["Subscription Cancelled", "Subscription Started"]
    assert all(r.payload["backfill"] is True for r in rows)
    mirrors = OutboxEvent.objects.filter(dedupe_key__contains=":backfill:")
    assert mirrors.count() == 3  # trial has no event, but its profile is mirrored
    backfill(SOURCE, "--restart")
    assert tracked_rows().count() == 2 and mirrors.count() == 3


def test_an_object_saved_live_and_backfilled_is_enqueued_once(tracked):
    plan = Plan.objects.create(name="Pro")
    user = get_user_model().objects.create(username="ada", email="ada@example.com")
    Subscription.objects.create(customer=user, plan=plan, status="active")
    backfill(SOURCE)
    (row,) = tracked_rows()
    assert "backfill" not in row.payload  # the live row, written first


def test_an_untracked_model_is_refused_with_the_tracked_ones_named(tracked):
    with pytest.raises(CommandError, match=r"tracked:subshop\.Subscription"):
        backfill("tracked:subshop.Plan")
