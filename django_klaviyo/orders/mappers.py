"""The default order mapper: store orders to Klaviyo's e-commerce events, following
Klaviyo's e-commerce conventions (docs/mapping.md; Klaviyo's guide "Integrate an ecommerce
platform without a pre-built Klaviyo integration").

The mapper is replaceable: point ``KLAVIYO["ORDER_EVENTS_MAPPER"]`` at your own function
(or a dotted path to it) with the same signature. Most stores need no code: the default
order mapper reads the order through the declarative mapping of
``django_klaviyo.orders.fields`` (``ORDER_FIELDS``, ``ORDER_LINE_FIELDS``). What a mapper
refuses (``KlaviyoValidationError``) or fails on becomes a dead outbox row with the
reason; it never breaks the store's save (``django_klaviyo.orders.receivers``).

Order events (``default_order_events(order, previous_status, created) -> list[dict]``)
    Events fire on status TRANSITIONS of ``order.<ORDER_STATUS_FIELD>``. Each returned
    dict is an event spec: ``metric``, ``profile``, ``properties``, ``value``,
    ``value_currency``, ``time``, ``unique_id``, ``dedupe_key``, and optionally further
    events sharing the spec's profile, time and currency, stored in the spec's ONE outbox
    row: ``item_events`` (``{"metric", "unique_ids"}``: one event per entry of
    ``properties["Items"]``, made from it when sent, see ``django_klaviyo.rules.events``)
    and ``expand`` (events written out in full: ``metric``, ``unique_id``,
    ``properties``, ``value``).

    ============================  ==========================================================
    Order enters                  Events (unique_id; value)
    ============================  ==========================================================
    ``ORDER_STATUS_PLACED``       **Placed Order** (the order id; the order total) carrying
                                  one **Ordered Product** per line in ``item_events``
                                  (``<order id>-<line id>``; the line total)
    ``ORDER_STATUS_FULFILLED``    **Fulfilled Order** (the order id; the total), + tracking
    ``ORDER_STATUS_CANCELLED``    **Cancelled Order** (the order id; what refunds left of
                                  the total, POSITIVE), + Reason
    ``ORDER_STATUS_REFUNDED``     **Refunded Order** (the order id, or
                                  ``<order id>-refund-remainder`` after refund records;
                                  what no earlier reversal covered, POSITIVE), + Reason;
                                  nothing when refund records already cover the total
                                  (``django_klaviyo.orders.ledger``)
    ============================  ==========================================================

    The order id is ``ORDER_FIELDS["number"]`` (else the primary key). Klaviyo subtracts a
    Cancelled or Refunded Order from the customer's lifetime value only when its unique_id
    equals the Placed Order's, and does the subtracting itself: values are positive.
    Every status event carries the Placed Order's properties (its items, for templates).

    Each (order, event) has a fixed dedupe key, so it is enqueued at most once, whichever
    path (save signal, ``ORDER_PLACED_SIGNAL`` or ``django_klaviyo.order_placed(order)``)
    produces it. The Ordered Products travel in the Placed Order's row and share its key.

    Every mapper's output, this one's included, is cleaned once by the event rules
    (``django_klaviyo.rules``) when its rows are written.

    An order's first ``post_save`` fires before its lines exist. An order created in the
    placed status gets its Placed Order row then, completed by the saves of its lines in
    the same transaction (``django_klaviyo.orders.pending``); checkouts may also create it
    pending and move it to placed after the lines, name a signal sent after the lines
    exist (``ORDER_PLACED_SIGNAL``), or call ``django_klaviyo.order_placed(order)``.

    Properties use the names of Klaviyo's guide (docs/mapping.md lists them; addresses:
    ``django_klaviyo.orders.addresses``). Money is a float rounded to 2 decimals.

Browse and cart events (``django_klaviyo.viewed_product`` etc.): see
``django_klaviyo.orders.browse``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.orders import fields as mapping
from django_klaviyo.orders import ledger, reading
from django_klaviyo.orders.addresses import address
from django_klaviyo.orders.convert import blank, iso_utc, money
from django_klaviyo.orders.items import (
    items_properties,
    line_id_of,
    line_item,
    line_item_of,
)
from django_klaviyo.rules.values import to_json

__all__ = [
    "default_order_events",
    "iso_utc",
    "line_item",
    "money",
    "order_id",
    "order_lines",
    "order_profile",
    "order_properties",
    "placed_order_events",
]

logger = logging.getLogger(__name__)

# --- orders ---------------------------------------------------------------------------


def order_fields() -> dict[str, Any]:
    return mapping.mapping("ORDER_FIELDS")


def line_fields() -> dict[str, Any]:
    return mapping.mapping("ORDER_LINE_FIELDS")


def order_status(order: Any) -> Any:
    return getattr(order, klaviyo_settings.ORDER_STATUS_FIELD, None)


def order_profile(order: Any, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """Customer profile: the order's email (else the customer's), its phone number and
    the customer's id."""
    return _profile(reading.values(order, "ORDER_FIELDS", fields or None))


def _profile(order: reading.Values) -> dict[str, Any]:
    profile: dict[str, Any] = {}
    customer_id = order["customer_id"]
    email = order["email"] or ""
    if customer_id is not None:
        profile["external_id"] = str(customer_id)
        if not email:
            email = order["customer_email"] or ""
    if email:
        profile["email"] = str(email)
    phone = order["phone"]
    if phone:
        # Cleaned by the rules (E.164); placement drops a bad one when other ids remain.
        profile["phone_number"] = str(phone)
    anonymous_id = order["anonymous_id"]
    if anonymous_id:
        profile["anonymous_id"] = str(anonymous_id)
    return profile


def order_lines(order: Any, fields: dict[str, Any] | None = None) -> list[Any]:
    return mapping.resolve_many(order, (fields or order_fields())["lines"])


def order_id(order: Any, fields: dict[str, Any] | None = None) -> str:
    """The order's id in Klaviyo: OrderId, and the unique_id of its order-level events."""
    return _order_id(reading.values(order, "ORDER_FIELDS", fields or None))


def _order_id(order: reading.Values) -> str:
    number = order["number"]
    return str(order.obj.pk if blank(number) else number)


def order_dedupe_key(order: Any, suffix: str) -> str:
    prefix = _KEY_PREFIXES.get(type(order))
    if prefix is None:
        prefix = _KEY_PREFIXES[type(order)] = f"event:{order._meta.label_lower}:"
    return f"{prefix}{order.pk}:{suffix}"


# "event:<app_label.model_name>:" of each order model (Options.label_lower formats it anew
# at every call).
_KEY_PREFIXES: dict[type, str] = {}


def order_properties(
    order: Any, items: list[dict[str, Any]], fields: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The Placed Order's properties, which every later event of the order repeats."""
    return _order_properties(reading.values(order, "ORDER_FIELDS", fields or None), items)


def _order_properties(order: reading.Values, items: list[dict[str, Any]]) -> dict[str, Any]:
    properties: dict[str, Any] = {"OrderId": _order_id(order), **items_properties(items)}
    discount_code = order["discount_code"]
    if discount_code:
        properties["DiscountCode"] = str(discount_code)
    discount_value = order["discount_value"]
    if not blank(discount_value):
        properties["DiscountValue"] = money(abs(Decimal(str(discount_value))))
    for key, name in (
        ("billing_address", "BillingAddress"),
        ("shipping_address", "ShippingAddress"),
    ):
        value = address(order[key])
        if value:
            # Free-form store data, made plain JSON here (the event rules check it again).
            properties[name] = to_json(value, f"properties.{name}", _depth=1)
    return properties


def order_event(
    order: Any,
    *,
    name: str,
    suffix: str,
    properties: dict[str, Any],
    value: float | None,
    time: Any,
    unique_id: str,
    fields: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One order-level event spec (``name``: a key of METRIC_NAMES)."""
    return _order_event(
        reading.values(order, "ORDER_FIELDS", fields or None),
        mapping.metric(name),
        suffix,
        properties,
        value,
        time,
        unique_id,
    )


def _order_event(
    order: reading.Values,
    metric: str,
    suffix: str,
    properties: dict[str, Any],
    value: float | None,
    time: Any,
    unique_id: str,
) -> dict[str, Any]:
    return {
        "metric": metric,
        "profile": _profile(order),
        "properties": properties,
        "value": value,
        "value_currency": order["currency"] or None,
        "time": iso_utc(time),
        "unique_id": unique_id,
        "dedupe_key": order_dedupe_key(order.obj, suffix),
    }


def placed_order_events(order: Any) -> list[dict[str, Any]]:
    """Placed Order, carrying one Ordered Product per line: one outbox row per placed
    order, sent as one bulk entry. The Ordered Products are given by reference
    (``item_events``: their metric and one unique_id per entry of ``Items``); each is
    made from its line's entry of ``Items`` when the row is sent, so the row holds every
    line once."""
    read_order, read_line, placed, ordered = _placed_setup()
    values = read_order(order)
    lines = [read_line(line) for line in mapping.resolve_many(order, values.paths["lines"])]
    items = [line_item_of(line) for line in lines]
    properties = _order_properties(values, items)
    oid = properties["OrderId"]
    event = _order_event(
        values,
        placed,
        "placed",
        properties,
        money(values["total"]),
        values["placed_at"] or values["updated_at"],
        oid,
    )
    if items:
        event["item_events"] = {
            "metric": ordered,
            "unique_ids": [f"{oid}-{line_id_of(line)}" for line in lines],
        }
    return [event]


def _placed_setup() -> tuple[reading.Reader, reading.Reader, str, str]:
    """What placed_order_events takes from settings (the readers of ORDER_FIELDS and
    ORDER_LINE_FIELDS, the names of Placed Order and Ordered Product), looked up once
    until a setting changes: one look-up per order instead of four."""
    return klaviyo_settings.memo(
        "placed_order_setup",
        lambda: (
            reading.reader("ORDER_FIELDS"),
            reading.reader("ORDER_LINE_FIELDS"),
            mapping.metric("placed_order"),
            mapping.metric("ordered_product"),
        ),
    )


def status_event(order: Any, name: str, suffix: str, time_key: str) -> dict[str, Any]:
    """Fulfilled / Cancelled / Refunded Order: the Placed Order's unique_id, properties and
    (positive) value, so Klaviyo ties it to the order it follows. A Cancelled Order is
    worth what earlier refunds left (``django_klaviyo.orders.ledger``)."""
    values = reading.reader("ORDER_FIELDS")(order)
    read_line = reading.reader("ORDER_LINE_FIELDS")
    items = [
        line_item_of(read_line(line)) for line in mapping.resolve_many(order, values.paths["lines"])
    ]
    properties = _order_properties(values, items)
    value = money(values["total"])
    if suffix == "fulfilled":
        properties.update(
            TrackingNumber=str(values["tracking_number"] or ""),
            TrackingURL=str(values["tracking_url"] or ""),
            Carrier=str(values["carrier"] or ""),
        )
    else:
        properties["Reason"] = str(values["cancel_reason"] or "")
    if suffix == "cancelled":
        book = ledger.read(order)
        if book.total is not None:
            value = money(book.left)
        properties["ReversedBefore"] = money(book.reversed)
    return _order_event(
        values,
        mapping.metric(name),
        suffix,
        properties,
        value,
        values[time_key] or values["updated_at"],
        properties["OrderId"],
    )


def status_refund_events(order: Any) -> list[dict[str, Any]]:
    """The Refunded Order of an order moved to ORDER_STATUS_REFUNDED ("refund the rest"):
    what was not yet reported as refunded, worth what no earlier reversal covered
    (``django_klaviyo.orders.ledger``). Nothing when earlier refunds cover the total. The
    order id as unique_id only when no Refunded Order of the order came before."""
    book = ledger.read(order)
    if book.refunds and (book.total is None or book.refunded >= book.total):
        logger.info(
            "django-klaviyo: order %s is refunded; its refunds were already sent.", order.pk
        )
        return []
    event = status_event(order, "refunded_order", "refund:full", "refunded_at")
    first = not book.refunds
    if not first:
        event["unique_id"] = f"{event['properties']['OrderId']}-refund-remainder"
    if book.total is not None:
        event["value"] = money(book.left)
    event["properties"].update(
        ReversesPlacedOrder=first,
        RefundAmount=money(None if book.total is None else book.total - book.refunded),
        ReversedBefore=money(book.reversed),
    )
    return [event]


def default_order_events(
    order: Any, previous_status: str | None, created: bool
) -> list[dict[str, Any]]:
    status = order_status(order)
    if not created and status == previous_status:
        return []
    placed, fulfilled, cancelled, refunded = mapping.status_table()
    if status in placed:
        # Created in the placed status, its lines usually come later in the transaction:
        # the row written now awaits them (django_klaviyo.orders.pending).
        return placed_order_events(order)
    if status in fulfilled:
        return [status_event(order, "fulfilled_order", "fulfilled", "fulfilled_at")]
    if status in cancelled:
        return [status_event(order, "cancelled_order", "cancelled", "cancelled_at")]
    if status in refunded:
        return status_refund_events(order)
    return []


def empty_placed_order(spec: Mapping[str, Any]) -> str | None:
    """Why a mapped Placed Order is empty (no value or no items), or None. Such a spec is
    stored as a dead row with this reason, never sent as an empty event."""
    if not isinstance(spec, Mapping) or spec.get("metric") != mapping.metric("placed_order"):
        return None  # not a Placed Order (a non-dict is named by the event rules)
    if spec.get("value") is None:
        return "the Placed Order has no value: check ORDER_FIELDS['total']."
    properties = spec.get("properties") or {}
    if not properties.get("Items") and not spec.get("expand") and not spec.get("item_events"):
        return (
            "the Placed Order has no items: check ORDER_FIELDS['lines']. Lines saved one "
            "by one in the order's transaction complete it; lines written by bulk_create "
            "or raw SQL do not: call django_klaviyo.order_placed(order) after them."
        )
    return None
