"""Klaviyo JSON:API request bodies (revision 2026-07-15). No HTTP here, and no rules.

Each ``*_body`` function takes a client call's input, cleans it with the rules of its
kind (``django_klaviyo.rules``: the same cleaners that check outbox rows, raising
``KlaviyoValidationError`` naming the field), then builds the body from the clean values
with its ``build_*`` function. The flusher calls only the builders (and
``assemble_bulk_events``): outbox rows were cleaned when they were written. The
shapes follow the request schemas of the OpenAPI spec; ``tests/client/test_payloads_spec.py``
checks each one against it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits
from django_klaviyo.rules.consent import clean_consent_request, clean_custom_source
from django_klaviyo.rules.event_requests import clean_event_entries, clean_request_event
from django_klaviyo.rules.identifiers import profile_key
from django_klaviyo.rules.lists import clean_list_id, clean_new_list, clean_profile_ids
from django_klaviyo.rules.profiles import (
    clean_deletion,
    clean_event_profile,
    clean_import_request,
    clean_update_request,
    clean_upsert_request,
    deletion_payload,
)
from django_klaviyo.rules.webhooks import clean_webhook

MAX_BULK_REQUEST_BYTES = limits.MAX_REQUEST_BYTES
MAX_EVENTS_PER_BULK_REQUEST = limits.EVENTS_PER_REQUEST


class _Encoder(DjangoJSONEncoder):
    """Decimals become JSON numbers (prices should stay numeric in Klaviyo)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, Decimal):
            return float(o)
        return super().default(o)


def encode(body: Any) -> bytes:
    """The exact bytes sent for ``body``; unencodable values raise a validation error."""
    try:
        text = json.dumps(body, cls=_Encoder, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise KlaviyoValidationError(
            f"The request body cannot be encoded as JSON: {exc}.", field="body"
        ) from None
    return text.encode("utf-8")


def ensure_size(encoded: bytes, limit: int, what: str) -> None:
    if len(encoded) > limit:
        raise KlaviyoValidationError(
            f"{what} is {len(encoded)} bytes encoded; Klaviyo accepts at most {limit} bytes "
            "per request. Send fewer items per request.",
            field="body",
        )


# -- events -----------------------------------------------------------------------------


def _metric(name: str) -> dict[str, Any]:
    return {"data": {"type": "metric", "attributes": {"name": name}}}


def event_body(
    *,
    metric: str,
    profile: Mapping[str, Any],
    properties: Mapping[str, Any] | None = None,
    time: datetime | str | None = None,
    value: float | Decimal | None = None,
    value_currency: str | None = None,
    unique_id: str | None = None,
    backfill: bool = False,
) -> dict[str, Any]:
    """Body of ``POST /api/events`` (create_event); ``backfill``: record without
    triggering flows."""
    event = clean_request_event(
        {
            "backfill": backfill,
            "metric": metric,
            "properties": properties,
            "time": time,
            "value": value,
            "value_currency": value_currency,
            "unique_id": unique_id,
        }
    )
    attributes = clean_event_profile(profile)
    profile_id, meta = attributes.pop("id", None), attributes.pop("meta", None)
    resource: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if profile_id:
        resource["id"] = profile_id
    if meta:
        attributes["meta"] = meta  # create_event nests meta in the attributes
    event["metric"] = _metric(event["metric"])
    event["profile"] = {"data": resource}
    return {"data": {"type": "event", "attributes": event}}


def bulk_events_body(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Body of ``POST /api/event-bulk-create-jobs``.

    ``entries`` = ``[{"profile": {...}, "events": [{"metric", "properties", "time",
    "value", "value_currency", "unique_id"}, ...]}, ...]``. At most 1000 events in all,
    and no (profile, metric, unique_id) twice: Klaviyo would fail the whole request.
    """
    return assemble_bulk_events(clean_event_entries(entries))


def _count_bulk_events(total: int, more: int) -> int:
    """Running event count of one bulk request, refused past Klaviyo's limit."""
    total += more
    if total > MAX_EVENTS_PER_BULK_REQUEST:
        raise KlaviyoValidationError(
            f"The request holds more than {MAX_EVENTS_PER_BULK_REQUEST} events; Klaviyo "
            f"accepts at most {MAX_EVENTS_PER_BULK_REQUEST} per bulk request.",
            field="entries",
        )
    return total


def _remember_unique(
    seen: set[tuple[str, str, str]], key: tuple[str, str, str], where: str
) -> None:
    """Klaviyo rejects a whole bulk request that repeats (profile, metric, unique_id)."""
    if key in seen:
        raise KlaviyoValidationError(
            f"{where}.unique_id {key[2]!r} repeats an event of the same profile and metric "
            "in this request; Klaviyo would reject the whole request.",
            field=f"{where}.unique_id",
        )
    seen.add(key)


def _bulk_events_job(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {"events-bulk-create": {"data": entries}},
        }
    }


def assemble_bulk_events(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The body of ``bulk_events_body`` for entries already cleaned by the rules
    (``django_klaviyo.rules``): outbox rows, which were cleaned when written.

    Only wraps the dicts in JSON:API: profiles must hold cleaned identifiers and Klaviyo
    profile attributes (an ``id``/``meta`` key is moved beside the attributes), events the
    keys of ``EVENT_KEYS`` with ISO-8601 times. The checks that guard a whole request stay,
    as they are cheap: at most 1000 events, no empty entry, no (profile, metric, unique_id)
    twice. The 5 MB limit is checked on the encoded body by the client.
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
                metric_object = {"data": {"type": "metric", "attributes": {"name": metric}}}
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
                _remember_unique(seen, (identity, metric, unique), f"entries[{i}].events[{j}]")
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


# -- profiles ---------------------------------------------------------------------------


def build_profile(
    attributes: Mapping[str, Any],
    *,
    profile_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A profile resource from clean values (``profile-import``, bulk imports)."""
    data: dict[str, Any] = {"type": "profile", "attributes": dict(attributes)}
    if profile_id:
        data["id"] = profile_id
    if meta:
        data["meta"] = dict(meta)
    return data


def build_profile_import(
    attributes: Mapping[str, Any],
    *,
    profile_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``POST /api/profile-import`` from clean values."""
    return {"data": build_profile(attributes, profile_id=profile_id, meta=meta)}


def profile_upsert_body(
    attributes: Mapping[str, Any], *, profile_id: str | None = None
) -> dict[str, Any]:
    """Body of ``POST /api/profile-import``; an ``id`` key in ``attributes`` counts as
    ``profile_id``, a ``meta`` key becomes the resource's meta (patch_properties)."""
    profile_id, meta, cleaned = clean_upsert_request(attributes, profile_id)
    return build_profile_import(cleaned, profile_id=profile_id, meta=meta)


def build_profile_update(
    profile_id: str, attributes: Mapping[str, Any], meta: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``PATCH /api/profiles/{id}`` from clean values, keeping only the attributes a
    PATCH takes (``limits.UPDATE_PROFILE_ATTRIBUTES``: no ``_kx``). ``data.id`` repeats
    the path id, as required."""
    kept = {k: v for k, v in attributes.items() if k in limits.UPDATE_PROFILE_ATTRIBUTES}
    data: dict[str, Any] = {"type": "profile", "id": profile_id, "attributes": kept}
    if meta is not None:
        data["meta"] = dict(meta)
    return {"data": data}


def profile_update_body(profile_id: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Body of ``PATCH /api/profiles/{id}``, cleaned (an ``_kx`` is refused)."""
    profile_id, meta, cleaned = clean_update_request(profile_id, attributes)
    return build_profile_update(profile_id, cleaned, meta)


def build_bulk_import(
    profiles: Sequence[Mapping[str, Any]], list_ids: Sequence[str] = ()
) -> dict[str, Any]:
    """A bulk import job from clean profile resources (``build_profile``)."""
    body: dict[str, Any] = {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": [dict(p) for p in profiles]}},
        }
    }
    if list_ids:
        body["data"]["relationships"] = {
            "lists": {"data": [{"type": "list", "id": x} for x in list_ids]}
        }
    return body


def bulk_import_body(
    profiles: Sequence[Mapping[str, Any]], *, list_ids: Iterable[str] = ()
) -> dict[str, Any]:
    """Body of ``POST /api/profile-bulk-import-jobs`` (at most 10,000 profiles)."""
    cleaned, ids = clean_import_request(profiles, list_ids)
    resources = [build_profile(a, profile_id=i, meta=m) for i, m, a in cleaned]
    return build_bulk_import(resources, ids)


# -- consent ----------------------------------------------------------------------------


def _consent_job(
    job_type: str,
    consent: str,
    profiles: Sequence[Mapping[str, Any]],
    list_id: str | None,
    job_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data = []
    for profile in profiles:
        marketing: dict[str, Any] = {"consent": consent}
        if profile.get("consented_at") is not None:
            marketing["consented_at"] = profile["consented_at"]
        attributes = {k: profile[k] for k in ("email", "phone_number") if k in profile}
        attributes["subscriptions"] = {
            c: {"marketing": dict(marketing)} for c in profile["channels"]
        }
        data.append({"type": "profile", "attributes": attributes})
    body: dict[str, Any] = {
        "data": {
            "type": job_type,
            "attributes": {"profiles": {"data": data}, **(job_attributes or {})},
        }
    }
    if list_id is not None:
        body["data"]["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return body


def build_subscribe(
    profiles: Sequence[Mapping[str, Any]],
    *,
    list_id: str | None = None,
    custom_source: str | None = None,
    historical_import: bool = False,
) -> dict[str, Any]:
    """A subscribe job from clean items (``rules.consent``): each ``{"email"?,
    "phone_number"?, "channels", "consented_at"?}``."""
    job_attributes: dict[str, Any] = {}
    if custom_source is not None:
        job_attributes["custom_source"] = custom_source
    if historical_import:
        job_attributes["historical_import"] = True
    return _consent_job(
        "profile-subscription-bulk-create-job", "SUBSCRIBED", profiles, list_id, job_attributes
    )


def subscribe_body(
    profiles: Sequence[Mapping[str, Any]],
    *,
    list_id: str | None = None,
    custom_source: str | None = None,
    historical_import: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Body of ``POST /api/profile-subscription-bulk-create-jobs`` (at most 1000).

    Each profile: ``{"email"?, "phone_number"?, "channels": ["email", "sms"],
    "consented_at"?}``. ``consented_at`` is required with ``historical_import`` (and must
    be in the past, checked against ``now`` when given) and refused without it, as Klaviyo does.
    """
    cleaned = clean_consent_request(
        profiles, subscribe=True, historical_import=historical_import, now=now
    )
    return build_subscribe(
        cleaned,
        list_id=None if list_id is None else clean_list_id(list_id),
        custom_source=clean_custom_source(custom_source),
        historical_import=historical_import,
    )


def build_unsubscribe(
    profiles: Sequence[Mapping[str, Any]], *, list_id: str | None = None
) -> dict[str, Any]:
    """An unsubscribe job from clean items (``rules.consent``)."""
    return _consent_job("profile-subscription-bulk-delete-job", "UNSUBSCRIBED", profiles, list_id)


def unsubscribe_body(
    profiles: Sequence[Mapping[str, Any]], *, list_id: str | None = None
) -> dict[str, Any]:
    """Body of ``POST /api/profile-subscription-bulk-delete-jobs`` (at most 100).

    Without ``list_id`` Klaviyo unsubscribes the profiles globally from the channels.
    """
    cleaned = clean_consent_request(profiles, subscribe=False)
    return build_unsubscribe(cleaned, list_id=None if list_id is None else clean_list_id(list_id))


# -- lists ------------------------------------------------------------------------------


def build_list_relationship(profile_ids: Iterable[str]) -> dict[str, Any]:
    """A list membership change from Klaviyo profile ids, each given once."""
    return {"data": [{"type": "profile", "id": x} for x in profile_ids]}


def list_relationship_body(profile_ids: Iterable[str]) -> dict[str, Any]:
    """Body of ``POST|DELETE /api/lists/{id}/relationships/profiles`` (at most 1000 ids)."""
    return build_list_relationship(clean_profile_ids(profile_ids))


def create_list_body(name: str, *, opt_in_process: str | None = None) -> dict[str, Any]:
    name, opt_in_process = clean_new_list(name, opt_in_process)
    attributes: dict[str, Any] = {"name": name}
    if opt_in_process is not None:
        attributes["opt_in_process"] = opt_in_process
    return {"data": {"type": "list", "attributes": attributes}}


# -- webhooks and privacy ---------------------------------------------------------------


def create_webhook_body(
    *,
    name: str,
    endpoint_url: str,
    secret_key: str,
    topics: Iterable[str],
    description: str | None = None,
) -> dict[str, Any]:
    """Body of ``POST /api/webhooks``. Error messages never echo ``secret_key``."""
    webhook = clean_webhook(
        name=name,
        endpoint_url=endpoint_url,
        secret_key=secret_key,
        topics=topics,
        description=description,
    )
    topic_ids = webhook.pop("topics")
    return {
        "data": {
            "type": "webhook",
            "attributes": webhook,
            "relationships": {
                "webhook-topics": {"data": [{"type": "webhook-topic", "id": t} for t in topic_ids]}
            },
        }
    }


def build_deletion(identifier: str, value: str) -> dict[str, Any]:
    """A deletion job naming one clean identifier: ``email``, ``phone_number`` or ``id``
    (Klaviyo's profile id, which goes in the resource's ``id``)."""
    data: dict[str, Any] = {"type": "profile", "attributes": {}}
    if identifier == "id":
        data["id"] = value
    else:
        data["attributes"][identifier] = value
    return {
        "data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": data}},
        }
    }


def profile_deletion_body(
    *, email: str | None = None, phone_number: str | None = None, profile_id: str | None = None
) -> dict[str, Any]:
    """Body of ``POST /api/data-privacy-deletion-jobs``: exactly one identifier."""
    payload = deletion_payload(email=email, phone_number=phone_number, profile_id=profile_id)
    ((name, value),) = clean_deletion(payload)["profile"].items()
    return build_deletion(name, value)
