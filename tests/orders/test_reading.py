"""The mappers read an order or line once per key through ``reading.Reader``: plain model
fields straight from the instance, the rest resolved when first asked. Every value must be
the one ``fields.resolve`` gives, whatever the path (a callable, a method, a property, a
relation, a dict, a deferred field), and a relation is fetched only when asked for."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings
from shop import services
from shop.models import Order, OrderLine

from django_klaviyo.orders import fields, items, mappers, reading
from django_klaviyo.orders.convert import as_decimal, blank, iso_utc, money
from django_klaviyo.rules.values import utc_iso

pytestmark = pytest.mark.django_db

LINES = [
    {"product_id": "TEE", "sku": "TEE-BLK", "name": "Tee", "quantity": 2, "unit_price": "19.99"},
    {"sku": "MUG", "name": "Mug", "quantity": 1, "unit_price": "9.505", "categories": "a, b"},
]
ADDRESS = {"first_name": "Ada", "address1": "1 Main St", "phone": "+44 20 7946 0958"}


def label(obj: Any) -> str:
    return f"label:{fields.resolve(obj, 'sku')}"


# Every kind of path: plain fields (pk, a foreign key's id), a property, a method, a
# callable, a relation, a dict key through a JSON field, an attribute that is not there.
ORDER_PATHS = {
    "number": "number",
    "total": "total",
    "customer_id": "customer_id",
    "customer_email": "customer.email",
    "phone": "billing_address.phone",
    "pk": "pk",
    "text": "__str__",
    "callable": lambda order: f"#{order.number}",
    "missing": "no_such_attribute",
    "nothing": None,
    "deep_nothing": "customer.no_such_attribute.email",
}
LINE_PATHS = {
    "id": "pk",
    "sku": "sku",
    "order_id": "order_id",
    "row_total": "row_total",  # a property of shop.OrderLine
    "label": label,
    "currency": "order.currency",
    "categories": "categories",
    "nothing": None,
}


@pytest.fixture
def order():
    user = get_user_model().objects.create_user("ada", email="ada@example.com")
    with override_settings(KLAVIYO={**settings.KLAVIYO, "ENABLED": False}):
        return services.place_order(
            customer=user, lines=LINES, billing_address=ADDRESS, number="N-1"
        )


def resolved(obj: Any, paths: Mapping[str, Any]) -> dict[str, Any]:
    return {key: fields.resolve(obj, path) for key, path in paths.items()}


def read(obj: Any, paths: Mapping[str, Any]) -> dict[str, Any]:
    """Every key read through a Reader that fills in plain fields, as the mappers' does."""
    values = reading.Reader(paths)(obj)
    return {key: values[key] for key in paths}


def test_every_kind_of_path_reads_what_resolve_gives(order):
    fresh = Order.objects.get(pk=order.pk)
    assert read(fresh, ORDER_PATHS) == resolved(fresh, ORDER_PATHS)
    assert read(order, ORDER_PATHS) == resolved(order, ORDER_PATHS)
    assert read(order, ORDER_PATHS)["customer_email"] == "ada@example.com"
    assert read(order, ORDER_PATHS)["text"] == str(order)
    for line in OrderLine.objects.filter(order=order):
        assert read(line, LINE_PATHS) == resolved(line, LINE_PATHS)
        assert read(line, LINE_PATHS)["row_total"] == line.row_total


def test_plain_fields_are_filled_in_and_relations_wait_until_asked(
    order, django_assert_num_queries
):
    fresh = Order.objects.get(pk=order.pk)
    with django_assert_num_queries(0):
        values = reading.Reader(ORDER_PATHS)(fresh)
        assert {"number", "total", "customer_id", "pk", "nothing"} <= values.keys()
        assert "customer_email" not in values
    with django_assert_num_queries(1):
        assert values["customer_email"] == "ada@example.com"
        assert values["customer_email"] == "ada@example.com"  # resolved once


def test_a_deferred_field_is_loaded_as_resolve_loads_it(order, django_assert_num_queries):
    total = Order.objects.get(pk=order.pk).total
    deferred = Order.objects.defer("total", "email").get(pk=order.pk)
    with django_assert_num_queries(0):
        values = reading.Reader(ORDER_PATHS)(deferred)
        assert values["number"] == "N-1"
    with django_assert_num_queries(1):
        assert values["total"] == total
    deferred = Order.objects.defer("total").get(pk=order.pk)
    assert read(deferred, ORDER_PATHS) == resolved(Order.objects.get(pk=order.pk), ORDER_PATHS)


def test_a_value_set_on_the_instance_is_the_one_read(order):
    order.total = "12.5"  # assigned, not yet saved: getattr gives it, so must the reader
    order.number = ""
    assert read(order, ORDER_PATHS) == resolved(order, ORDER_PATHS)
    assert read(order, ORDER_PATHS)["total"] == "12.5"


class Row(Mapping):
    """A Mapping that is not a dict (a line handed over as data)."""

    def __init__(self, **data: Any) -> None:
        self.data = data

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class PlainObject:
    sku = "OBJ"
    categories = ("x",)

    def row_total(self) -> Decimal:
        return Decimal("3.333")


@pytest.mark.parametrize(
    "line",
    [
        {"pk": 7, "sku": "D1", "row_total": "1.005", "order": {"currency": "EUR"}},
        Row(pk=8, sku="R1", categories=["x"], order=Row(currency="GBP")),
        PlainObject(),
        None,
    ],
    ids=["dict", "mapping", "object-with-method", "none"],
)
def test_objects_that_are_not_models_read_what_resolve_gives(line):
    assert read(line, LINE_PATHS) == resolved(line, LINE_PATHS)


def test_a_line_given_as_data_maps_as_before():
    line = Row(pk=3, sku="R1", name="Row", quantity=2, unit_price=Decimal("1.005"))
    assert mappers.line_item(line) == {
        "ProductID": "R1",
        "SKU": "R1",
        "ProductName": "Row",
        "Quantity": 2,
        "ItemPrice": 1.01,
        "RowTotal": 2.01,
        "ProductURL": "",
        "ImageURL": "",
        "Categories": [],
        "Brand": "",
    }
    assert items.line_id(line) == "3"
    assert items.line_id({"sku": "S", "pk": None}) == "S"


def test_a_deferred_order_maps_to_the_same_placed_order(order):
    loaded = Order.objects.get(pk=order.pk)
    deferred = Order.objects.defer("total", "number", "email", "placed_at").get(pk=order.pk)
    assert mappers.placed_order_events(deferred) == mappers.placed_order_events(loaded)
    lines = OrderLine.objects.filter(order=order).order_by("pk")
    deferred_lines = lines.defer("sku", "unit_price", "quantity")
    assert [mappers.line_item(line) for line in deferred_lines] == [
        mappers.line_item(line) for line in lines
    ]


def test_callable_and_method_paths_in_settings(order):
    klaviyo = {
        **settings.KLAVIYO,
        "ENABLED": False,
        "ORDER_FIELDS": {"number": lambda o: f"W-{o.pk}", "email": "customer.email"},
        "ORDER_LINE_FIELDS": {"name": "__str__", "product_url": label, "id": "sku"},
    }
    with override_settings(KLAVIYO=klaviyo):
        [event] = mappers.placed_order_events(Order.objects.get(pk=order.pk))
    items = event["properties"]["Items"]
    assert event["unique_id"] == f"W-{order.pk}"
    assert event["profile"]["email"] == "ada@example.com"
    assert [item["ProductName"] for item in items] == ["2 x Tee", "1 x Mug"]
    assert [item["ProductURL"] for item in items] == ["label:TEE-BLK", "label:MUG"]
    assert event["item_events"]["unique_ids"] == [f"W-{order.pk}-TEE-BLK", f"W-{order.pk}-MUG"]


def test_a_settings_change_rebuilds_the_reader(order):
    line = OrderLine.objects.filter(order=order).order_by("pk").first()
    assert mappers.line_item(line)["ProductName"] == "Tee"
    klaviyo = {**settings.KLAVIYO, "ORDER_LINE_FIELDS": {"name": "sku"}}
    with override_settings(KLAVIYO=klaviyo):
        assert mappers.line_item(line)["ProductName"] == "TEE-BLK"
    assert mappers.line_item(line)["ProductName"] == "Tee"


def test_a_callers_own_mapping_is_read_as_given(order):
    line = OrderLine.objects.filter(order=order).order_by("pk").first()
    own = {**mappers.line_fields(), "name": "sku"}
    assert mappers.line_item(line, own)["ProductName"] == "TEE-BLK"
    assert mappers.line_item(line, mappers.line_fields())["ProductName"] == "Tee"


@pytest.mark.parametrize(
    "amount",
    [Decimal("9.505"), Decimal("-0.005"), Decimal("2"), Decimal("1E+2"), 3, 2.675, "4.445"],
)
def test_money_of_a_decimal_is_the_general_rule(amount):
    general = float(as_decimal(amount).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP"))
    assert money(amount) == general
    assert type(money(amount)) is float


@pytest.mark.parametrize("amount", [None, ""])
def test_money_of_nothing_is_none(amount):
    assert blank(amount)
    assert money(amount) is None


def test_items_properties_is_the_rule_of_unique_in_order():
    lines = [
        {"ProductName": "A", "Categories": ["x", "", "y"], "Brand": "B", "Quantity": 2},
        {"ProductName": "B", "Categories": ["y", "z"], "Brand": "", "Quantity": 1.5},
        {"ProductName": "C", "Categories": [], "Brand": "B", "Quantity": "3"},
        {"ProductName": "D", "Categories": ["x"], "Brand": "C", "Quantity": True},
    ]
    assert items.items_properties(lines) == {
        "ItemNames": ["A", "B", "C", "D"],
        "Categories": items.unique_in_order(c for item in lines for c in item["Categories"]),
        "Brands": items.unique_in_order(item["Brand"] for item in lines),
        "ItemCount": 2 + 1.5 + True,
        "Items": lines,
    }
    assert list(items.items_properties(lines)) == [
        "ItemNames",
        "Categories",
        "Brands",
        "ItemCount",
        "Items",
    ]


def test_a_key_shadowed_on_the_instance_is_still_resolved(order):
    """A mapping key that is a field's name but mapped elsewhere, or an attribute set on
    the instance under a key that is resolved: the path decides, never the name."""
    fresh = Order.objects.get(pk=order.pk)
    fresh.phone = "not the mapped phone"  # a plain attribute named like the key
    paths = {"email": "number", "phone": "billing_address.phone", "number": "email"}
    assert read(fresh, paths) == resolved(fresh, paths)
    assert read(fresh, paths) == {
        "email": "N-1",
        "phone": "+44 20 7946 0958",
        "number": "ada@example.com",
    }
    deferred = Order.objects.defer("number").get(pk=order.pk)
    assert read(deferred, paths) == resolved(fresh, paths)


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.datetime(2026, 3, 1, 12, 30, tzinfo=zoneinfo.ZoneInfo("UTC")),
        dt.datetime(2026, 3, 1, 12, 30),
    ],
    ids=["utc", "utc-no-micro", "offset", "zoneinfo-utc", "naive"],
)
def test_iso_utc_of_a_utc_datetime_is_the_general_rule(value):
    assert iso_utc(value) == utc_iso(value)


def test_lines_handed_over_or_prefetched_are_read_without_a_query(order, django_assert_num_queries):
    expected = list(OrderLine.objects.filter(order=order).order_by("pk"))
    with django_assert_num_queries(0):
        assert fields.resolve_many(order, "lines") == expected  # the shop hands them over
    prefetched = Order.objects.prefetch_related("lines").get(pk=order.pk)
    with django_assert_num_queries(0):
        assert fields.resolve_many(prefetched, "lines") == expected
    fresh = Order.objects.get(pk=order.pk)
    with django_assert_num_queries(1):
        assert fields.resolve_many(fresh, "lines") == expected
