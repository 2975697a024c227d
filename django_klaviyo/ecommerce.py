"""Default mappers from store objects to Klaviyo profiles and e-commerce events.

Both mappers are replaceable: point ``KLAVIYO["USER_PROFILE_MAPPER"]`` or
``KLAVIYO["ORDER_EVENTS_MAPPER"]`` at your own function (or a dotted path to it) with the
same signature. A mapper raising ``KlaviyoValidationError`` skips that save's Klaviyo
update with a logged warning; it never breaks the store's save.

User profile (``default_user_profile(user) -> dict | None``)
    ``email`` ← ``user.email``; ``external_id`` ← ``str(user.pk)``; ``first_name`` and
    ``last_name`` ← the same attributes; ``phone_number`` ← ``user.phone_number`` when the
    user model has one (normalised to E.164; an invalid number is left out with a
    warning). Returns None when the user has neither an email nor a primary key.

Order events (``default_order_events(order, previous_status, created) -> list[dict]``)
    Events fire on status TRANSITIONS of ``order.<ORDER_STATUS_FIELD>`` (default
    ``status``). Each returned dict is an event spec: ``metric``, ``profile``,
    ``properties``, ``value``, ``value_currency``, ``time``, ``unique_id``, ``dedupe_key``,
    and optionally ``expand``: a list of further events (``metric``, ``unique_id``,
    ``properties``, ``value``) sharing the spec's profile, time and currency. They are
    stored in the spec's ONE outbox row and sent with it in one bulk request (the row
    succeeds or fails as a whole), which keeps a placed order to one INSERTed row.

    ============================  ==========================================================
    Order enters                  Events
    ============================  ==========================================================
    ``ORDER_STATUS_PLACED``       **Placed Order** (value = order total; unique_id
                                  ``order-<pk>-placed``) carrying in ``expand`` one
                                  **Ordered Product** per line (value = line total;
                                  unique_id ``order-<pk>-line-<line pk>``)
    ``ORDER_STATUS_FULFILLED``    **Fulfilled Order** (+ TrackingNumber, TrackingURL,
                                  Carrier; unique_id ``order-<pk>-fulfilled``)
    ``ORDER_STATUS_CANCELLED``    **Cancelled Order**, NEGATIVE value (``order-<pk>-cancelled``)
    ``ORDER_STATUS_REFUNDED``     **Refunded Order**, NEGATIVE value (``order-<pk>-refunded``)
    ============================  ==========================================================

    Status values default to "placed", "fulfilled", "cancelled" and "refunded".
    Each (order, event) has a fixed dedupe key, so it is enqueued at most once, whichever
    path (save signal or ``django_klaviyo.order_placed(order)``) produces it, however
    often the order is saved. The Ordered Products travel in the Placed Order's row, so
    they share its key ``event:<app>.<model>:<pk>:placed``: lines added after the order
    was placed and enqueued are not sent (nor are they in its Placed Order).

    Every mapper's output, this one's included, is cleaned once by the event rules
    (``django_klaviyo.rules``) when its rows are written.

    An order's first ``post_save`` fires before its lines exist. So checkouts create the
    order in a pending status, save the lines, then set the placed status and save again,
    all in one ``transaction.atomic()``. An order CREATED directly in the placed status
    gets no automatic Placed Order (a warning is logged): call
    ``django_klaviyo.order_placed(order)`` once its lines are saved.

    Order attributes read (missing ones are left out): ``pk``, ``number`` (OrderId;
    falls back to pk), ``total``, ``currency``, ``customer_id`` and ``email`` (profile:
    ``external_id`` = customer pk and ``email`` = ``order.email``, else the customer's
    email; guests by ``email``), ``lines`` (a related manager or an iterable),
    ``billing_address`` / ``shipping_address`` (a dict with snake_case keys first_name,
    last_name, company, address1, address2, city, region, region_code, country,
    country_code, zip, phone, sent as FirstName, LastName, ...; or a string),
    ``tracking_number``, ``tracking_url``, ``carrier``, ``placed_at``, ``fulfilled_at``,
    ``cancelled_at``, ``refunded_at``, ``updated_at`` (event time; ISO-8601 UTC).

    Line attributes: ``pk``, ``product_id`` (falls back to ``sku``), ``sku``, ``name``,
    ``quantity``, ``unit_price``, ``image_url``, ``product_url``, ``categories`` (a list
    or a comma-separated string). Lines are read with ``order.lines.all()``: prefetch them
    (the example shop's checkout hands over the lines it just created) to save a query.

    Event properties: Placed Order / Fulfilled / Cancelled / Refunded carry ``OrderId``,
    ``ItemNames``, ``Categories``, ``ItemCount`` (sum of quantities), ``Items`` (each
    ``ProductID``, ``SKU``, ``ProductName``, ``Quantity``, ``Price`` (unit), ``RowTotal``,
    ``ImageURL``, ``ProductURL``, ``Categories``), and ``BillingAddress`` /
    ``ShippingAddress`` when present. Ordered Product carries ``OrderId`` and the item's
    fields. Money is a float rounded to 2 decimals.

Browse and cart events (``django_klaviyo.viewed_product`` etc.) take product dicts with
snake_case keys: ``product_id``, ``sku``, ``name``, ``price``, ``quantity``,
``image_url``, ``product_url``, ``categories``, ``brand``, ``compare_at_price``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.utils import timezone

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.identifiers import normalize_phone_number
from django_klaviyo.values import to_json

logger = logging.getLogger(__name__)

CENT = Decimal("0.01")
ADDRESS_KEYS = {
    "first_name": "FirstName",
    "last_name": "LastName",
    "company": "Company",
    "address1": "Address1",
    "address2": "Address2",
    "city": "City",
    "region": "Region",
    "region_code": "RegionCode",
    "country": "Country",
    "country_code": "CountryCode",
    "zip": "Zip",
    "phone": "Phone",
}
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
MONEY_KEYS = frozenset({"price", "compare_at_price"})


# --- small converters -----------------------------------------------------------------


def money(amount: Any) -> float | None:
    """A Decimal/number as a float rounded half-up to 2 decimals (None stays None)."""
    if amount is None or amount == "":
        return None
    try:
        value = Decimal(str(amount)).quantize(CENT, rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError) as exc:
        raise KlaviyoValidationError(f"{amount!r} is not an amount.", field="value") from exc
    return float(value)


def iso_utc(value: dt.datetime | None) -> str:
    if value is None:
        value = timezone.now()
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    return value.astimezone(dt.timezone.utc).isoformat()


def categories_list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(item) for item in value]


def address(value: Any) -> dict[str, Any] | str | None:
    if not value:
        return None
    if isinstance(value, Mapping):
        return {ADDRESS_KEYS.get(k, k): v for k, v in value.items() if v not in (None, "")}
    return str(value)


def product_properties(product: Mapping[str, Any]) -> dict[str, Any]:
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
        result[PRODUCT_KEYS.get(key, key)] = value
    return result


# --- users ----------------------------------------------------------------------------


def default_user_profile(user: Any) -> dict[str, Any] | None:
    profile: dict[str, Any] = {}
    email = getattr(user, "email", "") or ""
    if email:
        profile["email"] = email
    if user.pk is not None:
        profile["external_id"] = str(user.pk)
    if not profile:
        return None
    for name in ("first_name", "last_name"):
        value = getattr(user, name, "") or ""
        if value:
            profile[name] = value
    phone = getattr(user, "phone_number", None)
    if phone:
        try:
            profile["phone_number"] = normalize_phone_number(str(phone))
        except KlaviyoValidationError:
            # A bad phone must not cost the store its save or Klaviyo the rest of the profile.
            logger.warning(
                "django-klaviyo: user %s has a phone number that is not E.164; "
                "it is left out of the Klaviyo profile.",
                user.pk,
            )
    return profile


# --- orders ---------------------------------------------------------------------------


def order_statuses() -> dict[str, str]:
    return {
        "placed": klaviyo_settings.ORDER_STATUS_PLACED,
        "fulfilled": klaviyo_settings.ORDER_STATUS_FULFILLED,
        "cancelled": klaviyo_settings.ORDER_STATUS_CANCELLED,
        "refunded": klaviyo_settings.ORDER_STATUS_REFUNDED,
    }


def order_profile(order: Any) -> dict[str, Any]:
    """Customer profile from ``customer_id`` and ``order.email``: no query for the user
    unless the order has no email of its own."""
    profile: dict[str, Any] = {}
    customer_id = getattr(order, "customer_id", None)
    email = getattr(order, "email", "") or ""
    if customer_id is not None:
        profile["external_id"] = str(customer_id)
        if not email:
            email = getattr(getattr(order, "customer", None), "email", "") or ""
    if email:
        profile["email"] = email
    return profile


def order_lines(order: Any) -> list[Any]:
    lines = getattr(order, "lines", None)
    if lines is None:
        return []
    if hasattr(lines, "all"):
        return list(lines.all())
    return list(lines)


def order_id(order: Any) -> str:
    return str(getattr(order, "number", None) or order.pk)


def order_dedupe_key(order: Any, suffix: str) -> str:
    return f"event:{order._meta.label_lower}:{order.pk}:{suffix}"


def line_item(line: Any) -> dict[str, Any]:
    quantity = getattr(line, "quantity", 1) or 0
    unit_price = getattr(line, "unit_price", None) or 0
    sku = getattr(line, "sku", "") or ""
    return {
        "ProductID": str(getattr(line, "product_id", "") or sku or line.pk),
        "SKU": sku,
        "ProductName": getattr(line, "name", "") or "",
        "Quantity": quantity,
        "Price": money(unit_price),
        "RowTotal": money(Decimal(str(unit_price)) * quantity),
        "ImageURL": getattr(line, "image_url", "") or "",
        "ProductURL": getattr(line, "product_url", "") or "",
        "Categories": categories_list(getattr(line, "categories", None)),
    }


def order_properties(order: Any, lines: Iterable[Any]) -> dict[str, Any]:
    items = [line_item(line) for line in lines]
    categories: list[str] = []
    for item in items:
        for category in item["Categories"]:
            if category not in categories:
                categories.append(category)
    properties: dict[str, Any] = {
        "OrderId": order_id(order),
        "ItemNames": [item["ProductName"] for item in items],
        "Categories": categories,
        "ItemCount": sum(item["Quantity"] for item in items),
        "Items": items,
    }
    for attribute, name in (
        ("billing_address", "BillingAddress"),
        ("shipping_address", "ShippingAddress"),
    ):
        value = address(getattr(order, attribute, None))
        if value:
            # Free-form store data, made plain JSON here (the event rules check it again).
            properties[name] = to_json(value, f"properties.{name}", _depth=1)
    return properties


def _order_event(
    order: Any,
    *,
    metric: str,
    suffix: str,
    properties: dict[str, Any],
    value: float | None,
    time: Any,
) -> dict[str, Any]:
    return {
        "metric": metric,
        "profile": order_profile(order),
        "properties": properties,
        "value": value,
        "value_currency": getattr(order, "currency", None) or None,
        "time": iso_utc(time),
        "unique_id": f"order-{order.pk}-{suffix}",
        "dedupe_key": order_dedupe_key(order, suffix),
    }


def placed_order_events(order: Any) -> list[dict[str, Any]]:
    """Placed Order, carrying one Ordered Product per line in ``expand`` (used by
    ``order_placed`` too): one outbox row per placed order, sent as one bulk entry."""
    lines = order_lines(order)
    properties = order_properties(order, lines)
    time = getattr(order, "placed_at", None) or getattr(order, "updated_at", None)
    event = _order_event(
        order,
        metric="Placed Order",
        suffix="placed",
        properties=properties,
        value=money(getattr(order, "total", None)),
        time=time,
    )
    order_ref = properties["OrderId"]
    products = [
        {
            "metric": "Ordered Product",
            "unique_id": f"order-{order.pk}-line-{line.pk}",
            "properties": {"OrderId": order_ref, **item},
            "value": item["RowTotal"],
        }
        for line, item in zip(lines, properties["Items"], strict=True)
    ]
    if products:
        event["expand"] = products
    return [event]


def _status_event(order: Any, metric: str, suffix: str, *, negative: bool) -> dict[str, Any]:
    properties = order_properties(order, order_lines(order))
    if suffix == "fulfilled":
        properties.update(
            TrackingNumber=getattr(order, "tracking_number", "") or "",
            TrackingURL=getattr(order, "tracking_url", "") or "",
            Carrier=getattr(order, "carrier", "") or "",
        )
    value = money(getattr(order, "total", None))
    if negative and value is not None:
        value = -abs(value)
    time = getattr(order, f"{suffix}_at", None) or getattr(order, "updated_at", None)
    return _order_event(
        order, metric=metric, suffix=suffix, properties=properties, value=value, time=time
    )


def default_order_events(
    order: Any, previous_status: str | None, created: bool
) -> list[dict[str, Any]]:
    status = getattr(order, klaviyo_settings.ORDER_STATUS_FIELD, None)
    if not created and status == previous_status:
        return []
    statuses = order_statuses()
    if status == statuses["placed"]:
        if created:
            logger.warning(
                "django-klaviyo: order %s was created directly in status %r, before its "
                "lines exist; no Placed Order is sent. Create it pending and move it to "
                "placed after saving the lines, or call django_klaviyo.order_placed(order).",
                order.pk,
                status,
            )
            return []
        return placed_order_events(order)
    if status == statuses["fulfilled"]:
        return [_status_event(order, "Fulfilled Order", "fulfilled", negative=False)]
    if status == statuses["cancelled"]:
        return [_status_event(order, "Cancelled Order", "cancelled", negative=True)]
    if status == statuses["refunded"]:
        return [_status_event(order, "Refunded Order", "refunded", negative=True)]
    return []


# --- browse and cart events -----------------------------------------------------------


def cart_items(items: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    if items is None:
        return []
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise KlaviyoValidationError("items must be a list of product dicts.", field="items")
    result = []
    for item in items:
        properties = product_properties(item)
        price = properties.get("Price")
        quantity = properties.get("Quantity", 1)
        if price is not None and isinstance(quantity, (int, float)):
            properties["RowTotal"] = money(Decimal(str(price)) * Decimal(str(quantity)))
        result.append(properties)
    return result


def items_summary(items: list[dict[str, Any]]) -> dict[str, Any]:
    categories: list[str] = []
    for item in items:
        for category in item.get("Categories", []):
            if category not in categories:
                categories.append(category)
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
