"""Orders created in their final status: the register of Placed Orders awaiting lines.

A checkout that creates its order directly in the placed status
(``Order.objects.create(status="PROCESSING")``) saves the lines after the order's first
``post_save``, so the Placed Order built then has no items. Its row is written dead
(``empty_placed_order``, the reason on the row) in that same transaction, and this module
remembers the order and that row for the rest of the transaction. Each later save of one
of its lines (the model reached by ``ORDER_FIELDS["lines"]``), and each further save of
the order, rebuilds the Placed Order from the order and replaces the row
(``django_klaviyo.orders.receivers``), so the transaction commits one full Placed Order:
all lines, the order's total. No ``on_commit`` hook writes anything.

Only what happens inside one ``transaction.atomic()`` is registered: in autocommit mode
the dead row is already committed, and ``django_klaviyo.order_placed(order)`` (or the
``ORDER_PLACED_SIGNAL``) replaces it once the lines exist. Lines written without
``post_save`` (``bulk_create``, raw SQL) leave the dead row and its reason the same way.

The register lives on the database connection (one per thread), keyed by the order's
model label and primary key, and holds the order instance and the id of its row. A
stale entry (its transaction rolled back) is harmless: the row it names is gone, so the
next line save finds nothing to replace and drops the entry.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from django.db import DEFAULT_DB_ALIAS, connections, transaction

ATTRIBUTE = "_django_klaviyo_awaiting_lines"


class Awaiting(NamedTuple):
    order: Any
    row_id: Any


def _register(alias: str) -> dict[tuple[str, Any], Awaiting]:
    connection = connections[alias]
    register = connection.__dict__.get(ATTRIBUTE)
    if register is None:
        register = connection.__dict__[ATTRIBUTE] = {}
    return register


def expect_lines(order: Any, row_id: Any, using: str | None) -> bool:
    """Remember that ``order``'s Placed Order row ``row_id`` awaits its lines, when inside
    a transaction; returns whether it was registered."""
    alias = using or DEFAULT_DB_ALIAS
    connection = connections[alias]
    register = _register(alias)
    if not connection.in_atomic_block:
        register.clear()  # every transaction that registered has ended
        return False
    key = (order._meta.label_lower, order.pk)
    register[key] = Awaiting(order, row_id)
    transaction.on_commit(lambda: register.pop(key, None), using=alias)
    return True


def awaiting(label: str, pk: Any, using: str | None) -> Awaiting | None:
    """The order (model label, primary key) whose Placed Order awaits lines, if any."""
    register = connections[using or DEFAULT_DB_ALIAS].__dict__.get(ATTRIBUTE)
    if not register:
        return None
    return register.get((label, pk))


def any_awaiting(using: str | None) -> bool:
    """Whether any order awaits its lines on this connection (the line receiver's
    fast exit)."""
    return bool(connections[using or DEFAULT_DB_ALIAS].__dict__.get(ATTRIBUTE))


def forget(order: Any, using: str | None) -> None:
    register = connections[using or DEFAULT_DB_ALIAS].__dict__.get(ATTRIBUTE)
    if register:
        register.pop((order._meta.label_lower, order.pk), None)
