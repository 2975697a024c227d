"""Who a storefront event is about: identity precedence (issue 19, case 6), the identify
step for a guest who types an email at checkout, and when a checkout start counts again
(issue 20, case 6). Runs on SQLite and PostgreSQL (the re-arm rule reads the outbox)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from django.core.checks import run_checks
from django.urls import reverse
from shop.models import Order, Product

from django_klaviyo.models import OutboxEvent
from tests.storefront.visitors import (
    CHECKOUT,
    MUG,
    PRODUCT,
    VIEW,
    checkouts,
    last_profile,
    new_visitor,
    post,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.urls("tests.projects.storefront_urls"),
    pytest.mark.usefixtures("fresh_throttle"),
]


# --- the identify step (issue 20, case 6) ------------------------------------------------


def test_identify_sends_the_open_checkout_on_the_typed_email(visitor):
    assert post(visitor, CHECKOUT).status_code == 202
    (anonymous,) = checkouts()
    anonymous_id = anonymous.payload["profile"]["anonymous_id"]

    answer = post(visitor, {"event": "identify", "email": " Grace@Example.com "})

    assert answer.status_code == 202, answer.content
    first, linked = checkouts()
    assert answer.json() == {"event": "identify", "outbox_id": str(linked.pk)}
    # One event links the anonymous id to the email; Klaviyo deduplicates by
    # (profile, metric, unique_id), so on a merged profile this is the same checkout.
    assert linked.payload["profile"] == {
        "email": "grace@example.com",
        "anonymous_id": anonymous_id,
    }
    assert linked.unique_id == first.unique_id
    assert linked.payload["time"] == first.payload["time"]
    assert linked.payload["properties"] == first.payload["properties"]
    assert linked.payload["value"] == first.payload["value"]

    # Typing the same email again sends nothing more.
    post(visitor, {"event": "identify", "email": "grace@example.com"})
    assert len(checkouts()) == 2
    # From then on the visitor's events are the email's, without the anonymous id.
    post(visitor, VIEW)
    assert last_profile() == {"email": "grace@example.com"}


def test_identify_before_any_checkout_is_remembered_for_later_events(visitor):
    post(visitor, VIEW)
    anonymous_id = last_profile()["anonymous_id"]
    answer = post(visitor, {"event": "identify", "phone_number": "+1 415 555 0100"})
    assert answer.status_code == 202
    assert answer.json() == {"event": "identify", "outbox_id": None}

    post(visitor, CHECKOUT)
    # The first event after identification carries the anonymous id once, to link them.
    assert last_profile("Started Checkout") == {
        "phone_number": "+14155550100",
        "anonymous_id": anonymous_id,
    }
    post(visitor, VIEW)
    assert last_profile() == {"phone_number": "+14155550100"}


def test_a_corrected_email_sends_the_open_checkout_to_the_new_one(visitor):
    post(visitor, CHECKOUT)
    post(visitor, {"event": "identify", "email": "gracee@example.com"})
    post(visitor, {"event": "identify", "email": "grace@example.com"})
    assert [row.payload["profile"].get("email") for row in checkouts()] == [
        None,
        "gracee@example.com",
        "grace@example.com",
    ]
    assert len({row.unique_id for row in checkouts()}) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event": "identify"}, "email"),
        ({"event": "identify", "email": "not-an-email"}, "email"),
        ({"event": "identify", "phone_number": "call me"}, "phone_number"),
    ],
)
def test_a_bad_identify_is_a_400_naming_the_field(visitor, body, field):
    answer = post(visitor, body)
    assert answer.status_code == 400
    assert field in answer.json(), answer.json()
    assert "klaviyo_identified" not in visitor.session


def test_identify_needs_the_csrf_token(visitor):
    answer = visitor.post(
        reverse("klaviyo-storefront-events"),
        json.dumps({"event": "identify", "email": "grace@example.com"}),
        content_type="application/json",
    )
    assert answer.status_code == 403
    assert "klaviyo_identified" not in visitor.session


def test_a_logged_in_shopper_stays_herself_whatever_she_types(visitor, django_user_model):
    user = django_user_model.objects.create_user("ada", email="ada@example.com")
    visitor.force_login(user)
    post(visitor, CHECKOUT)
    answer = post(visitor, {"event": "identify", "email": "someone@example.com"})
    assert answer.status_code == 202
    assert answer.json() == {"event": "identify", "outbox_id": None}
    post(visitor, VIEW)
    assert last_profile() == {"email": "ada@example.com", "external_id": str(user.pk)}
    assert len(checkouts()) == 1


# --- when a checkout start counts again (issue 20, case 6) -------------------------------


def test_a_reload_in_the_same_visit_with_the_same_cart_enqueues_nothing(visitor):
    first = post(visitor, CHECKOUT).json()
    again = post(visitor, CHECKOUT).json()
    assert again["outbox_id"] == first["outbox_id"]
    assert len(checkouts()) == 1


def test_a_changed_cart_counts_again(visitor):
    post(visitor, CHECKOUT)
    post(visitor, {**CHECKOUT, "items": [PRODUCT, MUG]})
    assert len(checkouts()) == 2


def test_the_same_shopper_on_another_device_counts_again(django_user_model):
    user = django_user_model.objects.create_user("ada", email="ada@example.com")
    phone, laptop = new_visitor(), new_visitor()
    phone.force_login(user)
    laptop.force_login(user)

    first = post(phone, CHECKOUT).json()
    second = post(laptop, CHECKOUT).json()

    assert second["outbox_id"] != first["outbox_id"]
    assert [row.payload["profile"]["email"] for row in checkouts()] == ["ada@example.com"] * 2


def test_a_return_after_the_repeat_time_counts_again(visitor, settings):
    post(visitor, CHECKOUT)
    # The shopper comes back 31 minutes later in the same session, with the same cart.
    back_in_time(checkouts()[-1], minutes=31)
    post(visitor, CHECKOUT)
    assert len(checkouts()) == 2

    settings.KLAVIYO = {**settings.KLAVIYO, "STARTED_CHECKOUT_REPEAT_AFTER": 3600}
    back_in_time(checkouts()[-1], minutes=31)
    post(visitor, CHECKOUT)
    assert len(checkouts()) == 2  # 31 minutes is within this store's hour


def back_in_time(row, *, minutes):
    OutboxEvent.objects.filter(pk=row.pk).update(
        created_at=row.created_at - dt.timedelta(minutes=minutes)
    )


def test_the_guest_s_order_still_carries_the_anonymous_id_that_linked_them(visitor, settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "ORDER_FIELDS": {"anonymous_id": "klaviyo_anonymous_id"},
    }
    Product.objects.create(sku="TEE-BLK", name="Black T-shirt", price=Decimal("19.99"), inventory=2)
    visitor.post(reverse("shop:cart-add", args=["TEE-BLK"]), HTTP_X_CSRFTOKEN=csrf(visitor))
    page = visitor.get(reverse("shop:checkout")).content.decode()
    assert 'data-klaviyo-identify="email"' in page  # the example shop marks its field
    post(visitor, CHECKOUT)
    anonymous_id = checkouts()[0].payload["profile"]["anonymous_id"]
    post(visitor, {"event": "identify", "email": "grace@example.com"})

    visitor.post(
        reverse("shop:checkout"),
        {"email": "grace@example.com", "csrfmiddlewaretoken": csrf(visitor)},
    )

    assert Order.objects.get().klaviyo_anonymous_id == anonymous_id


def csrf(client):
    return client.cookies["csrftoken"].value


@pytest.mark.parametrize("value", ["30 minutes", 0, None])
def test_a_bad_repeat_time_fails_the_checks(settings, value):
    settings.KLAVIYO = {**settings.KLAVIYO, "STARTED_CHECKOUT_REPEAT_AFTER": value}
    messages = [m for m in run_checks() if "STARTED_CHECKOUT_REPEAT_AFTER" in m.msg]
    assert [m.id for m in messages] == ["django_klaviyo.E011"]


def test_an_erased_open_checkout_is_not_sent_again(visitor):
    post(visitor, CHECKOUT)
    OutboxEvent.objects.update(payload={"erased": True})
    answer = post(visitor, {"event": "identify", "email": "grace@example.com"})
    assert answer.status_code == 202
    assert answer.json()["outbox_id"] is None
    assert OutboxEvent.objects.count() == 1
