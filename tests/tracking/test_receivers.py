"""A subscription's lifecycle (tests/projects/subshop) becomes events by settings only:
in the save's transaction, once per transition, with the profile mirror; what Klaviyo
would refuse is a dead row, never a broken save."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent
from django_klaviyo.outbox.refused import INVALID_ON_SAVE, MAPPER_ERROR
from tests.projects.subshop.models import Plan, Subscription

pytestmark = pytest.mark.django_db

Status = Subscription.Status


@pytest.fixture
def customer():
    return get_user_model().objects.create(username="ada", email="ada@example.com")


@pytest.fixture
def plan():
    return Plan.objects.create(name="Pro")


def subscribe(customer, plan, status=Status.ACTIVE, **fields) -> Subscription:
    return Subscription.objects.create(
        customer=customer, plan=plan, status=status, mrr=Decimal("29.90"), **fields
    )


def events(metric=None) -> list[OutboxEvent]:
    rows = OutboxEvent.objects.filter(kind=OutboxEvent.Kind.EVENT).order_by("created_at")
    return list(rows.filter(metric=metric) if metric else rows)


def mirrors() -> list[OutboxEvent]:
    rows = OutboxEvent.objects.filter(kind=OutboxEvent.Kind.PROFILE_UPSERT, status="pending")
    return list(
        rows.exclude(dedupe_key__startswith="profile_upsert:auth.user").order_by("created_at")
    )


def test_created_in_a_tracked_status_sends_its_event_and_mirrors_the_profile(
    tracked, customer, plan
):
    sub = subscribe(customer, plan)
    (row,) = events()
    assert row.metric == "Subscription Started" and row.status == "pending"
    payload = row.payload
    assert payload["value"] == 29.9 and payload["value_currency"] == "USD"
    assert payload["properties"] == {"Plan": "Pro", "Interval": "month"}
    assert payload["profile"] == {"email": "ada@example.com", "external_id": str(customer.pk)}
    assert row.unique_id.startswith(f"subshop.subscription:{sub.pk}:active:")
    assert payload["time"].startswith(str(sub.updated_at.year))
    (mirror,) = mirrors()
    assert mirror.payload["profile"]["properties"] == {
        "subscription_status": "active",
        "plan": "Pro",
    }


def test_each_status_change_sends_its_metric_and_saves_without_one_send_nothing(
    tracked, customer, plan
):
    sub = subscribe(customer, plan, status=Status.TRIAL)
    assert events() == []  # trial has no metric; the profile still mirrors it
    assert mirrors()[0].payload["profile"]["properties"]["subscription_status"] == "trial"
    sub.status = Status.ACTIVE
    sub.save()
    sub.interval = "year"
    sub.save()  # no status change: no event
    sub.save()
    sub.status = Status.CANCELLED
    sub.save()
    assert [r.metric for r in events()] == ["Subscription Started", "Subscription Cancelled"]
    assert [m.payload["profile"]["properties"]["subscription_status"] for m in mirrors()] == [
        "trial",
        "active",
        "cancelled",
    ]


def test_a_transition_is_written_once_however_often_it_is_seen(tracked, customer, plan):
    tracked(time=...)  # no time path: each status's event once per object
    sub = subscribe(customer, plan)
    stale = Subscription.objects.get(pk=sub.pk)
    for copy in (sub, stale):
        copy.status = Status.CANCELLED
        copy.save()
    assert [r.metric for r in events()] == ["Subscription Started", "Subscription Cancelled"]
    (cancelled,) = events("Subscription Cancelled")
    assert cancelled.unique_id == f"subshop.subscription:{sub.pk}:cancelled"
    assert cancelled.dedupe_key == f"tracked:subshop.subscription:{sub.pk}:cancelled"


def test_with_a_time_path_an_object_entering_a_status_again_sends_again(tracked, customer, plan):
    sub = subscribe(customer, plan)
    for status in (Status.PAUSED, Status.ACTIVE):
        sub.status = status
        sub.save()
    assert [r.metric for r in events()] == [
        "Subscription Started",
        "Subscription Paused",
        "Subscription Started",
    ]


def test_a_save_leaving_out_the_status_field_sends_nothing(tracked, customer, plan):
    sub = subscribe(customer, plan)
    sub.status = Status.CANCELLED
    sub.save(update_fields=["interval"])
    assert [r.metric for r in events()] == ["Subscription Started"]


def test_a_rolled_back_save_leaves_no_row(tracked, customer, plan):
    with pytest.raises(RuntimeError), transaction.atomic():
        subscribe(customer, plan)
        raise RuntimeError("checkout failed")
    assert OutboxEvent.objects.filter(dedupe_key__startswith="tracked:").count() == 0
    assert mirrors() == []


def test_refused_data_is_a_dead_row_and_the_save_goes_on(tracked, plan):
    bad = get_user_model().objects.create(username="bad")
    get_user_model().objects.filter(pk=bad.pk).update(email="not-an-email")
    bad.refresh_from_db()
    sub = subscribe(bad, plan)
    assert Subscription.objects.filter(pk=sub.pk).exists()
    (row,) = events()
    assert (row.status, row.last_error_code) == ("dead", INVALID_ON_SAVE)
    assert row.metric == "Subscription Started" and "email" in row.last_error_detail
    dead = OutboxEvent.objects.get(kind=OutboxEvent.Kind.PROFILE_UPSERT, status="dead")
    assert dead.last_error_code == INVALID_ON_SAVE


def crashing_mapper(instance, previous_status, created):
    raise ZeroDivisionError("bug in the store's mapper")


def plan_mapper(instance, previous_status, created):
    from django_klaviyo.tracking.mapper import default_tracked_events

    specs = default_tracked_events(instance, previous_status, created)
    for spec in specs:
        spec["properties"]["PreviousStatus"] = previous_status
    return specs


def test_a_custom_mapper_gets_the_previous_status(tracked, customer, plan):
    tracked(mapper=f"{__name__}.plan_mapper")
    sub = subscribe(customer, plan, status=Status.TRIAL)
    sub.status = Status.ACTIVE
    sub.save()
    (row,) = events()
    assert row.payload["properties"]["PreviousStatus"] == "trial"


def test_a_crashing_mapper_is_a_dead_row_naming_it(tracked, customer, plan):
    tracked(mapper=crashing_mapper)
    subscribe(customer, plan)
    (row,) = events()
    assert (row.status, row.last_error_code) == ("dead", MAPPER_ERROR)
    assert "ZeroDivisionError" in row.last_error_detail
    assert "subshop.Subscription" in row.payload["mapper"]
    assert mirrors()  # the mirror does not depend on the mapper


def test_disabled_writes_nothing(tracked, customer, plan, settings):
    before = OutboxEvent.objects.count()
    settings.KLAVIYO = {**settings.KLAVIYO, "ENABLED": False}
    subscribe(customer, plan)
    assert OutboxEvent.objects.count() == before


def test_the_events_and_the_mirror_reach_the_sandbox_on_spec(
    tracked, customer, plan, klaviyo_sandbox
):
    sub = subscribe(customer, plan)
    sub.status = Status.CANCELLED
    sub.save()
    flush_outbox()
    assert OutboxEvent.objects.exclude(status="sent").count() == 0
    (started,) = klaviyo_sandbox.state.events(metric="Subscription Started")
    (cancelled,) = klaviyo_sandbox.state.events(metric="Subscription Cancelled")
    assert started["value"] == 29.9 and started["properties"]["Plan"] == "Pro"
    assert cancelled["properties"]["Interval"] == "month"
    profile = klaviyo_sandbox.state.profile(
        klaviyo_sandbox.state.find_profile_id("email", "ada@example.com")
    )
    assert profile["properties"]["subscription_status"] == "cancelled"
    assert profile["properties"]["plan"] == "Pro"


def test_a_phone_number_that_is_not_e164_is_left_out_when_the_email_remains(
    tracked, customer, plan
):
    tracked(profile={"email": "customer.email", "phone_number": lambda sub: "555-0100"})
    subscribe(customer, plan)
    (row,) = events()
    assert row.status == "pending" and "phone_number" not in row.payload["profile"]
    assert "phone_number left out" in row.outcome_note
    (mirror,) = mirrors()
    assert "phone_number" not in mirror.payload["profile"]
