"""The client's event requests (``create_event``, ``bulk_create_events``), cleaned by the
outbox's event rules (``rules.events``, ``rules.profiles``) with the field paths of the
request, into the flat shape ``client.bodies.events`` builds bodies from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits
from django_klaviyo.rules.events import clean_currency, clean_metric, clean_properties
from django_klaviyo.rules.profiles import clean_event_profile
from django_klaviyo.rules.shapes import batch, located, mapping, unknown_keys
from django_klaviyo.rules.values import iso_time, key, number

# What one event of a request may carry.
EVENT_KEYS = frozenset(
    {"metric", "properties", "time", "value", "value_currency", "unique_id", "backfill"}
)
ENTRY_KEYS = ("profile", "events")


def clean_request_event(event: Mapping[str, Any], field: str = "event") -> dict[str, Any]:
    """``{"metric": name, "properties", "time"?, "value"?, "value_currency"?,
    "unique_id"?, "backfill"?}``: what is absent (or false, for backfill) is left out."""
    properties = clean_properties(event.get("properties"), f"{field}.properties")
    cleaned: dict[str, Any] = {
        "metric": clean_metric(event.get("metric"), f"{field}.metric"),
        "properties": properties,
    }
    time = event.get("time")
    unique_id = event.get("unique_id")
    if isinstance(unique_id, int) and not isinstance(unique_id, bool):
        unique_id = str(unique_id)
    optional = {
        "time": None if time is None else iso_time(time, f"{field}.time"),
        "value": number(event.get("value"), f"{field}.value"),
        "value_currency": _currency(event.get("value_currency"), f"{field}.value_currency"),
        "unique_id": None if unique_id in (None, "") else key(unique_id, f"{field}.unique_id"),
    }
    cleaned.update({k: v for k, v in optional.items() if v is not None})
    backfill = event.get("backfill")
    if backfill is not None and not isinstance(backfill, bool):
        raise KlaviyoValidationError(
            f"{field}.backfill must be true or false.", field=f"{field}.backfill"
        )
    if backfill:
        cleaned["backfill"] = True
    return cleaned


def _currency(value: Any, field: str) -> str | None:
    """The outbox's currency rule (a 3-letter ISO 4217 code), named as in this request."""
    try:
        return clean_currency(value)
    except KlaviyoValidationError as exc:
        raise KlaviyoValidationError(str(exc), field=field) from None


def clean_event_entries(entries: Any) -> list[dict[str, Any]]:
    """``[{"profile": {...}, "events": [{...}, ...]}, ...]`` of a bulk request, each
    profile as ``clean_event_profile`` and each event as ``clean_request_event``. What
    guards the whole request (1000 events, no empty entry, no repeated unique id) is
    checked as the body is assembled (``client.bodies.events.assemble_bulk_events``)."""
    cleaned = []
    for i, entry in enumerate(batch(entries, "entries", limits.EVENTS_PER_REQUEST)):
        field = f"entries[{i}]"
        entry = mapping(entry, field)
        unknown_keys(entry, ENTRY_KEYS, field, "an entry key (expected profile and events)")
        with located(f"{field}.profile"):
            profile = clean_event_profile(entry.get("profile"), f"{field}.profile")
        events = []
        for j, event in enumerate(
            batch(entry.get("events"), f"{field}.events", limits.EVENTS_PER_REQUEST)
        ):
            where = f"{field}.events[{j}]"
            event = mapping(event, where)
            unknown_keys(event, EVENT_KEYS, where, "an event field")
            events.append(clean_request_event(event, where))
        cleaned.append({"profile": profile, "events": events})
    return cleaned
