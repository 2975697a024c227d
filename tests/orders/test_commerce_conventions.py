"""The example shop's order events, as they reach Klaviyo (the sandbox), follow Klaviyo's
e-commerce conventions: every event of an order carries the Placed Order's unique_id (the
order id) so CLV can subtract cancels and refunds, values are positive, and items use the
property names of Klaviyo's guide and templates."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from shop import services
from shop.models import Refund

import django_klaviyo
from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent

pytestmark = pytest.mark.django_db

LINES = [
    {
        "product_id": "TEE",
        "sku": "TEE-BLK",
        "name": "Black T-shirt",
        "quantity": 2,
        "unit_price": Decimal("20.00"),
        "categories": ["Apparel"],
        "brand": "Acme",
        "image_url": "https://shop.example.com/tee.png",
        "product_url": "https://shop.example.com/p/tee",
    },
    {"product_id": "MUG", "sku": "MUG-WHT", "name": "Mug", "unit_price": Decimal("10.00")},
]
ITEM_KEYS = {
    "ProductID",
    "SKU",
    "ProductName",
    "Quantity",
    "ItemPrice",
    "RowTotal",
    "ProductURL",
    "ImageURL",
    "Categories",
    "Brand",
}


@pytest.fixture
def customer():
    return get_user_model().objects.create_user("ada", email="ada@example.com")


def sent(sandbox) -> list[tuple[str, str, float | None]]:
    """(metric, unique_id, value) of every event the sandbox recorded, in order."""
    flush_outbox()
    assert not OutboxEvent.objects.exclude(status="sent").exists()
    return [(e["metric"], e["unique_id"], e["value"]) for e in sandbox.state.events()]


def test_placed_then_cancelled_order(klaviyo_sandbox, customer):
    order = services.place_order(customer=customer, lines=LINES, number="1001")
    services.cancel_order(order, reason="Out of stock")
    tee, mug = order.lines.order_by("pk")

    assert sent(klaviyo_sandbox) == [
        ("Placed Order", "1001", 50.0),
        ("Ordered Product", f"1001-{tee.pk}", 40.0),
        ("Ordered Product", f"1001-{mug.pk}", 10.0),
        # The Placed Order's unique_id and a positive value: Klaviyo subtracts it from CLV.
        ("Cancelled Order", "1001", 50.0),
    ]
    placed, *products, cancelled = klaviyo_sandbox.state.events()
    assert [set(item) for item in placed["properties"]["Items"]] == [ITEM_KEYS, ITEM_KEYS]
    assert placed["properties"]["Items"][0]["ItemPrice"] == 20.0
    assert placed["properties"]["Brands"] == ["Acme"]
    assert products[0]["properties"]["ProductBrand"] == "Acme"
    assert cancelled["properties"]["Reason"] == "Out of stock"
    assert cancelled["properties"]["Items"] == placed["properties"]["Items"]


def test_placed_then_partially_refunded_twice(klaviyo_sandbox, customer):
    order = services.place_order(customer=customer, lines=LINES, number="1002")
    tee, mug = order.lines.order_by("pk")
    first = services.refund(order, [(tee, 1)], reason="Too small")
    second = services.refund(order, [(mug, 1)], reason="Chipped")
    # Calling again for a refund already sent enqueues nothing.
    django_klaviyo.order_refunded(order, refund=first)

    assert sent(klaviyo_sandbox) == [
        ("Placed Order", "1002", 50.0),
        ("Ordered Product", f"1002-{tee.pk}", 40.0),
        ("Ordered Product", f"1002-{mug.pk}", 10.0),
        # The first refund reverses the Placed Order in CLV; the second is recorded with
        # its own id (Klaviyo would drop a second Refunded Order with the same one).
        ("Refunded Order", "1002", 20.0),
        ("Refunded Order", f"1002-refund-{second.pk}", 10.0),
    ]
    refund_1, refund_2 = klaviyo_sandbox.state.events(metric="Refunded Order")
    assert refund_1["properties"]["Reason"] == "Too small"
    assert refund_1["properties"]["ReversesPlacedOrder"] is True
    assert [(i["SKU"], i["Quantity"], i["RowTotal"]) for i in refund_1["properties"]["Items"]] == [
        ("TEE-BLK", 1, 20.0)
    ]
    assert [(i["SKU"], i["Quantity"]) for i in refund_1["properties"]["NotRefundedItems"]] == [
        ("TEE-BLK", 1),
        ("MUG-WHT", 1),
    ]
    assert set(refund_1["properties"]["Items"][0]) == ITEM_KEYS
    assert refund_2["properties"]["ReversesPlacedOrder"] is False
    assert [i["SKU"] for i in refund_2["properties"]["Items"]] == ["MUG-WHT"]
    assert Refund.objects.filter(order=order).count() == 2


def test_refunding_everything_in_parts_does_not_send_the_total_again(klaviyo_sandbox, customer):
    order = services.place_order(customer=customer, lines=LINES, number="1003")
    tee, mug = order.lines.order_by("pk")
    services.refund(order, [(tee, 2)])
    services.refund(order, [(mug, 1)])
    order.refresh_from_db()
    assert order.status == "refunded"

    refunds = [e for e in sent(klaviyo_sandbox) if e[0] == "Refunded Order"]
    assert sum(value for _, _, value in refunds) == 50.0  # not 100: no extra full refund


def test_backfilled_orders_reach_klaviyo_marked_as_backfill(klaviyo_sandbox, customer, settings):
    tracked = settings.KLAVIYO
    settings.KLAVIYO = {**tracked, "ENABLED": False}  # orders from before the integration
    order = services.place_order(customer=customer, lines=LINES, number="1004")
    settings.KLAVIYO = tracked
    # The import of past orders: recorded by Klaviyo without firing post-purchase flows.
    django_klaviyo.order_placed(order, backfill=True)
    django_klaviyo.track("Viewed Page", {"email": "ada@example.com"})

    flush_outbox()
    events = klaviyo_sandbox.state.events()
    assert [(e["metric"], e["backfill"]) for e in events] == [
        ("Placed Order", True),
        ("Ordered Product", True),
        ("Ordered Product", True),
        ("Viewed Page", False),
    ]


def test_backfill_is_where_the_openapi_spec_puts_it():
    """In each event's attributes, for both create_event and the bulk job; the bodies
    the client builds validate against Klaviyo's spec."""
    from django_klaviyo.client.bodies.events import assemble_bulk_events, build_event
    from django_klaviyo.rules.event_requests import clean_event_entries, clean_request_event
    from django_klaviyo.rules.profiles import clean_event_profile
    from django_klaviyo.testing.openapi import validate_request

    event = {"metric": "Placed Order", "value": 5.0, "unique_id": "1", "backfill": True}
    single = build_event(
        clean_request_event({"metric": "Placed Order", "backfill": True}),
        clean_event_profile({"email": "a@example.com"}),
    )
    entries = [{"profile": {"email": "a@example.com"}, "events": [event]}]
    bulk = assemble_bulk_events(clean_event_entries(entries))
    trusted = assemble_bulk_events(entries)
    assert single["data"]["attributes"]["backfill"] is True
    for body in (bulk, trusted):
        (entry,) = body["data"]["attributes"]["events-bulk-create"]["data"]
        assert entry["attributes"]["events"]["data"][0]["attributes"]["backfill"] is True
    assert validate_request("create_event", single) == []
    assert validate_request("bulk_create_events", bulk) == []
    assert validate_request("bulk_create_events", trusted) == []
