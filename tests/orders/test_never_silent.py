"""Every path that refuses or cannot build a Placed Order leaves a dead row naming the
mapping or the field: the save receiver (tests/orders/test_refused_on_save.py), the
store's ORDER_PLACED_SIGNAL and an explicit ``order_placed()`` call (which also raises to
its caller)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction

import django_klaviyo
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import receivers
from tests.projects.directshop.models import Order, OrderItem
from tests.projects.directshop.signals import order_done

pytestmark = pytest.mark.django_db


def refusing_mapper(order, previous_status, created):
    if created:
        return []  # the order's creation (status NEW): nothing to send
    raise KlaviyoValidationError("this store's order has no usable email", field="email")


def crashing_mapper(order, previous_status, created):
    if created:
        return []
    raise RuntimeError("mapper bug")


@pytest.fixture
def signal_shop(directshop):
    """directshop with its own "order placed" signal, orders created NEW then items."""
    directshop.KLAVIYO = {
        **directshop.KLAVIYO,
        "ORDER_PLACED_SIGNAL": "tests.projects.directshop.signals.order_done",
    }
    receivers.connect()
    return directshop


def new_order(email: str = "guest@example.com") -> Order:
    with transaction.atomic():
        order = Order.objects.create(email=email, order_total=Decimal("25.00"))
        OrderItem.objects.create(order=order, product_name="Lamp", sku="L1", price=25)
    return order


def dead() -> list[tuple[str, str, str]]:
    rows = OutboxEvent.objects.filter(status="dead").order_by("created_at")
    return list(rows.values_list("metric", "last_error_code", "last_error_detail"))


def test_a_placed_order_the_rules_refuse_on_the_signal_path_is_a_dead_row(signal_shop):
    order = new_order(email="not-an-email")
    order_done.send(sender=Order, order=order)
    ((metric, code, detail),) = dead()
    assert (metric, code) == ("Placed Order", "invalid_on_save")
    assert "email" in detail
    row = OutboxEvent.objects.get()
    assert row.payload["properties"]["ItemNames"] == ["Lamp"]  # what was mapped, to fix


def test_a_mapper_refusal_on_the_signal_path_names_the_field(signal_shop):
    signal_shop.KLAVIYO = {**signal_shop.KLAVIYO, "ORDER_EVENTS_MAPPER": refusing_mapper}
    order = new_order()
    order_done.send(sender=Order, order=order)
    ((metric, code, detail),) = dead()
    assert (metric, code) == ("Placed Order", "invalid_on_save")
    assert detail.endswith("(field email)")
    assert OutboxEvent.objects.get().payload["mapper"] == "ORDER_EVENTS_MAPPER"


def test_a_mapper_crash_on_the_signal_path_is_a_dead_row(signal_shop, settings):
    settings.DEBUG = False
    signal_shop.KLAVIYO = {**signal_shop.KLAVIYO, "ORDER_EVENTS_MAPPER": crashing_mapper}
    order = new_order()
    order_done.send(sender=Order, order=order)
    ((metric, code, detail),) = dead()
    assert (metric, code) == ("Placed Order", "mapper_error")
    assert "mapper bug" in detail


def test_an_explicit_order_placed_raises_and_keeps_a_dead_row(directshop):
    order = new_order(email="not-an-email")
    with pytest.raises(KlaviyoValidationError):
        django_klaviyo.order_placed(order)
    # A caller that swallows the error (a task, an on_commit hook) still leaves a trace.
    ((metric, code, _detail),) = dead()
    assert (metric, code) == ("Placed Order", "invalid_on_save")
