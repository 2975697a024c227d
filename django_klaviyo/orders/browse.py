"""Browse and cart events' properties (Viewed Product, Added to Cart, Started Checkout),
with the names of Klaviyo's guide and abandoned-cart templates.

The helpers in ``django_klaviyo.api`` take product dicts with snake_case keys:
``product_id``, ``sku``, ``name``, ``price``, ``quantity``, ``image_url``, ``product_url``,
``categories``, ``brand``, ``compare_at_price``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.orders.convert import categories_list, money
from django_klaviyo.orders.items import unique_in_order

# Viewed Product's property names (Klaviyo's guide).
PRODUCT_KEYS = {
    "product_id": "ProductID",
    "sku": "SKU",
    "name": "ProductName",
    "quantity": "Quantity",
    "price": "Price",
    "compare_at_price": "CompareAtPrice",
    "image_url": "ImageURL",
    "product_url": "URL",
    "categories": "Categories",
    "brand": "Brand",
}
# Cart and checkout Items[] entries (Klaviyo's guide: Added to Cart, Started Checkout).
CART_ITEM_KEYS = {
    **PRODUCT_KEYS,
    "price": "ItemPrice",
    "product_url": "ProductURL",
    "categories": "ProductCategories",
}
# The added item of Added to Cart, as AddedItem<name>.
ADDED_ITEM_KEYS = {**PRODUCT_KEYS, "name": "ProductName", "product_url": "URL"}
MONEY_KEYS = frozenset({"price", "compare_at_price"})


def product_properties(
    product: Mapping[str, Any], keys: Mapping[str, str] = PRODUCT_KEYS
) -> dict[str, Any]:
    """Product dict (snake_case, see module doc) → Klaviyo property names."""
    if not isinstance(product, Mapping):
        raise KlaviyoValidationError("product must be a dict.", field="product")
    result: dict[str, Any] = {}
    for key, value in product.items():
        if value is None or value == "":
            continue
        if key in MONEY_KEYS:
            value = money(value)
        elif key == "categories":
            value = categories_list(value)
        result[keys.get(key, key)] = value
    return result


def cart_items(items: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """Cart items (product dicts) as Klaviyo's Items[] entries, with RowTotal."""
    if items is None:
        return []
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise KlaviyoValidationError("items must be a list of product dicts.", field="items")
    result = []
    for item in items:
        properties = product_properties(item, CART_ITEM_KEYS)
        price = properties.get("ItemPrice")
        quantity = properties.get("Quantity", 1)
        if price is not None and isinstance(quantity, (int, float)):
            properties["RowTotal"] = money(Decimal(str(price)) * Decimal(str(quantity)))
        result.append(properties)
    return result


def added_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """Added to Cart's AddedItem* properties (AddedItemProductName, AddedItemPrice, ...)."""
    properties = product_properties(item, ADDED_ITEM_KEYS)
    return {f"AddedItem{key}": value for key, value in properties.items()}


def items_summary(items: list[dict[str, Any]]) -> dict[str, Any]:
    categories = unique_in_order(c for item in items for c in item.get("ProductCategories", []))
    return {
        "ItemNames": [item.get("ProductName", "") for item in items],
        "Categories": categories,
        "ItemCount": sum(
            item.get("Quantity", 1)
            for item in items
            if isinstance(item.get("Quantity", 1), (int, float))
        ),
        "Items": items,
    }


def items_value(items: list[dict[str, Any]]) -> float | None:
    totals = [item["RowTotal"] for item in items if item.get("RowTotal") is not None]
    return money(sum(Decimal(str(t)) for t in totals)) if totals else None
