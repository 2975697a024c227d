"""The example shop's checkout and signup collect marketing consent
(``MarketingConsentFormMixin``): ticked boxes reach the sandbox as a subscription naming
the store, unticked ones send nothing, and the consent mirror shows Klaviyo's answer."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.http import http_date
from shop.models import Order, Product

from django_klaviyo.models import Consent, KlaviyoProfileLink, OutboxEvent
from tests.klaviyo_fixtures import flush_now

Kind = OutboxEvent.Kind
SECRET = "whsec-test-secret-0123456789"

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.urls("tests.projects.storefront_urls"),
    pytest.mark.usefixtures("fresh_rate_limits"),
]


@pytest.fixture
def shopper():
    Product.objects.create(
        sku="TEE-BLK",
        name="Black T-shirt",
        price=Decimal("19.99"),
        url="https://shop.example.com/p/TEE-BLK",
        inventory=2,
    )
    client = Client()
    client.post(reverse("shop:cart-add", args=["TEE-BLK"]))
    return client


def subscribe_rows() -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(kind=Kind.SUBSCRIBE))


def test_the_checkout_shows_unticked_boxes_and_the_disclosure(shopper):
    page = shopper.get(reverse("shop:checkout")).content.decode()

    assert 'name="email_marketing"' in page and 'name="sms_marketing"' in page
    assert "checked" not in page
    assert 'name="phone_number"' in page
    assert "marketing text messages (such as cart reminders and offers) from Test Shop" in page


def test_a_checkout_with_ticked_boxes_subscribes_the_shopper(shopper, klaviyo_sandbox):
    answer = shopper.post(
        reverse("shop:checkout"),
        {
            "email": "grace@example.com",
            "phone_number": "+14155550100",
            "email_marketing": "on",
            "sms_marketing": "on",
        },
        follow=True,
    )

    order = Order.objects.get()
    assert order.number in answer.content.decode()
    (row,) = subscribe_rows()
    assert row.payload["profile"] == {"email": "grace@example.com", "phone_number": "+14155550100"}
    assert row.payload["channels"] == ["email", "sms"]

    assert flush_now().dead == 0
    (job,) = klaviyo_sandbox.state.subscriptions()
    assert job["custom_source"] == "Test Shop"
    assert job["channels"] == ["email", "sms"]
    assert job["historical_import"] is False
    placed = [e for e in klaviyo_sandbox.state.events() if e["metric"] == "Placed Order"]
    assert placed and placed[0]["profile_id"] == job["profile_id"]


def test_a_checkout_with_unticked_boxes_subscribes_nobody(shopper, klaviyo_sandbox):
    shopper.post(
        reverse("shop:checkout"),
        {"email": "grace@example.com", "phone_number": "+14155550100"},
    )

    assert Order.objects.exists()
    assert subscribe_rows() == []
    flush_now()
    assert klaviyo_sandbox.state.subscriptions() == []


def test_the_sms_box_without_a_phone_number_is_shown_as_an_error(shopper):
    answer = shopper.post(
        reverse("shop:checkout"), {"email": "grace@example.com", "sms_marketing": "on"}
    )

    assert answer.status_code == 200
    assert "give a mobile number with its country code" in answer.content.decode()
    assert not Order.objects.exists()
    assert not OutboxEvent.objects.filter(kind__in=[Kind.SUBSCRIBE, Kind.EVENT]).exists()


def test_a_failed_checkout_subscribes_nobody(shopper):
    Product.objects.filter(sku="TEE-BLK").update(price=Decimal("-1"))  # a line place_order refuses

    answer = shopper.post(
        reverse("shop:checkout"), {"email": "grace@example.com", "email_marketing": "on"}
    )

    assert 'id="checkout-error"' in answer.content.decode()
    assert not Order.objects.exists()
    assert subscribe_rows() == []


def signed_consent_webhook(client: Client, topic: str, profile_id: str, email: str) -> None:
    """Klaviyo's system webhook for a consent change, signed as Klaviyo signs it."""
    event_id = uuid.uuid4().hex[:12]
    body = json.dumps(
        {
            "meta": {
                "timestamp": timezone.now().isoformat(),
                "klaviyo_webhook_id": "01KP4EGG9B0AEF4VJD749M6H9D",
                "klaviyo_account_id": "WBhXHN",
                "version": "2024-06-28",
            },
            "data": [
                {
                    "topic": f"event:klaviyo.{topic}",
                    "external_id": event_id,
                    "payload": {
                        "data": {
                            "type": "event",
                            "id": event_id,
                            "attributes": {
                                "datetime": timezone.now().isoformat(),
                                "event_properties": {"email_address": email},
                            },
                            "relationships": {
                                "profile": {"data": {"type": "profile", "id": profile_id}}
                            },
                        }
                    },
                }
            ],
        }
    ).encode()
    stamp = http_date()
    signature = hmac.new(SECRET.encode(), body + stamp.encode(), hashlib.sha256).hexdigest()
    answer = client.generic(
        "POST",
        "/klaviyo/webhooks/",
        body,
        content_type="application/json",
        headers={
            "Klaviyo-Webhook-Id": "01KP4EGG9B0AEF4VJD749M6H9D",
            "Klaviyo-Timestamp": stamp,
            "Klaviyo-Signature": signature,
        },
    )
    assert answer.status_code == 200, answer.content


def test_signup_with_the_email_box_subscribes_and_the_mirror_shows_it(klaviyo_sandbox):
    visitor = Client()
    page = visitor.get(reverse("shop:signup")).content.decode()
    assert 'name="email_marketing"' in page and "from Test Shop" in page

    answer = visitor.post(
        reverse("shop:signup"),
        {
            "username": "grace",
            "email": "grace@example.com",
            "password1": "a-long-Passw0rd!",
            "password2": "a-long-Passw0rd!",
            "email_marketing": "on",
        },
    )

    assert answer.status_code == 302, answer.content.decode()
    user = User.objects.get(username="grace")
    (row,) = subscribe_rows()
    assert row.payload["profile"] == {"email": "grace@example.com"}
    assert row.payload["channels"] == ["email"]
    assert flush_now().dead == 0
    (job,) = klaviyo_sandbox.state.subscriptions()
    assert job["custom_source"] == "Test Shop"
    assert klaviyo_sandbox.state.consent(job["profile_id"], "email") == "SUBSCRIBED"

    # Klaviyo tells the store the consent took (after any double opt-in): the mirror.
    signed_consent_webhook(
        Client(), "subscribed_to_email_marketing", job["profile_id"], "grace@example.com"
    )
    link = KlaviyoProfileLink.objects.get(user=user)
    assert link.email_consent == Consent.SUBSCRIBED
    assert link.sms_consent == Consent.UNKNOWN


def test_signup_without_boxes_subscribes_nobody(klaviyo_sandbox):
    Client().post(
        reverse("shop:signup"),
        {
            "username": "grace",
            "email": "grace@example.com",
            "password1": "a-long-Passw0rd!",
            "password2": "a-long-Passw0rd!",
        },
    )

    assert User.objects.filter(username="grace").exists()
    assert subscribe_rows() == []
