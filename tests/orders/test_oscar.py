"""A django-oscar store, configured by settings only (the configuration of
docs/mapping.md), sends full Placed Orders built from oscar's real models: oscar's own
``order_placed`` signal fires once the lines exist, and its status changes send the
status events."""

from __future__ import annotations

from decimal import Decimal

import pytest

oscar = pytest.importorskip(
    "oscar", reason="django-oscar does not install with this Django version (see pyproject)"
)

from django.contrib.auth import get_user_model  # noqa: E402
from django.db.models.signals import post_init, post_save  # noqa: E402
from oscar.apps.order.models import Order  # noqa: E402
from oscar.apps.order.signals import order_placed  # noqa: E402
from oscar.apps.partner.strategy import Default  # noqa: E402
from oscar.test.factories import (  # noqa: E402
    BillingAddressFactory,
    ShippingAddressFactory,
    create_order,
    create_product,
)

from django_klaviyo.flush import flush_outbox  # noqa: E402
from django_klaviyo.orders import receivers  # noqa: E402
from tests.orders.test_mapping import problems  # noqa: E402

pytestmark = pytest.mark.django_db

# The whole integration: docs/mapping.md shows the same block.
OSCAR = {
    "ORDER_MODEL": "order.Order",
    # Sent by oscar's OrderCreator once the order and its lines are saved.
    "ORDER_PLACED_SIGNAL": "oscar.apps.order.signals.order_placed",
    "ORDER_STATUS_PLACED": "Pending",
    "ORDER_STATUS_FULFILLED": "Complete",
    "ORDER_STATUS_CANCELLED": "Cancelled",
    "ORDER_STATUS_REFUNDED": "Refunded",
    "ORDER_FIELDS": {
        "total": "total_incl_tax",
        "email": "email",  # the user's email, or the guest email
        "customer_id": "user_id",
        "customer_email": None,
        "placed_at": "date_placed",
        "updated_at": None,
        "discount_value": "total_discount_incl_tax",
        "discount_code": None,
        "phone": "shipping_address.phone_number",
        # Oscar keeps these in its event and note models: events are dated when sent.
        "fulfilled_at": None,
        "cancelled_at": None,
        "refunded_at": None,
        "tracking_number": None,
        "tracking_url": None,
        "carrier": None,
        "cancel_reason": None,
    },
    "ORDER_LINE_FIELDS": {
        "sku": "partner_sku",
        "name": "title",
        "unit_price": "unit_price_incl_tax",
        "row_total": "line_price_incl_tax",
        "product_url": "product.get_absolute_url",
        "image_url": None,
        "categories": "product.get_categories",
        "brand": None,
    },
}


@pytest.fixture
def oscar_shop(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, **OSCAR}
    receivers.connect()
    yield settings
    post_init.disconnect(sender=Order, dispatch_uid="django_klaviyo_order_init")
    post_save.disconnect(sender=Order, dispatch_uid="django_klaviyo_order_save")
    order_placed.disconnect(dispatch_uid="django_klaviyo_order_placed")


def basket_order(user):
    from oscar.apps.basket.models import Basket

    basket = Basket.objects.create(owner=user)
    basket.strategy = Default()
    lamp = create_product(
        title="Desk lamp", partner_sku="LAMP-1", price=Decimal("30.00"), num_in_stock=5
    )
    bulb = create_product(title="Bulb", partner_sku="BULB-2", price=Decimal("4.50"), num_in_stock=5)
    basket.add_product(lamp)
    basket.add_product(bulb, quantity=2)
    return create_order(
        number="100042",
        basket=basket,
        user=user,
        billing_address=BillingAddressFactory(),
        shipping_address=ShippingAddressFactory(),
    )


def test_the_oscar_configuration_passes_the_checks(oscar_shop):
    assert problems(**OSCAR) == {}


def test_an_oscar_order_reaches_the_sandbox_as_a_full_placed_order(oscar_shop, klaviyo_sandbox):
    user = get_user_model().objects.create_user("ada", email="ada@example.com")
    order = basket_order(user)
    order.set_status("Cancelled")
    flush_outbox()

    (placed,) = klaviyo_sandbox.state.events(metric="Placed Order")
    assert placed["unique_id"] == "100042"
    assert placed["value"] == float(order.total_incl_tax) == 39.0
    assert placed["value_currency"] == order.currency
    phone = str(order.shipping_address.phone_number)  # E.164, from the shipping address
    assert placed["profile"] == {
        "external_id": str(user.pk),
        "email": "ada@example.com",
        "phone_number": phone,
    }
    items = placed["properties"]["Items"]
    assert [
        (i["ProductName"], i["SKU"], i["Quantity"], i["ItemPrice"], i["RowTotal"]) for i in items
    ] == [
        ("Desk lamp", "LAMP-1", 1, 30.0, 30.0),
        ("Bulb", "BULB-2", 2, 4.5, 9.0),
    ]
    assert (
        items[0]["ProductURL"] == order.lines.get(partner_sku="LAMP-1").product.get_absolute_url()
    )
    assert placed["properties"]["BillingAddress"] == {
        "FirstName": "John",
        "LastName": "Doe",
        "Address1": "Streetname",
        "Address2": "1a",
        "City": "City",
        "Country": "UNITED KINGDOM",
        "CountryCode": "GB",
        "Zip": "1000AA",
    }
    assert placed["properties"]["ShippingAddress"]["Phone"] == "+12125555555"
    assert [p["value"] for p in klaviyo_sandbox.state.events(metric="Ordered Product")] == [
        30.0,
        9.0,
    ]
    (cancelled,) = klaviyo_sandbox.state.events(metric="Cancelled Order")
    assert (cancelled["unique_id"], cancelled["value"]) == ("100042", 39.0)
