"""A store shaped unlike the example shop (tests/projects/altshop: ``state``, ``grand_total``,
``items``, a guest email) gets full Placed Orders from settings alone, and each way of
getting the mapping wrong is named at startup or stored as a dead row, never sent empty."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.conf import settings
from django.core import checks
from django.db import transaction
from django.db.models.signals import post_init, post_save

import django_klaviyo
from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import receivers
from django_klaviyo.rules.events import expansion_count
from tests.projects.altshop.models import Item, Order

pytestmark = pytest.mark.django_db

ALTSHOP = {
    "ORDER_MODEL": "altshop.Order",
    "ORDER_STATUS_FIELD": "state",
    "ORDER_STATUS_PLACED": "paid",
    "ORDER_STATUS_FULFILLED": "shipped",
    "ORDER_STATUS_CANCELLED": "void",
    "ORDER_STATUS_REFUNDED": "returned",
    "ORDER_FIELDS": {
        "number": "reference",
        "total": "grand_total",
        "currency": "currency_code",
        "email": "guest_email",
        "customer_id": None,
        "lines": "items",
        "placed_at": "paid_on",
    },
    "ORDER_LINE_FIELDS": {
        "product_id": "code",
        "sku": "code",
        "name": "title",
        "quantity": "qty",
        "unit_price": "price",
        "brand": "maker",
    },
}


@pytest.fixture
def altshop(settings):
    """The test settings with the altshop mapping, its receivers connected as at startup."""
    settings.KLAVIYO = {**settings.KLAVIYO, **ALTSHOP}
    receivers.connect()
    yield settings
    post_init.disconnect(sender=Order, dispatch_uid="django_klaviyo_order_init")
    post_save.disconnect(sender=Order, dispatch_uid="django_klaviyo_order_save")


def checkout(reference: str = "R-1", *, items: bool = True) -> Order:
    with transaction.atomic():
        order = Order.objects.create(
            reference=reference, guest_email="guest@example.com", grand_total=Decimal("35.00")
        )
        if items:
            Item.objects.create(order=order, title="Lamp", code="L1", qty=1, price=25, maker="Lux")
            Item.objects.create(order=order, title="Bulb", code="B2", qty=2, price=5)
        order.state = Order.State.PAID
        order.save()
    return order


def problems(**klaviyo: object) -> dict[str, str]:
    """{check id: message} of django-klaviyo's checks under these KLAVIYO settings."""
    from django.test import override_settings

    with override_settings(KLAVIYO={**settings.KLAVIYO, **klaviyo}):
        messages = checks.run_checks()
    found: dict[str, str] = {}
    for m in messages:
        # W005 is about the test settings' per-process cache, not the store under test.
        if m.id.startswith("django_klaviyo") and m.id != "django_klaviyo.W005":
            found[m.id] = " | ".join(filter(None, [found.get(m.id), f"{m.msg} {m.hint}"]))
    return found


def test_a_differently_shaped_store_reaches_the_sandbox_with_full_placed_orders(
    altshop, klaviyo_sandbox
):
    # Only the warning listing what altshop does not have (addresses, tracking, ...).
    assert set(problems(**ALTSHOP, SANDBOX=False)) == {"django_klaviyo.W033"}
    checkout("R-1")
    flush_outbox()

    placed = klaviyo_sandbox.state.events(metric="Placed Order")
    assert len(placed) == 1
    event = placed[0]
    assert (event["unique_id"], event["value"], event["value_currency"]) == ("R-1", 35.0, "EUR")
    assert event["profile"] == {"email": "guest@example.com"}
    assert [
        (i["ProductName"], i["SKU"], i["Quantity"], i["ItemPrice"], i["RowTotal"], i["Brand"])
        for i in event["properties"]["Items"]
    ] == [("Lamp", "L1", 1, 25.0, 25.0, "Lux"), ("Bulb", "B2", 2, 5.0, 10.0, "")]
    products = klaviyo_sandbox.state.events(metric="Ordered Product")
    assert [p["value"] for p in products] == [25.0, 10.0]


def test_its_status_events_follow_its_own_state_values(altshop):
    order = checkout("R-2")
    order.state = Order.State.VOID
    order.save()
    assert list(OutboxEvent.objects.order_by("created_at").values_list("metric", "unique_id")) == [
        ("Placed Order", "R-2"),
        ("Cancelled Order", "R-2"),
    ]


def test_order_placed_uses_the_mapping_and_the_signals_dedupe_key(altshop):
    order = checkout("R-3")
    django_klaviyo.order_placed(order)
    (row,) = OutboxEvent.objects.all()
    assert row.payload["value"] == 35.0 and expansion_count(row.payload) == 2


def test_a_placed_order_without_items_is_stored_dead_with_the_reason(altshop):
    checkout("R-4", items=False)
    (row,) = OutboxEvent.objects.all()
    assert row.status == OutboxEvent.Status.DEAD
    assert row.last_error_code == "empty_placed_order"
    assert "no items" in row.last_error_detail and "ORDER_FIELDS['lines']" in row.last_error_detail


def test_an_empty_remap_leaves_the_order_s_sent_placed_order_alone(altshop):
    order = checkout("R-6")
    order.items.all().delete()
    django_klaviyo.order_placed(order)
    (row,) = OutboxEvent.objects.all()
    assert row.status == OutboxEvent.Status.PENDING and expansion_count(row.payload) == 2


def test_a_custom_mapper_is_shared_by_the_signal_and_order_placed(altshop):
    altshop.KLAVIYO = {**altshop.KLAVIYO, "ORDER_EVENTS_MAPPER": "tests.orders.test_mapping.mapper"}
    order = checkout("R-5")
    django_klaviyo.order_placed(order)
    (row,) = OutboxEvent.objects.all()
    assert row.payload["properties"] == {"Ref": "R-5", "Items": ["Lamp", "Bulb"]}


def mapper(order, previous_status, created):
    """A custom mapper: full control over the events."""
    if order.state != "paid":
        return []
    return [
        {
            "metric": "Placed Order",
            "profile": {"email": order.guest_email},
            "properties": {"Ref": order.reference, "Items": [i.title for i in order.items.all()]},
            "value": order.grand_total,
            "unique_id": order.reference,
            "dedupe_key": f"custom:{order.pk}",
        }
    ]


def mapper_without_placed_order(order, previous_status, created):
    return []


def mapper_without_value(order, previous_status, created):
    """Reads no relation, so the check can ask it about an empty, unsaved order."""
    return [{"metric": "Placed Order", "profile": {"email": "a@example.com"}, "value": None}]


# --- each misconfiguration has its named check ------------------------------------------


def test_the_default_names_on_a_differently_shaped_order_are_named_at_startup():
    found = problems(ORDER_MODEL="altshop.Order")
    # status, total and lines do not exist on altshop.Order: nothing would ever be sent.
    assert (
        "ORDER_STATUS_FIELD'] = 'status' is not a field of altshop.Order"
        in found["django_klaviyo.E032"]
    )
    assert "Did you mean 'state'?" in found["django_klaviyo.E032"]
    assert "['lines'] = 'lines': altshop.Order has no field" in found["django_klaviyo.E031"]
    assert "Did you mean 'items'?" in found["django_klaviyo.E031"]
    assert "['total'] = 'total': altshop.Order has no field" in found["django_klaviyo.E031"]


@pytest.mark.parametrize(
    ("override", "check_id", "text"),
    [
        ({"ORDER_FIELDS": {**ALTSHOP["ORDER_FIELDS"], "total": "grand_totl"}}, "E031", "grand_"),
        ({"ORDER_LINE_FIELDS": {"name": "name"}}, "E031", "altshop.Item has no field"),
        ({"ORDER_FIELDS": {"totl": "grand_total"}}, "E030", "Did you mean 'total'?"),
        ({"ORDER_FIELDS": ["total"]}, "E030", "must be a dict"),
        ({"METRIC_NAMES": {"placed_order": ""}}, "E030", "metric name"),
        ({"ORDER_STATUS_PLACED": "payed"}, "E033", "Did you mean 'paid'?"),
        ({"ORDER_STATUS_FIELD": "stat"}, "E032", "Did you mean 'state'?"),
        (
            {"ORDER_EVENTS_MAPPER": "tests.orders.test_mapping.mapper_without_placed_order"},
            "E034",
            "no 'Placed Order' event",
        ),
        (
            {"ORDER_EVENTS_MAPPER": "tests.orders.test_mapping.mapper_without_value"},
            "W030",
            "without a value",
        ),
        ({"ORDER_PLACED_SIGNAL": "no.such.signal"}, "E035", "does not import"),
        (
            {"ORDER_PLACED_SIGNAL": "tests.orders.test_mapping.mapper"},
            "E035",
            "not a django.dispatch",
        ),
    ],
)
def test_mapping_mistakes_have_named_checks(override, check_id, text):
    found = problems(**{**ALTSHOP, **override})
    assert text in found[f"django_klaviyo.{check_id}"]


def test_a_misspelt_key_is_named_with_a_suggestion():
    found = problems(ORDER_STATUS_FEILD="state")
    assert (
        "KLAVIYO['ORDER_STATUS_FEILD'] is not a django-klaviyo setting"
        in found["django_klaviyo.E036"]
    )
    assert "Did you mean 'ORDER_STATUS_FIELD'?" in found["django_klaviyo.E036"]
