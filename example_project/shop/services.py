"""Checkout and order lifecycle for the example shop.

``place_order`` follows django-klaviyo's contract for order events: the order is created
``pending``, its lines are saved, then it moves to ``placed``, all in one transaction, so
the Placed Order event is built from the complete order and is committed (or rolled
back) together with it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

import django_klaviyo
from shop.models import Order, OrderLine, Refund, RefundLine

LINE_FIELDS = (
    "product_id",
    "sku",
    "name",
    "quantity",
    "unit_price",
    "image_url",
    "product_url",
    "categories",
    "brand",
)


def new_order_number() -> str:
    return f"{timezone.now():%Y%m%d}-{secrets.token_hex(5).upper()}"


def _line(data: Mapping[str, Any], index: int) -> OrderLine:
    unknown = set(data) - set(LINE_FIELDS)
    if unknown:
        raise ValidationError(f"line {index}: unknown field(s) {sorted(unknown)}.")
    for required in ("sku", "name", "unit_price"):
        if not data.get(required) and data.get(required) != 0:
            raise ValidationError(f"line {index}: {required} is required.")
    quantity = data.get("quantity", 1)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
        raise ValidationError(f"line {index}: quantity must be a positive whole number.")
    try:
        unit_price = Decimal(str(data["unit_price"]))
    except InvalidOperation:
        raise ValidationError(f"line {index}: unit_price is not a number.") from None
    if not unit_price.is_finite() or unit_price < 0:
        raise ValidationError(f"line {index}: unit_price must be zero or more.")
    return OrderLine(**{**data, "quantity": quantity, "unit_price": unit_price})


def _remember_lines(order: Order, lines: list[OrderLine]) -> None:
    """Hand the just-created lines to ``order.lines.all()`` (as a prefetch would), so the
    Placed Order mapper does not query them back."""
    if any(line.pk is None for line in lines):
        return  # the backend did not return primary keys; let the mapper query
    queryset = order.lines.all()
    queryset._result_cache = lines
    queryset._prefetch_done = True
    order._prefetched_objects_cache = {"lines": queryset}


def place_order(
    *,
    customer: Any = None,
    email: str = "",
    lines: Iterable[Mapping[str, Any]],
    currency: str = "USD",
    billing_address: Mapping[str, Any] | None = None,
    shipping_address: Mapping[str, Any] | None = None,
    number: str | None = None,
    discount_code: str = "",
    discount_value: Decimal | None = None,
    anonymous_id: str = "",
) -> Order:
    """Create a placed order for a customer (a user) or a guest (an email). A discount
    (code and positive amount) is taken off the lines' total. ``anonymous_id`` is the
    storefront visitor's (django_klaviyo.storefront), carried by the order's events."""
    email = email or getattr(customer, "email", "") or ""
    if customer is None and not email:
        raise ValidationError("A guest order needs an email.")
    line_objects = [_line(data, i) for i, data in enumerate(lines)]
    if not line_objects:
        raise ValidationError("An order needs at least one line.")
    total = sum((line.row_total for line in line_objects), Decimal("0.00"))
    if discount_value:
        total = max(Decimal("0.00"), total - Decimal(str(discount_value)))
    with transaction.atomic():
        order = Order.objects.create(
            number=number or new_order_number(),
            customer=customer,
            email=email,
            status=Order.Status.PENDING,
            total=total,
            currency=currency,
            billing_address=dict(billing_address or {}),
            shipping_address=dict(shipping_address or {}),
            discount_code=discount_code,
            discount_value=discount_value,
            klaviyo_anonymous_id=anonymous_id,
        )
        for line in line_objects:
            line.order = order
        OrderLine.objects.bulk_create(line_objects)
        _remember_lines(order, line_objects)
        order.status = Order.Status.PLACED
        order.placed_at = timezone.now()
        order.save(update_fields=["status", "placed_at", "updated_at"])
    return order


def _move(order: Order, target: str, allowed_from: tuple[str, ...], **changes: Any) -> Order:
    if order.status not in allowed_from:
        raise ValidationError(f"Order {order.number} is {order.status}; it cannot become {target}.")
    for name, value in changes.items():
        setattr(order, name, value)
    order.status = target
    with transaction.atomic():
        order.save(update_fields=["status", "updated_at", *changes])
    return order


def fulfil_order(
    order: Order, *, tracking_number: str = "", tracking_url: str = "", carrier: str = ""
) -> Order:
    return _move(
        order,
        Order.Status.FULFILLED,
        (Order.Status.PLACED,),
        tracking_number=tracking_number,
        tracking_url=tracking_url,
        carrier=carrier,
    )


def cancel_order(order: Order, *, reason: str = "") -> Order:
    return _move(
        order,
        Order.Status.CANCELLED,
        (Order.Status.PENDING, Order.Status.PLACED),
        cancel_reason=reason,
    )


def refund_order(order: Order) -> Order:
    """Mark the whole order refunded (one full Refunded Order, by its status)."""
    return _move(order, Order.Status.REFUNDED, (Order.Status.PLACED, Order.Status.FULFILLED))


def refund(
    order: Order,
    lines: Iterable[tuple[OrderLine, int]],
    *,
    reason: str = "",
    shipping: Decimal = Decimal("0.00"),
) -> Refund:
    """Give back money for ``quantity`` of each (line, quantity), plus ``shipping``: a
    partial refund, as often as needed. Each refund is one Refunded Order in Klaviyo,
    with its amount and items. Once everything is refunded the order becomes refunded
    (which sends nothing more: its refunds were sent one by one)."""
    if order.status not in (Order.Status.PLACED, Order.Status.FULFILLED):
        raise ValidationError(f"Order {order.number} is {order.status}; it cannot be refunded.")
    picked = [(line, quantity) for line, quantity in lines if quantity]
    if not picked and not shipping:
        raise ValidationError("A refund needs lines or an amount.")
    with transaction.atomic():
        refund = Refund.objects.create(order=order, amount=Decimal("0.00"), reason=reason)
        refund_lines = [
            RefundLine(refund=refund, line=line, quantity=qty, amount=line.unit_price * qty)
            for line, qty in picked
        ]
        RefundLine.objects.bulk_create(refund_lines)
        refund.amount = sum((r.amount for r in refund_lines), Decimal(str(shipping)))
        refund.save(update_fields=["amount"])
        django_klaviyo.order_refunded(order, refund=refund)
        refunded = sum((r.amount for r in Refund.objects.filter(order=order)), Decimal(0))
        if refunded >= order.total:
            _move(order, Order.Status.REFUNDED, (Order.Status.PLACED, Order.Status.FULFILLED))
    return refund
