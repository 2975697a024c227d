"""A saved object's status transition: the value loaded (``post_init``) against the value
saved (``post_save``). Shared by the order receivers (``django_klaviyo.orders.receivers``)
and the tracked models' (``django_klaviyo.tracking.receivers``).

The loaded value is kept in the instance's ``__dict__`` under a slot name of the caller's
choosing; a deferred field is "unknown", and the fixed dedupe keys keep a re-sent event out.
"""

from __future__ import annotations

from typing import Any

UNKNOWN = object()


def remember(instance: Any, attname: str, slot: str) -> None:
    """``post_init``: remember the loaded value of ``attname`` (unknown when deferred)."""
    instance.__dict__[slot] = instance.__dict__.get(attname, UNKNOWN)


def transition(
    instance: Any,
    attname: str,
    slot: str,
    *,
    created: bool,
    update_fields: Any = None,
    name: str | None = None,
) -> tuple[bool, Any]:
    """``post_save``: whether this save moved ``attname`` (a creation always does), and the
    value it had before (None when unknown). The saved value becomes the remembered one,
    so the next save of the same instance compares against it. ``name``: the field's name
    when it differs from ``attname`` (a foreign key), as ``update_fields`` may give it."""
    previous = instance.__dict__.get(slot, UNKNOWN)
    current = instance.__dict__.get(attname, UNKNOWN)
    instance.__dict__[slot] = current
    left_out = update_fields is not None and not ({attname, name or attname} & update_fields)
    moved = created or not (previous == current or left_out)
    return moved, None if previous is UNKNOWN else previous
