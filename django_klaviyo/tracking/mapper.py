"""The default mapper of tracked models, and the profile mirror.

Events (``default_tracked_events(instance, previous_status, created) -> list[dict]``)
    An object entering a status its entry's ``metrics`` names (a status change, or a
    creation in that status) becomes one event spec (the keys of
    ``django_klaviyo.outbox.build_events``):

    * ``metric``: the status's metric name; ``profile``: the entry's ``profile`` paths;
    * ``properties``: the entry's ``properties`` paths (a value read as None is left out);
    * ``value`` (rounded to cents, e.g. MRR) and ``value_currency`` when mapped;
    * ``time``: the ``time`` path, else the save's time;
    * ``unique_id``: ``"<app_label.model>:<pk>:<status>"``, followed by ``":<time>"`` when
      ``time`` is mapped, and ``dedupe_key`` the same prefixed with ``"tracked:"``: each
      transition is written once whichever path sees it (a repeated save, the backfill),
      and an object entering a status again (paused, then active again) sends again when
      ``time`` moves with the status (``updated_at``); without ``time`` each status's event
      is sent once per object.

    A custom mapper (the entry's ``mapper``, a callable or its dotted path) takes the same
    arguments and returns the same specs; it may call this one and add to its result.

Profile mirror (``mirrored_profile(instance, tracked)``)
    The entry's ``profile_properties`` read on the object, as a profile upsert's profile:
    the ``profile`` identifiers with ``properties``; None when nothing is mirrored.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django_klaviyo.orders.convert import money
from django_klaviyo.orders.fields import resolve
from django_klaviyo.rules.values import utc_iso
from django_klaviyo.tracking import config
from django_klaviyo.tracking.config import Tracked

__all__ = ["default_tracked_events"]


def default_tracked_events(
    instance: Any, previous_status: Any, created: bool
) -> list[dict[str, Any]]:
    """The event of ``instance`` entering its current status (see the module docs)."""
    tracked = config.tracked(type(instance))
    if tracked is None:
        return []
    status = getattr(instance, tracked.status_attname, None)
    if not created and previous_status is not None and str(status) == str(previous_status):
        return []
    if tracked.metric(status) is None:
        return []
    return [tracked_event(instance, tracked, status)]


def tracked_event(instance: Any, tracked: Tracked, status: Any) -> dict[str, Any]:
    """The event spec of ``instance`` in ``status`` (a status its ``metrics`` names)."""
    time = resolve(instance, tracked.time) if tracked.time is not None else None
    ident = f"{instance._meta.label_lower}:{instance.pk}:{status}"
    if time is not None:
        ident += f":{_stamp(time)}"
    properties = {
        name: value
        for name, path in tracked.properties.items()
        if (value := resolve(instance, path)) is not None
    }
    currency = resolve(instance, tracked.value_currency)
    return {
        "metric": tracked.metric(status),
        "profile": tracked_profile(instance, tracked),
        "properties": properties,
        "value": money(resolve(instance, tracked.value)),
        "value_currency": currency or None,
        "time": time,
        "unique_id": ident,
        "dedupe_key": f"tracked:{ident}",
    }


def _stamp(time: Any) -> str:
    return utc_iso(time) if isinstance(time, dt.datetime) else str(time)


def tracked_profile(instance: Any, tracked: Tracked) -> dict[str, Any]:
    """The profile identifiers the entry maps, as text (empty ones left out)."""
    profile = {}
    for key, path in tracked.profile.items():
        value = resolve(instance, path)
        if value not in (None, ""):
            profile[key] = str(value)
    return profile


def mirrored_profile(instance: Any, tracked: Tracked) -> dict[str, Any] | None:
    """The profile upsert mirroring the entry's ``profile_properties`` (None: none)."""
    if not tracked.profile_properties:
        return None
    properties = {
        name: value
        for name, path in tracked.profile_properties.items()
        if (value := resolve(instance, path)) is not None
    }
    return {**tracked_profile(instance, tracked), "properties": properties}
