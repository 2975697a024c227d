"""A Placed Order's Ordered Products are stored by reference (rules version 2): the row
holds each line once, in the Placed Order's ``Items``, and names one unique_id per item
(``item_events``); the flusher makes each Ordered Product from its item when it builds
the request.

What Klaviyo receives must not change: the requests sent for a row of the new form are
byte for byte those sent for the same order's row of the previous form (version 1, every
Ordered Product written out in ``expand``), which stays sendable.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import responses
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings
from shop import services
from shop.models import Order

import django_klaviyo
from django_klaviyo import rules
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import mappers as ecommerce
from django_klaviyo.outbox import build_event, enqueue_many
from django_klaviyo.rules import limits
from django_klaviyo.rules.events import clean_expand
from tests.flush.test_flush import EVENTS_URL, bulk_events, calls_to
from tests.klaviyo_fixtures import flush

Status = OutboxEvent.Status
PROFILE = {"email": "ada@example.com"}

# Rate-limit windows live in the cache: every test starts with none.
pytestmark = pytest.mark.usefixtures("fresh_rate_limits")


@pytest.fixture
def mocked(mocked: responses.RequestsMock) -> responses.RequestsMock:
    """The shared Klaviyo mock (tests/klaviyo_fixtures.py), accepting every bulk event."""
    mocked.add(responses.POST, EVENTS_URL, status=202)
    return mocked


def version_1_expand(order: Order, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The Ordered Products as the previous mapper wrote them (main at 5cfd463,
    ``ecommerce.placed_order_events``), cleaned by the version-1 rules: OrderId, the item's
    keys, Brand renamed ProductBrand; unique_id ``<order id>-<line id>``; value RowTotal."""
    oid = payload["properties"]["OrderId"]
    products = []
    for line, item in zip(order.lines.order_by("pk"), payload["properties"]["Items"], strict=True):
        properties = {"OrderId": oid, **item}
        properties["ProductBrand"] = properties.pop("Brand")
        products.append(
            {
                "metric": "Ordered Product",
                "unique_id": f"{oid}-{line.pk}",
                "properties": properties,
                "value": item["RowTotal"],
            }
        )
    return clean_expand(products, {("Placed Order", oid)})


def as_version_1(row: OutboxEvent, order: Order) -> None:
    """Rewrite ``row`` as the previous rules stored it."""
    payload = dict(row.payload)
    extra = payload.pop("item_events")
    payload["expand"] = version_1_expand(order, payload) + payload.pop("expand", [])
    assert len(payload["expand"]) >= len(extra["unique_ids"])
    OutboxEvent.objects.filter(pk=row.pk).update(payload=payload, rules_version=1)


def sent_bodies(mocked: Any) -> list[bytes]:
    bodies = [call.request.body for call in calls_to(mocked, EVENTS_URL)]
    mocked.calls.reset()
    return bodies


def flush_placed_order_both_ways(client, clock, mocked, order: Order) -> tuple[list, list]:
    """The request bodies for the order's row as written now, then for the same row in
    the previous form (resent from scratch: same ids, same times)."""
    OutboxEvent.objects.exclude(kind=OutboxEvent.Kind.EVENT).delete()  # the customer's profile
    row = OutboxEvent.objects.get(metric="Placed Order")
    assert row.rules_version == rules.RULES_VERSION == 2
    flush(client, clock)
    row.refresh_from_db()
    assert row.status == Status.SENT, row.last_error_detail
    now = sent_bodies(mocked)
    as_version_1(row, order)
    OutboxEvent.objects.filter(pk=row.pk).update(status=Status.PENDING, attempts=0, sent_at=None)
    flush(client, clock)
    row.refresh_from_db()
    assert row.status == Status.SENT, row.last_error_detail
    return now, sent_bodies(mocked)


def lines(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "sku": f"SKU-{n}",
            "name": f"Item {n}",
            "quantity": 1 + n % 3,
            "unit_price": Decimal("1.25") * (n + 1),
            **extra,
        }
        for n in range(count)
    ]


ORDERS = {
    "three plain lines": {"email": "guest@example.com", "lines": lines(3)},
    "a discount, addresses, brands, categories and text that is not ASCII": {
        "lines": [
            {
                "sku": "TEE",
                "name": "Tee — “Zoë”",
                "quantity": 2,
                "unit_price": "19.99",
                "brand": "Acmé",
                "categories": "Apparel, Tops",
                "product_url": "https://shop.example/p/tee",
                "image_url": "https://shop.example/i/tee.png",
                "product_id": 7,
            },
            {"sku": "MUG", "name": "Mug", "quantity": 1, "unit_price": "9.50"},
        ],
        "discount_code": "SPRING",
        "discount_value": Decimal("5.00"),
        "currency": "gbp",
        "shipping_address": {"first_name": "Ada", "city": "Zürich", "country_code": "CH"},
    },
    "a free line": {"lines": [{"sku": "GIFT", "name": "Gift", "unit_price": "0"}, *lines(1)]},
    "1,000 lines": {"lines": lines(1000, brand="B")},
}


@pytest.mark.django_db
@pytest.mark.parametrize("kwargs", ORDERS.values(), ids=ORDERS.keys())
def test_an_order_sends_the_same_bytes_as_with_its_ordered_products_written_out(
    klaviyo_client, clock, mocked, kwargs
):
    customer = get_user_model().objects.create_user("ada", email="ada@example.com")
    order = services.place_order(customer=None if "email" in kwargs else customer, **kwargs)

    now, before = flush_placed_order_both_ways(klaviyo_client, clock, mocked, order)

    assert now == before
    metrics = [metric for body in now for metric in metric_names(body)]
    assert metrics == ["Placed Order"] + ["Ordered Product"] * len(kwargs["lines"])
    if len(kwargs["lines"]) == 1000:
        assert len(now) == 2  # 1,001 events: split across two requests, as before


def bulk_body(body: bytes) -> list[dict[str, Any]]:
    class Call:
        class request:  # the shape bulk_events reads
            pass

    Call.request.body = body
    return [event for _, event in bulk_events(Call)]


def metric_names(body: bytes) -> list[str]:
    return [event["metric"]["data"]["attributes"]["name"] for event in bulk_body(body)]


@pytest.mark.django_db
def test_a_backfilled_order_and_a_mapper_adding_its_own_events_send_the_same_bytes(
    klaviyo_client, clock, mocked
):
    def with_a_gift(order, previous_status, created):
        events = ecommerce.default_order_events(order, previous_status, created)
        for event in events:
            event.setdefault("expand", []).append(
                {"metric": "Received Gift", "unique_id": f"gift-{order.pk}", "value": 1}
            )
        return events

    customer = get_user_model().objects.create_user("ada", email="ada@example.com")
    with override_settings(KLAVIYO={**settings.KLAVIYO, "ORDER_EVENTS_MAPPER": with_a_gift}):
        order = services.place_order(customer=customer, lines=lines(2))
    now, before = flush_placed_order_both_ways(klaviyo_client, clock, mocked, order)
    assert now == before
    assert metric_names(now[0]) == [
        "Placed Order",
        "Ordered Product",
        "Ordered Product",
        "Received Gift",
    ]

    OutboxEvent.objects.all().delete()
    django_klaviyo.order_placed(order, backfill=True)
    now, before = flush_placed_order_both_ways(klaviyo_client, clock, mocked, order)
    assert now == before
    assert all(e["backfill"] is True for e in bulk_body(now[0]))


@pytest.mark.django_db
def test_the_row_holds_each_line_once():
    order = services.place_order(email="guest@example.com", lines=lines(3))
    row = OutboxEvent.objects.get()
    assert "expand" not in row.payload
    assert row.payload["item_events"] == {
        "metric": "Ordered Product",
        "unique_ids": [f"{order.number}-{line.pk}" for line in order.lines.order_by("pk")],
    }
    written_out = {**row.payload, "expand": version_1_expand(order, row.payload)}
    del written_out["item_events"]
    assert len(django_klaviyo.outbox._encode(row.payload)) < 0.6 * len(
        django_klaviyo.outbox._encode(written_out)
    )


# --- the rules of item_events ---------------------------------------------------------

ITEMS = [
    {"SKU": "A", "RowTotal": 2.5, "Brand": "X"},
    {"SKU": "B", "RowTotal": None},
    {"SKU": "C", "RowTotal": 3},
]


def placed(**fields: Any) -> dict[str, Any]:
    return {
        "metric": "Placed Order",
        "profile": PROFILE,
        "unique_id": "o-1",
        "properties": {"OrderId": "o-1", "Items": ITEMS},
        "item_events": {"metric": "Ordered Product", "unique_ids": ["o-1-a", "o-1-b", "o-1-c"]},
        **fields,
    }


def test_each_item_becomes_an_ordered_product_when_the_row_is_read():
    row = build_event(**placed())
    # Compared as JSON: 3 == 3.0 in Python, but Klaviyo would receive "3" instead of "3.0".
    assert json.dumps(list(rules.events.expansions(row.payload))) == json.dumps(
        [
            (
                "Ordered Product",
                "o-1-a",
                {"OrderId": "o-1", "SKU": "A", "RowTotal": 2.5, "ProductBrand": "X"},
                2.5,
            ),
            ("Ordered Product", "o-1-b", {"OrderId": "o-1", "SKU": "B", "RowTotal": None}, None),
            # Every event value is a float (``values.number``), as in ``expand``.
            ("Ordered Product", "o-1-c", {"OrderId": "o-1", "SKU": "C", "RowTotal": 3}, 3.0),
        ]
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"item_events": {"metric": "Ordered Product", "unique_ids": ["o-1-a"]}},
            "item_events.unique_ids",
        ),
        ({"item_events": {"metric": "Ordered Product", "ids": ["a", "b"]}}, "item_events"),
        ({"item_events": {"metric": "", "unique_ids": ["a", "b"]}}, "item_events.metric"),
        (
            {"item_events": {"metric": "Ordered Product", "unique_ids": ["a", "a", "c"]}},
            "item_events.unique_ids[1]",
        ),
        (
            {"item_events": {"metric": "Placed Order", "unique_ids": ["o-1", "b", "c"]}},
            "item_events.unique_ids[0]",
        ),
        (
            {"item_events": {"metric": "Ordered Product", "unique_ids": ["a", "b\x00", "c"]}},
            "item_events.unique_ids[1]",
        ),
        ({"properties": {"OrderId": 1, "Items": ITEMS}}, "properties.OrderId"),
        (
            {"properties": {"OrderId": "o-1", "Items": [ITEMS[0], "B", ITEMS[2]]}},
            "properties.Items[1]",
        ),
        (
            {"properties": {"OrderId": "o-1", "Items": [ITEMS[0], {"RowTotal": "9.00"}, ITEMS[2]]}},
            "properties.Items[1].RowTotal",
        ),
        (
            {
                "properties": {
                    "OrderId": "o-1",
                    "Items": [ITEMS[0], {f"k{n}": n for n in range(400)}, ITEMS[2]],
                }
            },
            "properties.Items[1]",
        ),
        (
            {"expand": [{"metric": "Ordered Product", "unique_id": "o-1-b"}]},
            "expand[0].unique_id",
        ),
    ],
)
def test_item_events_that_klaviyo_would_refuse_are_refused_naming_the_field(change, field):
    with pytest.raises(KlaviyoValidationError) as caught:
        build_event(**placed(**change))
    assert caught.value.field == field


@pytest.mark.django_db
def test_an_order_whose_ordered_products_overflow_one_request_is_split(
    klaviyo_client, clock, mocked
):
    """Stored, the row holds each item once and fits in one request; sent, each item is
    there twice (in Items and in its Ordered Product), and the events no longer fit in
    one: the flusher counts the Ordered Products' bytes and splits the row's events."""
    items = [{"ProductName": f"{n:03}" + "n" * 90_000, "RowTotal": 1.0} for n in range(45)]
    row = build_event(
        metric="Placed Order",
        profile=PROFILE,
        unique_id="o-1",
        properties={"OrderId": "o-1", "Items": items},
        item_events={"metric": "Ordered Product", "unique_ids": [f"o-1-{n}" for n in range(45)]},
    )
    (stored,) = enqueue_many([row])
    assert len(django_klaviyo.outbox._encode(row.payload)) < limits.REQUEST_BYTES_BUDGET

    flush(klaviyo_client, clock)

    stored.refresh_from_db()
    assert stored.status == Status.SENT, stored.last_error_detail
    bodies = sent_bodies(mocked)
    assert len(bodies) >= 2
    assert all(len(body) <= limits.MAX_REQUEST_BYTES for body in bodies)
    assert sum(len(bulk_body(body)) for body in bodies) == 46
