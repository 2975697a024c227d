"""Fixtures of the order tests: the directshop store (tests/projects/directshop)."""

from __future__ import annotations

import pytest
from django.db.models.signals import post_init, post_save

from django_klaviyo.orders import receivers
from tests.projects.directshop.models import Order, OrderItem
from tests.projects.directshop.signals import order_done

DIRECTSHOP = {
    "ORDER_MODEL": "directshop.Order",
    "ORDER_STATUS_PLACED": "PROCESSING",
    "ORDER_STATUS_FULFILLED": "SHIPPED",
    "ORDER_STATUS_CANCELLED": "CANCELLED",
    "ORDER_STATUS_REFUNDED": "REFUNDED",
    "ORDER_FIELDS": {
        "total": "order_total",
        "lines": "order_items",
        "customer_id": None,
        "placed_at": "created",
    },
    "ORDER_LINE_FIELDS": {"name": "product_name", "unit_price": "price"},
}


@pytest.fixture
def directshop(settings):
    """The test settings with the directshop mapping, its receivers connected as at startup."""
    settings.KLAVIYO = {**settings.KLAVIYO, **DIRECTSHOP}
    receivers.connect()
    yield settings
    post_init.disconnect(sender=Order, dispatch_uid="django_klaviyo_order_init")
    post_save.disconnect(sender=Order, dispatch_uid="django_klaviyo_order_save")
    post_save.disconnect(sender=OrderItem, dispatch_uid=receivers.LINE_SAVE_UID)
    order_done.disconnect(dispatch_uid="django_klaviyo_order_placed")
