"""An order's lines as Klaviyo's ``Items``: one entry per line (``line_item``), the
order-level lists derived from them (``items_properties``: ItemNames, Categories,
Brands, ItemCount) and an Ordered Product's properties. Shared by the order, refund and
status mappers (``django_klaviyo.orders.mappers``, ``django_klaviyo.orders.refunds``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django_klaviyo.orders import reading
from django_klaviyo.orders.convert import as_decimal, blank, categories_list, money
from django_klaviyo.rules.events import item_event_properties


def line_id(line: Any, fields: dict[str, Any] | None = None) -> str:
    return line_id_of(reading.values(line, "ORDER_LINE_FIELDS", fields or None))


def line_id_of(line: reading.Values) -> str:
    value = line["id"]
    if blank(value):
        value = line["sku"] or getattr(line.obj, "pk", "")
    return str(value)


def line_item(line: Any, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """One order line as Klaviyo's Items[] entry."""
    return line_item_of(reading.values(line, "ORDER_LINE_FIELDS", fields or None))


def line_item_of(line: reading.Values) -> dict[str, Any]:
    quantity = line["quantity"]
    quantity = 1 if quantity is None else quantity
    unit_price = line["unit_price"]
    row_total = line["row_total"]
    if blank(row_total):
        if not blank(unit_price):
            row_total = as_decimal(unit_price) * as_decimal(quantity)
    elif blank(unit_price) and quantity:
        unit_price = as_decimal(row_total) / as_decimal(quantity)
    sku = line["sku"] or ""
    product_id = line["product_id"]
    return {
        "ProductID": str(sku or line_id_of(line) if blank(product_id) else product_id),
        "SKU": str(sku),
        "ProductName": str(line["name"] or ""),
        "Quantity": quantity,
        "ItemPrice": money(unit_price),
        "RowTotal": money(row_total),
        "ProductURL": str(line["product_url"] or ""),
        "ImageURL": str(line["image_url"] or ""),
        "Categories": categories_list(line["categories"]),
        "Brand": str(line["brand"] or ""),
    }


def unique_in_order(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if value and value not in seen:
            seen.append(value)
    return seen


def items_properties(items: list[dict[str, Any]]) -> dict[str, Any]:
    """ItemNames, Categories, Brands, ItemCount and Items of an order's (or refund's) items:
    Categories and Brands are the non-empty ones, each once, in order; ItemCount adds the
    numeric quantities. (One pass: the save path asks this of every placed order.)"""
    names: list[Any] = []
    categories: list[Any] = []
    brands: list[Any] = []
    count = 0
    for item in items:
        names.append(item["ProductName"])
        for category in item["Categories"]:
            if category and category not in categories:
                categories.append(category)
        brand = item["Brand"]
        if brand and brand not in brands:
            brands.append(brand)
        quantity = item["Quantity"]
        if isinstance(quantity, (int, float)):
            count += quantity
    return {
        "ItemNames": names,
        "Categories": categories,
        "Brands": brands,
        "ItemCount": count,
        "Items": items,
    }


def ordered_product_properties(oid: str, item: dict[str, Any]) -> dict[str, Any]:
    """An Ordered Product's properties (``django_klaviyo.rules.events``, which derives
    them when a Placed Order's row is sent)."""
    return item_event_properties(oid, item)
