"""Save receivers of the ORDER_MODEL: store changes to orders become outbox rows.

``connect()`` (called from ``AppConfig.ready``) connects:

* the ORDER_MODEL (``KLAVIYO["ORDER_MODEL"] = "app_label.Model"``; nothing when unset or
  not installed, which the system checks report): ``post_init`` remembers the loaded
  status, ``post_save`` asks ORDER_EVENTS_MAPPER for events when the status changed
  (or the order was created) and enqueues them in one INSERT;
* the ORDER_MODEL's lines (the model of ``ORDER_FIELDS["lines"]``, a reverse foreign
  key): ``post_save`` completes the Placed Order of an order created in its placed status
  earlier in the same transaction (``django_klaviyo.orders.pending``); a further save of
  such an order does the same;
* ``ORDER_PLACED_SIGNAL`` (a store's "order placed" signal, sent after the lines exist):
  enqueues the Placed Order through ``django_klaviyo.orders.placement``, as
  ``order_placed()`` does.

Failure policy (shared with the user receivers, ``django_klaviyo.profiles.receivers``;
``django_klaviyo.outbox.refused.run_mapper``): the store's save must not depend on
Klaviyo, and nothing is dropped. What a mapper or the rulebook refuses
(``KlaviyoValidationError``: bad email, bad currency, nesting too deep) is kept as a dead
outbox row with the reason (``django_klaviyo.outbox.refused``), and the valid events of
the same save are enqueued as usual. Any other mapper error is re-raised when
``settings.DEBUG`` is on (so developers see it) and otherwise logged with its traceback and
kept as a dead row too. Database errors while writing the outbox row are NOT swallowed:
the row is part of the store's transaction, and committing the order without it would
silently lose the event.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.db.models.signals import post_init, post_save

from django_klaviyo.conf import klaviyo_settings, resolve_model
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import fields as mapping
from django_klaviyo.orders import pending, placement
from django_klaviyo.outbox import transitions
from django_klaviyo.outbox.refused import keep_refused_specs, raise_or_log, run_mapper

logger = logging.getLogger(__name__)

STATUS_SNAPSHOT = "_klaviyo_loaded_status"


def connect() -> None:
    """Connect the order receivers; safe to call more than once."""
    try:
        order_model = resolve_model(klaviyo_settings.get("ORDER_MODEL", None))
    except ImproperlyConfigured:
        return  # KLAVIYO is not a dict: `check` reports django_klaviyo.E010, no traceback
    placement.connect_placed_signal()
    if order_model is not None:
        post_init.connect(
            _order_post_init, sender=order_model, dispatch_uid="django_klaviyo_order_init"
        )
        post_save.connect(
            _order_post_save, sender=order_model, dispatch_uid="django_klaviyo_order_save"
        )
        link = mapping.line_link(order_model)
        if link is not None:
            post_save.connect(_line_post_save, sender=link[0], dispatch_uid=LINE_SAVE_UID)


LINE_SAVE_UID = "django_klaviyo_order_line_save"


def _order_post_init(sender: Any, instance: Any, **kwargs: Any) -> None:
    # Deferred status: unknown; the fixed dedupe keys keep a re-sent event out.
    transitions.remember(instance, klaviyo_settings.ORDER_STATUS_FIELD, STATUS_SNAPSHOT)


def _order_post_save(
    sender: Any,
    instance: Any,
    created: bool,
    raw: bool = False,
    using: str | None = None,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    moved, previous = transitions.transition(
        instance,
        klaviyo_settings.ORDER_STATUS_FIELD,
        STATUS_SNAPSHOT,
        created=created,
        update_fields=update_fields,
    )
    if raw or not klaviyo_settings.ENABLED:
        return
    if not moved:
        entry = pending.awaiting(instance._meta.label_lower, instance.pk, using)
        if entry is not None:
            # An order awaiting its lines got its total (or more) before the commit.
            _complete(pending.Awaiting(instance, entry.row_id), using)
        return
    # One mapper and one enqueue path with order_placed() and ORDER_PLACED_SIGNAL.
    try:
        mapper, own = placement.order_mapper()
    except ImproperlyConfigured:
        mapper, own = None, False  # run_mapper applies the failure policy
    if own and not mapping.maps_status(
        getattr(instance, klaviyo_settings.ORDER_STATUS_FIELD, None)
    ):
        return  # a status the default mapper sends nothing for (a new, pending order)
    specs = run_mapper(
        "ORDER_EVENTS_MAPPER",
        instance,
        previous,
        created,
        mapper=mapper,
        kind=OutboxEvent.Kind.EVENT,
        using=using,
    )
    if specs:
        enqueue_or_keep_refused(specs, instance, using=using)


def enqueue_or_keep_refused(specs: list[dict[str, Any]], order: Any, *, using: str | None) -> None:
    """Enqueue ``specs`` (``placement.enqueue_order_events``) for the order's Klaviyo account;
    if any is refused (or no account can be named), each valid one is enqueued and each
    refused one kept as a dead row (``django_klaviyo.outbox.refused.keep_refused_specs``)."""
    keep_refused_specs(
        specs,
        order,
        lambda some, account: placement.enqueue_order_events(
            some, order, using=using, objects=False, account=account
        ),
        using=using,
    )


def _line_post_save(
    sender: Any, instance: Any, raw: bool = False, using: str | None = None, **kwargs: Any
) -> None:
    """A line saved: when its order awaits its lines in this transaction, the order's
    Placed Order row is rebuilt with every line saved so far."""
    if raw or not pending.any_awaiting(using):
        return
    order_model = resolve_model(klaviyo_settings.get("ORDER_MODEL", None))
    link = mapping.line_link(order_model) if order_model is not None else None
    if link is None or link[0] is not sender:
        return
    entry = pending.awaiting(order_model._meta.label_lower, getattr(instance, link[1]), using)
    if entry is not None and klaviyo_settings.ENABLED:
        # A line changes no order total: the stats written with the order stand.
        _complete(entry, using, stats=False)


def _complete(entry: pending.Awaiting, using: str | None, *, stats: bool = True) -> None:
    """``placement.complete_awaiting`` under the save receivers' failure policy."""
    try:
        placement.complete_awaiting(entry, using=using, stats=stats)
    except DatabaseError:
        raise
    except Exception as exc:
        if not isinstance(exc, KlaviyoValidationError):
            raise_or_log(exc, logger, "django-klaviyo: completing order %s failed.", entry.order.pk)
        placement.keep_refused(entry.order, exc, using)
