"""Orders created in their final status (tests/projects/directshop): the checkout creates
the order directly in its placed status, saves the items afterwards in the same
transaction, and neither saves the order again nor sends a signal. The item saves
complete the Placed Order row written at creation, so the transaction commits one full
Placed Order; every other path (status save, ORDER_PLACED_SIGNAL, ``order_placed()``)
still adds nothing to it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction

import django_klaviyo
from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import placement, receivers
from django_klaviyo.rules.events import expansion_count
from tests.projects.directshop.models import Order, OrderItem
from tests.projects.directshop.signals import order_done

pytestmark = pytest.mark.django_db

ITEMS = [("Lamp", "L1", 1, "25.00"), ("Bulb", "B2", 2, "5.00"), ("Cord", "C3", 1, "4.50")]


def checkout(*, items=ITEMS, bulk: bool = False, total: str = "44.50") -> Order:
    """The store's checkout: the order in its final status first, then its items."""
    with transaction.atomic():
        order = Order.objects.create(
            status="PROCESSING", email="guest@example.com", order_total=Decimal(total)
        )
        lines = [
            OrderItem(order=order, product_name=n, sku=s, quantity=q, price=Decimal(p))
            for n, s, q, p in items
        ]
        if bulk:
            OrderItem.objects.bulk_create(lines)
        else:
            for line in lines:
                line.save()
    return order


def placed_rows() -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(metric="Placed Order"))


def test_an_order_created_placed_gets_one_full_placed_order_from_its_item_saves(directshop):
    order = checkout()
    (row,) = placed_rows()
    assert row.status == OutboxEvent.Status.PENDING and row.last_error_code == ""
    assert row.unique_id == str(order.pk) and row.payload["value"] == 44.5
    items = row.payload["properties"]["Items"]
    assert [(i["ProductName"], i["Quantity"], i["RowTotal"]) for i in items] == [
        ("Lamp", 1, 25.0),
        ("Bulb", 2, 10.0),
        ("Cord", 1, 4.5),
    ]
    assert expansion_count(row.payload) == 3
    assert OutboxEvent.objects.count() == 1


def test_it_reaches_the_sandbox_with_its_ordered_products(directshop, klaviyo_sandbox):
    checkout()
    flush_outbox()
    (placed,) = klaviyo_sandbox.state.events(metric="Placed Order")
    assert placed["value"] == 44.5 and len(placed["properties"]["Items"]) == 3
    products = klaviyo_sandbox.state.events(metric="Ordered Product")
    assert sorted(p["value"] for p in products) == [4.5, 10.0, 25.0]


def test_every_path_together_still_enqueues_one_placed_order(directshop, settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "ORDER_PLACED_SIGNAL": "tests.projects.directshop.signals.order_done",
    }
    receivers.connect()
    with transaction.atomic():
        order = checkout()
        order_done.send(sender=Order, order=order)
        django_klaviyo.order_placed(order)
        order.status = "NEW"
        order.save()
        order.status = "PROCESSING"
        order.save()
    (row,) = placed_rows()
    assert row.status == OutboxEvent.Status.PENDING and expansion_count(row.payload) == 3


def test_a_total_saved_after_the_items_is_the_value_sent(directshop):
    with transaction.atomic():
        order = Order.objects.create(status="PROCESSING", email="guest@example.com")
        for name, sku, quantity, price in ITEMS:
            OrderItem.objects.create(
                order=order, product_name=name, sku=sku, quantity=quantity, price=price
            )
        order.order_total = Decimal("40.00")
        order.save()
        order.order_total = Decimal("44.50")
        order.save(update_fields=["order_total"])
    (row,) = placed_rows()
    assert row.payload["value"] == 44.5 and expansion_count(row.payload) == 3


def test_items_written_by_bulk_create_leave_a_dead_row_that_order_placed_replaces(directshop):
    order = checkout(bulk=True)
    (row,) = placed_rows()
    assert (row.status, row.last_error_code) == ("dead", placement.EMPTY_ORDER_CODE)
    assert "bulk_create" in row.last_error_detail and "order_placed" in row.last_error_detail

    django_klaviyo.order_placed(order)
    (row,) = placed_rows()
    assert row.status == OutboxEvent.Status.PENDING and expansion_count(row.payload) == 3


def test_an_order_created_placed_without_items_stays_dead_with_the_reason(directshop):
    checkout(items=[])
    (row,) = placed_rows()
    assert (row.status, row.last_error_code) == ("dead", placement.EMPTY_ORDER_CODE)
    assert "no items" in row.last_error_detail


def test_a_rolled_back_checkout_leaves_nothing_for_a_later_pending_order(directshop):
    with pytest.raises(RuntimeError), transaction.atomic():
        checkout()
        raise RuntimeError("payment failed")
    assert OutboxEvent.objects.count() == 0
    # A later order (perhaps with the same primary key) that is not placed stays unsent.
    with transaction.atomic():
        order = Order.objects.create(status="NEW", email="guest@example.com")
        OrderItem.objects.create(order=order, product_name="Lamp", sku="L1", price=25)
    assert OutboxEvent.objects.count() == 0


def test_items_saved_later_in_their_own_transaction_do_not_rewrite_the_row(
    directshop, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):  # the checkout commits
        order = checkout()
    (before,) = placed_rows()
    OrderItem.objects.create(order=order, product_name="Extra", sku="X", price=1)
    (after,) = placed_rows()
    assert after.pk == before.pk and expansion_count(after.payload) == 3


@pytest.mark.django_db(transaction=True)
def test_in_autocommit_mode_the_dead_row_stays_until_order_placed(directshop):
    order = Order.objects.create(status="PROCESSING", email="g@example.com", order_total=25)
    OrderItem.objects.create(order=order, product_name="Lamp", sku="L1", price=25)
    (row,) = placed_rows()
    assert (row.status, row.last_error_code) == ("dead", placement.EMPTY_ORDER_CODE)
    django_klaviyo.order_placed(order)
    (row,) = placed_rows()
    assert row.status == OutboxEvent.Status.PENDING and expansion_count(row.payload) == 1


def test_lines_reached_by_a_longer_path_leave_the_dead_row_until_order_placed(directshop):
    fields = {**directshop.KLAVIYO["ORDER_FIELDS"], "lines": "order_items.all"}
    directshop.KLAVIYO = {**directshop.KLAVIYO, "ORDER_FIELDS": fields}
    order = checkout()
    (row,) = placed_rows()
    assert (row.status, row.last_error_code) == ("dead", placement.EMPTY_ORDER_CODE)
    django_klaviyo.order_placed(order)
    (row,) = placed_rows()
    assert row.status == OutboxEvent.Status.PENDING and expansion_count(row.payload) == 3
