"""One way from an order to its outbox rows, shared by the save receiver, the
``ORDER_PLACED_SIGNAL`` receiver and ``django_klaviyo.order_placed()``: the same mapper
(``ORDER_EVENTS_MAPPER``), the same dedupe keys, the same guard against empty orders.

A Placed Order mapped with no value or no items is not sent as an empty event: its row is
stored dead, with the reason in ``last_error_detail`` (visible in the admin), so a wrong
mapping shows on the first order instead of silently feeding Klaviyo empty events.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError
from django.utils import timezone
from django.utils.module_loading import import_string

from django_klaviyo import accounts
from django_klaviyo.conf import DEFAULTS, klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import fields as mapping
from django_klaviyo.orders import mappers as ecommerce
from django_klaviyo.outbox import build_events, enqueue_many, enqueue_rows

logger = logging.getLogger(__name__)

EMPTY_ORDER_CODE = "empty_placed_order"


def order_mapper() -> tuple[Callable[..., Any], bool]:
    """The configured ORDER_EVENTS_MAPPER, and whether it is the package's own."""
    configured = klaviyo_settings.get("ORDER_EVENTS_MAPPER")
    default = ecommerce.default_order_events
    if configured == DEFAULTS["ORDER_EVENTS_MAPPER"] or configured is default:
        return default, True
    return klaviyo_settings.callable("ORDER_EVENTS_MAPPER"), False


def placed_order_specs(order: Any) -> list[dict[str, Any]]:
    """The Placed Order specs of ``order`` from ORDER_EVENTS_MAPPER, whatever its status
    transition: the default mapper builds them directly; a custom one is asked for the
    order's current state and its Placed Order kept."""
    mapper, own = order_mapper()
    if own:
        return ecommerce.placed_order_events(order)
    placed = mapping.metric("placed_order")
    specs = [
        spec
        for spec in (mapper(order, None, False) or [])
        if isinstance(spec, Mapping) and spec.get("metric") == placed
    ]
    if not specs:
        raise KlaviyoValidationError(
            f"ORDER_EVENTS_MAPPER returned no {placed!r} event for this order; a custom "
            "mapper must return it for a placed order whose previous status is None.",
            field="order",
        )
    return specs


def enqueue_order_events(
    specs: list[dict[str, Any]],
    order: Any,
    *,
    using: str | None,
    backfill: bool = False,
    objects: bool = True,
    account: str | None = None,
) -> list[OutboxEvent]:
    """Clean ``specs`` with the event rules and enqueue them; an empty Placed Order
    becomes a dead row naming what is missing. ``objects``: return the rows written (the
    save receiver's hot path needs none). ``account``: the Klaviyo account (None: what
    ACCOUNT_RESOLVER says of ``order``)."""
    stored = accounts.account_for(order, account=account)
    if backfill:
        specs = [{**spec, "backfill": True} for spec in specs]
    build = build_events
    empty = [(spec, ecommerce.empty_placed_order(spec)) for spec in specs]
    good = [spec for spec, reason in empty if reason is None]
    written: list[OutboxEvent] = []
    if good:
        rows = build(good)
        if not objects:
            enqueue_rows(rows, using=using, account=stored)
        else:
            written += enqueue_many(rows, using=using, account=stored)
    for spec, reason in empty:
        if reason is not None:
            written += _enqueue_dead(build([spec]), order, reason, using=using, account=stored)
    return written


def _enqueue_dead(
    rows: list[Any], order: Any, reason: str, *, using: str | None, account: str
) -> list[Any]:
    logger.error(
        "django-klaviyo: %s %s: %s The row is stored dead instead of sent.",
        order._meta.label,
        order.pk,
        reason,
    )
    start = timezone.now()
    written = enqueue_many(rows, using=using, account=account)
    # Only rows this call inserted: a row already holding the dedupe key (an earlier,
    # complete Placed Order) is returned too, and must stay as it is.
    OutboxEvent.objects.using(using or DEFAULT_DB_ALIAS).filter(
        pk__in=[row.pk for row in written], created_at__gte=start
    ).update(
        status=OutboxEvent.Status.DEAD,
        last_error_code=EMPTY_ORDER_CODE,
        last_error_detail=f"{order._meta.label} {order.pk}: {reason}",
    )
    return written


def order_placed(
    order: Any,
    *,
    using: str | None = None,
    backfill: bool = False,
    account: str | None = None,
) -> list[Any]:
    """Enqueue ``order``'s Placed Order (with its Ordered Products); see api.order_placed."""
    return enqueue_order_events(
        placed_order_specs(order),
        order,
        using=using or order._state.db or DEFAULT_DB_ALIAS,
        backfill=backfill,
        account=account,
    )


# --- ORDER_PLACED_SIGNAL --------------------------------------------------------------


def connect_placed_signal() -> None:
    """Connect ``ORDER_PLACED_SIGNAL`` (a Signal or its dotted path) when set."""
    signal = klaviyo_settings.get("ORDER_PLACED_SIGNAL")
    if not signal:
        return
    if isinstance(signal, str):
        try:
            signal = import_string(signal)
        except ImportError:
            return  # reported by the django_klaviyo.E035 check
    connect = getattr(signal, "connect", None)
    if callable(connect):
        connect(_on_order_placed, weak=False, dispatch_uid="django_klaviyo_order_placed")


def _on_order_placed(sender: Any, order: Any = None, **kwargs: Any) -> None:
    """The store's "order placed" signal: enqueue the Placed Order in the sender's
    transaction. Like the save receiver, it never breaks the store's checkout for
    marketing data (see django_klaviyo.orders.receivers)."""
    if order is None or not klaviyo_settings.ENABLED:
        return
    try:
        order_placed(order)
    except KlaviyoValidationError as exc:
        if exc.field == "account":
            # No Klaviyo account for this order: kept dead with the reason, checkout goes on.
            from django_klaviyo.outbox.refused import record_refused, source_label

            source = source_label(order)
            record_refused(OutboxEvent.Kind.EVENT, {"order": source}, exc, source=source)
            return
        logger.warning(
            "django-klaviyo: order %s was not sent: %s (field %s).", order.pk, exc, exc.field
        )
    except DatabaseError:
        raise
    except Exception:
        if settings.DEBUG:
            raise
        logger.exception("django-klaviyo: mapping order %s failed; not sent.", order.pk)
