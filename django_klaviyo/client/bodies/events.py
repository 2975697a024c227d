"""Event bodies: ``POST /api/events`` (create_event) and ``POST /api/event-bulk-create-jobs``.

Built from clean values: ``rules.event_requests`` cleans a client call's events, and
outbox rows were cleaned by ``rules.events`` when written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits
from django_klaviyo.rules.identifiers import profile_key


def _metric(name: str) -> dict[str, Any]:
    return {"data": {"type": "metric", "attributes": {"name": name}}}


def build_event(event: Mapping[str, Any], profile: Mapping[str, Any]) -> dict[str, Any]:
    """``POST /api/events`` from a clean event (``rules.event_requests.clean_request_event``)
    and its clean profile (``rules.profiles.clean_event_profile``). The profile's ``id``
    becomes the resource's id; its ``meta`` stays in the attributes, where create_event
    nests it."""
    attributes = dict(profile)
    profile_id, meta = attributes.pop("id", None), attributes.pop("meta", None)
    resource: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if profile_id:
        resource["id"] = profile_id
    if meta:
        attributes["meta"] = meta
    built = dict(event)
    built["metric"] = _metric(built["metric"])
    built["profile"] = {"data": resource}
    return {"data": {"type": "event", "attributes": built}}


def _count_bulk_events(total: int, more: int) -> int:
    """Running event count of one bulk request, refused past Klaviyo's limit."""
    total += more
    if total > limits.EVENTS_PER_REQUEST:
        raise KlaviyoValidationError(
            f"The request holds more than {limits.EVENTS_PER_REQUEST} events; Klaviyo "
            f"accepts at most {limits.EVENTS_PER_REQUEST} per bulk request.",
            field="entries",
        )
    return total


def _repeated(where: str, unique_id: str) -> KlaviyoValidationError:
    """Klaviyo rejects a whole bulk request that repeats (profile, metric, unique_id)."""
    return KlaviyoValidationError(
        f"{where}.unique_id {unique_id!r} repeats an event of the same profile and metric "
        "in this request; Klaviyo would reject the whole request.",
        field=f"{where}.unique_id",
    )


def _bulk_events_job(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": entries}},
        }
    }


def assemble_bulk_events(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``POST /api/event-bulk-create-jobs`` from clean entries: ``[{"profile": {...},
    "events": [{"metric", "properties", "time", "value", "value_currency", "unique_id",
    "backfill"}, ...]}, ...]`` (``rules.event_requests.clean_event_entries``, or outbox
    rows, cleaned when written).

    Only wraps the dicts in JSON:API: profiles must hold cleaned identifiers and Klaviyo
    profile attributes (an ``id``/``meta`` key is moved beside the attributes), events
    ISO-8601 times. The checks that guard a whole request stay, as they are cheap: at most
    1000 events, no empty entry, no (profile, metric, unique_id) twice (Klaviyo would fail
    the whole request). The 5 MB limit is checked on the encoded body by the client.
    """
    built: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    # One metric object per name, shared by its events: fewer objects to allocate (and
    # for the garbage collector to scan) per event; it encodes the same.
    metrics: dict[str, dict[str, Any]] = {}
    total = 0
    for i, entry in enumerate(entries):
        profile = entry["profile"]
        events = entry["events"]
        if not events:
            raise KlaviyoValidationError(
                f"entries[{i}].events is empty; each entry needs at least one event.",
                field=f"entries[{i}].events",
            )
        total = _count_bulk_events(total, len(events))
        identity = profile_key(profile)
        resource: dict[str, Any] = {"type": "profile", "attributes": profile}
        if "id" in profile or "meta" in profile:
            attributes = dict(profile)
            profile_id = attributes.pop("id", None)
            meta = attributes.pop("meta", None)
            resource["attributes"] = attributes
            if profile_id:
                resource["id"] = str(profile_id)
            if meta:
                resource["meta"] = meta
        built_events = []
        for j, event in enumerate(events):
            metric = event["metric"]
            metric_object = metrics.get(metric)
            if metric_object is None:
                metric_object = _metric(metric)
                metrics[metric] = metric_object
            attributes = {"properties": event.get("properties") or {}, "metric": metric_object}
            # Spelled out rather than looped: this runs for every event of every flush.
            if (time := event.get("time")) is not None:
                attributes["time"] = time
            if (value := event.get("value")) is not None:
                attributes["value"] = value
            if (currency := event.get("value_currency")) is not None:
                attributes["value_currency"] = currency
            unique = event.get("unique_id")
            if unique:
                attributes["unique_id"] = unique
                key = (identity, metric, unique)
                if key in seen:  # the field path is only spelled out for the error
                    raise _repeated(f"entries[{i}].events[{j}]", unique)
                seen.add(key)
            if event.get("backfill") is True:
                attributes["backfill"] = True
            built_events.append({"type": "event", "attributes": attributes})
        built.append(
            {
                "type": "event-bulk-create",
                "attributes": {"profile": {"data": resource}, "events": {"data": built_events}},
            }
        )
    return _bulk_events_job(built)
