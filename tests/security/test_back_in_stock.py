"""Back in stock cannot be used to probe SKUs or to sign strangers up in bulk (issue 19,
case 12): unknown and in-stock variants get the same answer and queue nothing, and one
email or phone number is subscribed at most BACK_IN_STOCK_CONTACT_RATE times."""

from __future__ import annotations

from typing import Any

import pytest

from tests.security.helpers import BACK_IN_STOCK, post_json, product, subscriptions, visitor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_rate_limits")]


def subscribe(variant: str, n: int = 0, **contact: Any):
    contact = contact or {"email": "ada@example.com"}
    # Each from its own address, so only the per-contact limit can hold them.
    client = visitor(REMOTE_ADDR=f"198.51.100.{n}")
    return post_json(client, BACK_IN_STOCK, {"variant": variant, **contact})


def test_unknown_and_in_stock_variants_are_answered_alike_and_queue_nothing():
    product("SOLD-OUT", inventory=0)
    product("IN-STOCK", inventory=5)

    unknown = subscribe("NO-SUCH-SKU", 1)
    in_stock = subscribe("IN-STOCK", 2)

    assert unknown.status_code == in_stock.status_code == 400
    assert unknown.json() == in_stock.json()
    assert list(unknown.json()) == ["variant"]
    assert subscriptions() == 0
    assert subscribe("SOLD-OUT", 3).status_code == 202


def test_one_email_is_subscribed_a_limited_number_of_times(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "BACK_IN_STOCK_CONTACT_RATE": "3/hour"}
    for n in range(5):
        product(f"V{n}")

    statuses = [subscribe(f"V{n}", n, email="Victim@Example.com ").status_code for n in range(4)]
    other_case = subscribe("V4", 9, email="victim@example.com")

    assert statuses == [202, 202, 202, 429]
    assert other_case.status_code == 429
    assert "email" in other_case.json()
    assert subscriptions() == 3
    assert subscribe("V4", 10, email="someone@example.com").status_code == 202


def test_one_phone_number_is_subscribed_a_limited_number_of_times(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "BACK_IN_STOCK_CONTACT_RATE": "2/hour"}
    for n in range(3):
        product(f"V{n}")

    def sms(n: int, email: str, phone: str):
        return subscribe(f"V{n}", n, email=email, phone_number=phone, channels=["sms"])

    # A new email each time does not reset the phone number's count.
    statuses = [sms(n, f"x{n}@example.com", "+1 (415) 555-0100").status_code for n in range(3)]

    assert statuses == [202, 202, 429]
    assert "phone_number" in sms(0, "y@example.com", "+14155550100").json()
