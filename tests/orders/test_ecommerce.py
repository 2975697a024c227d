"""Default mappers: the exact events and payloads of an order's life, and user profiles."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import override_settings
from shop import services
from shop.models import Order, OrderLine

import django_klaviyo
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import mappers as ecommerce
from django_klaviyo.orders.convert import categories_list
from django_klaviyo.rules.events import expansions

LINES = [
    {
        "product_id": "TEE",
        "sku": "TEE-BLK",
        "name": "Black T-shirt",
        "quantity": 2,
        "unit_price": Decimal("19.99"),
        "image_url": "https://shop.example.com/tee.png",
        "product_url": "https://shop.example.com/p/tee",
        "categories": ["Apparel", "Tops"],
    },
    {
        "sku": "MUG",
        "name": "Mug",
        "quantity": 1,
        "unit_price": Decimal("9.505"),
        "categories": ["Kitchen", "Apparel"],
    },
]
SHIPPING = {"first_name": "Ada", "address1": "1 Main St", "country_code": "GB", "zip": ""}


def klaviyo(**overrides: object) -> override_settings:
    return override_settings(KLAVIYO={**settings.KLAVIYO, **overrides})


@pytest.fixture
def customer(db):
    user = get_user_model().objects.create_user("ada", email="ada@example.com")
    OutboxEvent.objects.all().delete()
    return user


def events() -> list[OutboxEvent]:
    """Event rows in the order they were enqueued."""
    return list(OutboxEvent.objects.filter(kind="event").order_by("created_at"))


def test_placing_an_order_enqueues_one_placed_order_row_carrying_ordered_products(customer):
    order = services.place_order(
        customer=customer,
        lines=[{**LINES[0], "brand": "Acme"}, LINES[1]],
        currency="GBP",
        shipping_address=SHIPPING,
        number="A-1",
        discount_code="SPRING",
        discount_value=Decimal("5.00"),
    )
    tee, mug = order.lines.order_by("pk")
    (placed,) = events()
    time = order.placed_at.isoformat()

    assert placed.metric == "Placed Order"
    # The order id: Fulfilled, Cancelled and Refunded Order reuse it, as CLV requires.
    assert placed.unique_id == "A-1"
    assert placed.dedupe_key == f"event:shop.order:{order.pk}:placed"
    assert placed.profile_key == f"external_id:{customer.pk}"
    tee_item = {
        "ProductID": "TEE",
        "SKU": "TEE-BLK",
        "ProductName": "Black T-shirt",
        "Quantity": 2,
        "ItemPrice": 19.99,
        "RowTotal": 39.98,
        "ProductURL": "https://shop.example.com/p/tee",
        "ImageURL": "https://shop.example.com/tee.png",
        "Categories": ["Apparel", "Tops"],
        "Brand": "Acme",
    }
    mug_item = {
        "ProductID": "MUG",
        "SKU": "MUG",
        "ProductName": "Mug",
        "Quantity": 1,
        "ItemPrice": 9.51,
        "RowTotal": 9.51,
        "ProductURL": "",
        "ImageURL": "",
        "Categories": ["Kitchen", "Apparel"],
        "Brand": "",
    }
    assert placed.payload == {
        "metric": "Placed Order",
        "profile": {"external_id": str(customer.pk), "email": "ada@example.com"},
        "properties": {
            "OrderId": "A-1",
            "ItemNames": ["Black T-shirt", "Mug"],
            "Categories": ["Apparel", "Tops", "Kitchen"],
            "Brands": ["Acme"],
            "ItemCount": 3,
            "Items": [tee_item, mug_item],
            "DiscountCode": "SPRING",
            "DiscountValue": 5.0,
            "ShippingAddress": {"FirstName": "Ada", "Address1": "1 Main St", "CountryCode": "GB"},
        },
        "time": time,
        "value": 44.49,  # the order's total, after the discount
        "value_currency": "GBP",
        # Sent with the Placed Order, sharing its profile, time and currency: one
        # Ordered Product per entry of Items, made from it when the row is sent.
        "item_events": {
            "metric": "Ordered Product",
            "unique_ids": [f"A-1-{tee.pk}", f"A-1-{mug.pk}"],
        },
    }
    assert [
        {"metric": m, "unique_id": u, "properties": p, "value": v}
        for m, u, p, v in expansions(placed.payload)
    ] == [
        {
            "metric": "Ordered Product",
            "unique_id": f"A-1-{tee.pk}",
            "properties": {
                "OrderId": "A-1",
                **{k: v for k, v in tee_item.items() if k != "Brand"},
                "ProductBrand": "Acme",
            },
            "value": 39.98,
        },
        {
            "metric": "Ordered Product",
            "unique_id": f"A-1-{mug.pk}",
            "properties": {
                "OrderId": "A-1",
                **{k: v for k, v in mug_item.items() if k != "Brand"},
                "ProductBrand": "",
            },
            "value": 9.51,
        },
    ]


def test_guest_order_profile_is_the_email(db):
    services.place_order(email="guest@example.com", lines=LINES[:1])
    placed = OutboxEvent.objects.get(metric="Placed Order")
    assert placed.payload["profile"] == {"email": "guest@example.com"}
    assert placed.profile_key == "email:guest@example.com"


def test_fulfil_then_refund_reuse_the_order_id_with_positive_values(customer):
    order = services.place_order(customer=customer, lines=LINES, number="A-2")
    services.fulfil_order(
        order, tracking_number="1Z999", tracking_url="https://t.example.com/1Z999", carrier="UPS"
    )
    services.refund_order(order)

    fulfilled = OutboxEvent.objects.get(metric="Fulfilled Order")
    assert fulfilled.unique_id == "A-2"
    assert fulfilled.payload["value"] == 49.49
    properties = fulfilled.payload["properties"]
    assert properties["TrackingNumber"] == "1Z999"
    assert properties["TrackingURL"] == "https://t.example.com/1Z999"
    assert properties["Carrier"] == "UPS"
    assert properties["OrderId"] == "A-2" and properties["ItemCount"] == 3
    assert [i["ProductName"] for i in properties["Items"]] == ["Black T-shirt", "Mug"]

    refunded = OutboxEvent.objects.get(metric="Refunded Order")
    assert refunded.unique_id == "A-2"
    assert refunded.dedupe_key == f"event:shop.order:{order.pk}:refund:full"
    assert refunded.payload["value"] == 49.49
    assert refunded.payload["value_currency"] == "USD"
    assert refunded.payload["properties"]["ReversesPlacedOrder"] is True


def test_cancel_carries_the_items_a_reason_and_a_positive_value(customer):
    order = services.place_order(customer=customer, lines=LINES[1:], number="A-5")
    services.cancel_order(order, reason="Customer changed their mind")
    cancelled = OutboxEvent.objects.get(metric="Cancelled Order")
    assert cancelled.unique_id == "A-5"
    assert cancelled.payload["value"] == 9.51
    assert cancelled.payload["properties"]["Reason"] == "Customer changed their mind"
    assert cancelled.payload["properties"]["ItemNames"] == ["Mug"]
    assert "expand" not in cancelled.payload
    assert [e.metric for e in events()] == ["Placed Order", "Cancelled Order"]


def test_metric_names_come_from_settings(customer):
    with klaviyo(METRIC_NAMES={"placed_order": "Order Completed"}):
        services.place_order(customer=customer, lines=LINES[:1])
    placed = OutboxEvent.objects.get()
    assert placed.metric == "Order Completed"
    assert placed.payload["item_events"]["metric"] == "Ordered Product"


def test_status_names_come_from_settings(customer):
    order = services.place_order(customer=customer, lines=LINES[:1])
    OutboxEvent.objects.all().delete()
    with klaviyo(ORDER_STATUS_FULFILLED="shipped"):
        order.status = "fulfilled"
        order.save()
        assert not OutboxEvent.objects.exists()
        order.status = "shipped"
        order.save()
    assert [e.metric for e in events()] == ["Fulfilled Order"]


def test_order_created_directly_as_placed_is_completed_by_its_line_saves(customer):
    with transaction.atomic():
        order = Order.objects.create(number="A-3", customer=customer, status="placed")
        (row,) = OutboxEvent.objects.all()
        assert (row.status, row.last_error_code) == ("dead", "empty_placed_order")
        OrderLine.objects.create(order=order, sku="S", name="Sock", quantity=3, unit_price=2)

    django_klaviyo.order_placed(order)
    placed = OutboxEvent.objects.get(metric="Placed Order")
    assert placed.status == "pending"
    assert placed.payload["properties"]["ItemNames"] == ["Sock"]
    assert placed.payload["value"] == 0.0  # the order's own total, never recomputed
    assert [p["ProductName"] for _, _, p, _ in expansions(placed.payload)] == ["Sock"]
    assert OutboxEvent.objects.count() == 1


def test_pending_orders_and_unknown_statuses_send_nothing(customer):
    order = Order.objects.create(number="A-4", customer=customer)
    order.status = "on-hold"
    order.save()
    assert ecommerce.default_order_events(order, "pending", created=False) == []
    assert not OutboxEvent.objects.exists()


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(Decimal("1.005"), 1.01), (Decimal("2.5"), 2.5), (0.1 + 0.2, 0.3), ("3", 3.0), (None, None)],
)
def test_money_rounds_half_up_to_cents(amount, expected):
    assert ecommerce.money(amount) == expected


def test_categories_accept_lists_and_comma_strings():
    assert categories_list("A, B,,C ") == ["A", "B", "C"]
    assert categories_list(["A", 2]) == ["A", "2"]
    assert categories_list(None) == []


def test_a_refund_given_as_a_dict_is_sent_once(customer):
    order = services.place_order(customer=customer, lines=LINES, number="A-6")
    tee = order.lines.order_by("pk").first()
    refund = {
        "id": "r-1",
        "amount": "5.00",
        "reason": "Late",
        "lines": [{"line": tee, "quantity": 1}],
    }
    django_klaviyo.order_refunded(order, refund=refund)
    django_klaviyo.order_refunded(order, refund=refund)

    refunded = OutboxEvent.objects.get(metric="Refunded Order")
    assert (refunded.unique_id, refunded.payload["value"]) == ("A-6", 5.0)
    assert refunded.dedupe_key == f"event:shop.order:{order.pk}:refund:r-1"
    (item,) = refunded.payload["properties"]["Items"]
    assert (item["SKU"], item["Quantity"], item["RowTotal"]) == ("TEE-BLK", 1, 19.99)
    assert refunded.payload["properties"]["Reason"] == "Late"


def test_a_refund_without_an_id_is_refused(customer):
    from django_klaviyo.exceptions import KlaviyoValidationError

    order = services.place_order(customer=customer, lines=LINES[:1])
    with pytest.raises(KlaviyoValidationError) as info:
        django_klaviyo.order_refunded(order, refund={"amount": 3})
    assert info.value.field == "refund"
    assert not OutboxEvent.objects.filter(metric="Refunded Order").exists()
