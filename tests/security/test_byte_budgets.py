"""What one anonymous post, and one address in a minute, may store (issue 19, case 3):
a stored storefront event is at most limits.MAX_PUBLIC_EVENT_BYTES, a body at most
limits.MAX_PUBLIC_BODY_BYTES, and an address stores at most
STOREFRONT_ADDRESS_BYTES_PER_MINUTE; refusals are a 413/429 naming the field."""

from __future__ import annotations

import json

import pytest
from django.core.serializers.json import DjangoJSONEncoder

from django_klaviyo.models import OutboxEvent
from django_klaviyo.rules import limits
from django_klaviyo.storefront.serializers import MAX_CART_ITEMS
from tests.security.helpers import EVENTS, PRODUCT, VIEWED, post_json, visitor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_rate_limits")]


def stored_bytes() -> int:
    return sum(
        len(json.dumps(row.payload, cls=DjangoJSONEncoder).encode())
        for row in OutboxEvent.objects.all()
    )


def fat_item(n: int) -> dict:
    url = "https://shop.example.com/" + "p" * 1970 + f"/{n:04d}"
    return {
        "product_id": f"P{n}",
        "sku": f"P{n}",
        "name": "N" * 500,
        "price": "1.00",
        "quantity": 1,
        "product_url": url,
        "image_url": url,
        "categories": [f"{c:02d}" + "C" * 253 for c in range(50)],
        "brand": "B" * 255,
    }


def test_an_event_over_the_stored_size_cap_is_refused_naming_the_field():
    # Two of the largest items the fields allow: under the body cap, over the event cap.
    body = {"event": "started_checkout", "items": [fat_item(n) for n in range(2)]}
    body["checkout_id"] = "c-1"
    assert len(json.dumps(body)) < limits.MAX_PUBLIC_BODY_BYTES

    answer = post_json(visitor(), EVENTS, body)

    assert answer.status_code == 413, answer.content
    assert "items" in answer.json()
    assert str(limits.MAX_PUBLIC_EVENT_BYTES) in answer.json()["items"][0]
    assert OutboxEvent.objects.count() == 0


def test_a_body_over_the_cap_is_refused_before_it_is_parsed():
    body = {"event": "started_checkout", "checkout_id": "c-1"}
    body["items"] = [fat_item(n) for n in range(100)]  # about 1.8 MB stored before

    answer = post_json(visitor(), EVENTS, body)

    assert answer.status_code == 413
    assert str(limits.MAX_PUBLIC_BODY_BYTES) in answer.json()["detail"]
    assert OutboxEvent.objects.count() == 0


def test_a_full_cart_of_ordinary_items_fits():
    items = [
        {**PRODUCT, "product_id": f"SKU-{n}", "sku": f"SKU-{n}", "quantity": 1}
        for n in range(MAX_CART_ITEMS)
    ]
    body = {"event": "started_checkout", "items": items, "checkout_id": "c-2"}

    assert post_json(visitor(), EVENTS, body).status_code == 202


def test_one_address_stores_at_most_its_byte_budget_per_minute(settings):
    budget = 5000
    settings.KLAVIYO = {**settings.KLAVIYO, "STOREFRONT_ADDRESS_BYTES_PER_MINUTE": budget}

    # New sessions every time: the budget is the address's, not the session's.
    statuses = [post_json(visitor(), EVENTS, VIEWED).status_code for _ in range(12)]

    assert 202 in statuses and statuses[-1] == 429
    assert statuses == sorted(statuses)  # once refused, refused for the rest of the minute
    assert stored_bytes() <= budget
    refused = post_json(visitor(), EVENTS, VIEWED)
    assert "STOREFRONT_ADDRESS_BYTES_PER_MINUTE" not in refused.content.decode()  # no internals
    assert refused["Retry-After"]
