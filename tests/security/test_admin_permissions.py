"""Issue 19, case 4: a view-only staff user can change nothing through an admin action.

Every action of every django_klaviyo ModelAdmin declares ``permissions=``; walked with a
staff user holding only the ``view_*`` permissions, no action is offered and posting each
one anyway changes no row of any django_klaviyo table (the outbox included).
"""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import RequestFactory
from django.urls import reverse

from django_klaviyo import coupons
from django_klaviyo.models import (
    Consent,
    KlaviyoCampaign,
    KlaviyoCoupon,
    KlaviyoFlow,
    KlaviyoList,
    KlaviyoProfileLink,
    ListMembership,
    OutboxEvent,
    WebhookDelivery,
    WebhookItem,
)

pytestmark = pytest.mark.django_db


def klaviyo_admins() -> list[tuple[type, admin.ModelAdmin]]:
    return [
        (model, model_admin)
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label == "django_klaviyo"
    ]


def every_action(model_admin: admin.ModelAdmin) -> list[tuple[object, str]]:
    """Each action the admin could offer anyone: the site-wide ones and its own (Django 6.1
    gives ``Action`` objects, older versions tuples)."""
    return [
        (action.func, action.name) if hasattr(action, "func") else (action[0], action[1])
        for action in model_admin._get_base_actions()
    ]


def snapshot() -> dict[str, list[dict]]:
    return {
        model._meta.label: list(model._base_manager.order_by("pk").values())
        for model in apps.get_app_config("django_klaviyo").get_models()
    }


@pytest.fixture(autouse=True)
def _no_user_tracking(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "TRACK_USERS": False}


@pytest.fixture
def rows():
    """One row of every django_klaviyo table an action could change."""
    OutboxEvent.objects.create(
        kind=OutboxEvent.Kind.EVENT,
        metric="Placed Order",
        payload={"metric": "Placed Order", "profile": {"email": "ann@example.com"}},
        profile_key="email:ann@example.com",
        status=OutboxEvent.Status.DEAD,
        attempts=8,
    )
    delivery = WebhookDelivery.objects.create(webhook_id="W1", valid=True)
    WebhookItem.objects.create(
        delivery=delivery,
        external_id="E1",
        topic="event:klaviyo.subscribed_to_email_marketing",
        payload={"data": {"attributes": {"datetime": "2026-04-13T22:16:46+00:00"}}},
        error="earlier failure",
    )
    coupon = KlaviyoCoupon.objects.create(external_id="FALL", klaviyo_id="FALL")
    coupons.add_codes(coupon, ["FALL-1", "FALL-2"])
    link = KlaviyoProfileLink.objects.create(
        email="ann@example.com", klaviyo_id="01ANN", email_consent=Consent.SUBSCRIBED
    )
    newsletter = KlaviyoList.objects.create(klaviyo_id="LIST1", name="Newsletter")
    ListMembership.objects.create(klaviyo_list=newsletter, profile=link, synced_member=True)
    KlaviyoCampaign.objects.create(klaviyo_id="C1", name="Spring", channel="email", raw={})
    KlaviyoFlow.objects.create(klaviyo_id="F1", name="Welcome", raw={})


@pytest.fixture
def viewer(client):
    user = get_user_model().objects.create_user("viewer", "viewer@example.com", "pw")
    user.is_staff = True
    user.save()
    views = Permission.objects.filter(
        content_type__app_label="django_klaviyo", codename__startswith="view_"
    )
    user.user_permissions.add(*views)
    client.force_login(user)
    client.user = user
    return client


def test_every_action_declares_its_permissions():
    undeclared = [
        f"{type(model_admin).__name__}.{name}"
        for _, model_admin in klaviyo_admins()
        for func, name in every_action(model_admin)
        if not getattr(func, "allowed_permissions", None)
    ]
    assert undeclared == []


def test_a_view_only_user_is_offered_no_action(viewer):
    request = RequestFactory().get("/")
    request.user = viewer.user
    offered = {
        type(model_admin).__name__: sorted(model_admin.get_actions(request))
        for _, model_admin in klaviyo_admins()
    }
    assert {name: names for name, names in offered.items() if names} == {}


def test_no_action_posted_by_a_view_only_user_changes_anything(viewer, rows):
    walked = 0
    before = snapshot()
    for model, model_admin in klaviyo_admins():
        url = reverse(f"admin:django_klaviyo_{model._meta.model_name}_changelist")
        # The changelist itself is open to the viewer: the refusal is the action's.
        assert viewer.get(url).status_code == 200, url
        pks = [str(pk) for pk in model._base_manager.values_list("pk", flat=True)]
        for _, name in every_action(model_admin):
            viewer.post(url, {"action": name, "_selected_action": pks, "post": "yes"})
            walked += 1
            assert snapshot() == before, f"{model._meta.label}: {name}"
    # Every registered admin's actions were walked (the coupon admin's among them).
    assert walked >= len(klaviyo_admins())
