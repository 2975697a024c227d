"""The refund ledger: how much of an order Klaviyo was already told is cancelled or
refunded, so each later Cancelled or Refunded Order reports only what is left, and the
values Klaviyo receives for an order never add up to more than its total.

The cases (docs/mapping.md, "Refunds and cancellations"), for an order whose
``ORDER_FIELDS["total"]`` is T and whose reversals already reported add up to R:

* ``order_refunded(order, refund=...)``: a Refunded Order worth the refund's amount,
  capped at T - R (0 once nothing is left); its ``RefundAmount`` property keeps the
  store's figure;
* the order moved to ``ORDER_STATUS_REFUNDED``: "refund the rest", a Refunded Order for
  what was not yet reported as refunded (``RefundAmount``), worth T - R; nothing when
  earlier refunds already cover T;
* the order moved to ``ORDER_STATUS_CANCELLED``: a Cancelled Order worth T - R.

Each reversal carries ``ReversedBefore`` (R). Which event takes the order id as unique_id
(and so reduces lifetime value in Klaviyo) is decided by the callers
(``django_klaviyo.orders.mappers``, ``django_klaviyo.orders.refunds``): the first of each
metric.

Where it is read from: the outbox rows of the order (dedupe keys
``event:<app>.<model>:<pk>:...``) whose metric is Cancelled or Refunded Order, in any
status. Pending and retrying rows will be sent; a dead row is shown in the admin and can be
requeued, so its amount counts rather than being reported a second time by a later event.
``klaviyo_purge`` keeps these rows (``ledger_rows``), however old: they are the ledger.

Concurrency: ``read()`` first locks the order's row in the caller's transaction
(``SELECT ... FOR NO KEY UPDATE`` on PostgreSQL, which a store's insert of a refund row
referencing the order does not conflict with), so a second transaction reversing the same
order waits for the first to commit and then sees its row. Outside a transaction there is
nothing to hold a lock in: ``order_refunded()`` opens one, and the save receiver runs in
the store's save (whose UPDATE of the order row holds the same lock when the store saves in
a transaction).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Q

from django_klaviyo.orders import fields as mapping

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def cents(value: Any) -> Decimal | None:
    """``value`` as a Decimal rounded half-up to cents, as money is sent (None: unknown)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        return None


@dataclass(frozen=True)
class Ledger:
    """One order's reversals as the outbox holds them."""

    total: Decimal | None  # the order total (None: not mapped)
    refunded: Decimal  # the values of its Refunded Order rows
    cancelled: Decimal  # the value of its Cancelled Order row
    refunds: int  # how many Refunded Order rows: 0 means the next one is the first

    @property
    def reversed(self) -> Decimal:
        """What Klaviyo was told is cancelled or refunded."""
        return self.refunded + self.cancelled

    @property
    def left(self) -> Decimal | None:
        """What may still be reversed (None when the total is not mapped)."""
        if self.total is None:
            return None
        return max(self.total - self.reversed, ZERO)

    def cap(self, amount: Decimal | None) -> Decimal | None:
        """``amount``, or what is left when that is less."""
        left = self.left
        if amount is None or left is None:
            return amount
        return min(amount, left)


def ledger_rows() -> Q:
    """The outbox rows the ledger reads, for every order: order events (dedupe keys
    ``event:...``) whose metric is Cancelled or Refunded Order. ``klaviyo_purge`` keeps
    them, so an old reversal still counts (one small row per refund or cancellation)."""
    from django_klaviyo.models import OutboxEvent

    return Q(
        kind=OutboxEvent.Kind.EVENT,
        dedupe_key__startswith="event:",
        metric__in=(mapping.metric("refunded_order"), mapping.metric("cancelled_order")),
    )


def read(order: Any, *, using: str | None = None) -> Ledger:
    """The ledger of ``order``, read after locking the order's row (see the module doc)."""
    # Here, not at the top: a store's module wrapping the mapper may be imported before
    # Django's app registry is ready.
    from django_klaviyo.models import OutboxEvent

    alias = using or order._state.db or DEFAULT_DB_ALIAS
    lock(order, alias)
    refunded_metric = mapping.metric("refunded_order")
    cancelled_metric = mapping.metric("cancelled_order")
    rows = (
        OutboxEvent.objects.using(alias)
        .filter(
            kind=OutboxEvent.Kind.EVENT,
            dedupe_key__startswith=f"event:{order._meta.label_lower}:{order.pk}:",
            metric__in=(refunded_metric, cancelled_metric),
        )
        .values_list("metric", "payload__value")
    )
    refunded, cancelled, refunds = ZERO, ZERO, 0
    for metric, value in rows:
        amount = abs(cents(value) or ZERO)
        if metric == refunded_metric:
            refunded += amount
            refunds += 1
        else:
            cancelled += amount
    total = cents(mapping.resolve(order, mapping.mapping("ORDER_FIELDS")["total"]))
    return Ledger(
        total=None if total is None else abs(total),
        refunded=refunded,
        cancelled=cancelled,
        refunds=refunds,
    )


def lock(order: Any, alias: str) -> None:
    """Lock the order's row until the caller's transaction ends (nothing outside one)."""
    connection = connections[alias]
    if order.pk is None or not connection.in_atomic_block:
        return
    rows = type(order)._base_manager.using(alias).filter(pk=order.pk)
    # FOR NO KEY UPDATE where the database has it: a store's transaction that inserted a
    # row referencing the order (its refund) holds FOR KEY SHARE, which FOR UPDATE would
    # wait for, deadlocking two such transactions.
    no_key = connection.features.has_select_for_no_key_update
    list(rows.select_for_update(no_key=no_key).values_list("pk", flat=True))


def refunded_amounts(
    model: Any, pks: list[Any], profile_keys: list[str], *, using: str
) -> dict[str, Decimal]:
    """What the Refunded Order rows of each order of ``model`` in ``pks`` say was refunded,
    by primary key as text. Rows are found through their profile keys (an indexed
    column; the customer's external id and email), then matched to the orders by dedupe
    key. No lock: the order stats read it."""
    from django_klaviyo.models import OutboxEvent

    wanted = {str(pk) for pk in pks}
    prefix = f"event:{model._meta.label_lower}:"
    rows = OutboxEvent.objects.using(using).filter(
        profile_key__in=profile_keys,
        kind=OutboxEvent.Kind.EVENT,
        metric=mapping.metric("refunded_order"),
    )
    found: dict[str, Decimal] = {}
    for key, value in rows.values_list("dedupe_key", "payload__value"):
        if not key or not key.startswith(prefix):
            continue
        pk = key[len(prefix) :].split(":", 1)[0]
        if pk in wanted:
            found[pk] = found.get(pk, ZERO) + abs(cents(value) or ZERO)
    return found
