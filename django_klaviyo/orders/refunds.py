"""Refunded Order events from the refunds a store records: partial and repeated refunds,
each sent once, with the amount and the items refunded.

A refund is a record of the store (a model instance read through ``REFUND_FIELDS`` and
``REFUND_LINE_FIELDS``) or a dict with the same keys (``id``, ``amount``, ``reason``,
``lines`` of ``{"line": <order line>, "quantity": n, "amount": x}``, ``created_at``), given
to ``django_klaviyo.order_refunded(order, refund=...)``.

unique_id scheme, and what it means for customer lifetime value (CLV)
    Klaviyo subtracts a Refunded Order from CLV only when its unique_id equals the Placed
    Order's, and keeps one event per (profile, metric, unique_id). So:

    * the order's FIRST refund gets the order id (the Placed Order's unique_id): Klaviyo
      subtracts its value from CLV;
    * every LATER refund of the order gets ``<order id>-refund-<refund id>``: it is
      recorded (flows, reports, the amount), but CLV does not subtract it. Its property
      ``ReversesPlacedOrder`` is False (True on the first), so segments can tell them apart.

    Each refund's dedupe key is ``event:<app>.<model>:<pk>:refund:<refund id>``: calling
    ``order_refunded`` again for the same refund enqueues nothing.

Values: the refund's amount, capped at what earlier Cancelled and Refunded Orders of the
order left of its total (``django_klaviyo.orders.ledger``, which also says where "earlier"
and "first" are read from and how concurrent refunds of one order wait for each other);
``RefundAmount`` keeps the store's figure and ``ReversedBefore`` what was reported before.
``enqueue_refund`` reads the ledger and writes the row in one transaction.

The status path (``ORDER_STATUS_REFUNDED``, "refund the rest") is the default mapper's
(``django_klaviyo.orders.mappers.status_refund_events``); this module builds on the
mapper's order reading, and the mapper does not import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.db import DEFAULT_DB_ALIAS, transaction

from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import fields as mapping
from django_klaviyo.orders import ledger
from django_klaviyo.orders import mappers as ecommerce
from django_klaviyo.orders.placement import enqueue_order_events


def _refund_id(refund: Any, fields: dict[str, Any]) -> str:
    value = mapping.resolve(refund, fields["id"])
    if value in (None, "") and isinstance(refund, Mapping):
        value = refund.get("id")
    if value in (None, ""):
        raise ValueError("a refund needs an id (REFUND_FIELDS['id']).")
    return str(value)


def refunded_items(refund: Any) -> list[dict[str, Any]]:
    """The refund's lines as Klaviyo Items[] entries: the order line's item with the
    refunded Quantity and RowTotal."""
    fields = mapping.mapping("REFUND_FIELDS")
    rfields = mapping.mapping("REFUND_LINE_FIELDS")
    lfields = ecommerce.line_fields()
    items = []
    for refund_line in mapping.resolve_many(refund, fields["lines"]):
        line = mapping.resolve(refund_line, rfields["line"])
        item = ecommerce.line_item(line, lfields) if line is not None else {}
        quantity = mapping.resolve(refund_line, rfields["quantity"])
        if quantity is not None:
            item["Quantity"] = quantity
        amount = mapping.resolve(refund_line, rfields["amount"])
        if amount in (None, "") and item.get("ItemPrice") is not None:
            amount = Decimal(str(item["ItemPrice"])) * Decimal(str(item.get("Quantity", 1)))
        item["RowTotal"] = ecommerce.money(amount)
        items.append(item)
    return items


def enqueue_refund(
    order: Any,
    refund: Any,
    *,
    using: str | None = None,
    backfill: bool = False,
    account: str | None = None,
) -> list[OutboxEvent]:
    """Enqueue the Refunded Order of ``refund`` (see api.order_refunded): the ledger is
    read and the row written in one transaction, holding the order's row lock."""
    alias = using or order._state.db or DEFAULT_DB_ALIAS
    with transaction.atomic(using=alias):
        return enqueue_order_events(
            refund_events(order, refund, using=alias),
            order,
            using=alias,
            backfill=backfill,
            account=account,
        )


def refund_events(order: Any, refund: Any, *, using: str | None = None) -> list[dict[str, Any]]:
    """The Refunded Order spec of one refund record (see the module doc for its ids and
    value)."""
    fields = mapping.mapping("REFUND_FIELDS")
    ofields = ecommerce.order_fields()
    refund_id = _refund_id(refund, fields)
    items = refunded_items(refund)
    amount = mapping.resolve(refund, fields["amount"])
    if amount in (None, ""):
        totals = [item["RowTotal"] for item in items if item.get("RowTotal") is not None]
        amount = sum((Decimal(str(t)) for t in totals), Decimal(0)) if totals else None
    amount = None if amount is None else abs(Decimal(str(amount)))
    oid = ecommerce.order_id(order, ofields)
    book = ledger.read(order, using=using)
    first = not book.refunds
    properties = ecommerce.order_properties(order, items, ofields)
    properties.update(
        RefundId=refund_id,
        Reason=str(mapping.resolve(refund, fields["reason"]) or ""),
        ReversesPlacedOrder=first,
        RefundAmount=ecommerce.money(amount),
        ReversedBefore=ecommerce.money(book.reversed),
        # The order's items (and quantities) this refund does not cover: Klaviyo's guide
        # asks to tell what was and was not refunded.
        NotRefundedItems=not_refunded(order, items, ofields),
    )
    return [
        ecommerce.order_event(
            order,
            name="refunded_order",
            suffix=f"refund:{refund_id}",
            properties=properties,
            value=ecommerce.money(book.cap(amount)),
            time=mapping.resolve(refund, fields["created_at"])
            or mapping.resolve(order, ofields["updated_at"]),
            unique_id=oid if first else f"{oid}-refund-{refund_id}",
            fields=ofields,
        )
    ]


def not_refunded(
    order: Any, refunded: list[dict[str, Any]], fields: dict[str, Any]
) -> list[dict[str, Any]]:
    taken: dict[tuple[Any, Any], Any] = {}
    for item in refunded:
        key = (item.get("ProductID"), item.get("SKU"))
        taken[key] = taken.get(key, 0) + (item.get("Quantity") or 0)
    remaining = []
    for line in ecommerce.order_lines(order, fields):
        item = ecommerce.line_item(line)
        key = (item["ProductID"], item["SKU"])
        left = item["Quantity"] - taken.pop(key, 0)
        if left > 0:
            item["Quantity"] = left
            if item["ItemPrice"] is not None:
                item["RowTotal"] = ecommerce.money(Decimal(str(item["ItemPrice"])) * left)
            remaining.append(item)
    return remaining
