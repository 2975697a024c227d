"""Pure builders of Klaviyo JSON:API request bodies (revision 2026-07-15). No HTTP here.

Every builder validates its input first and raises ``KlaviyoValidationError`` naming the
offending field, so bad data is refused before a request is built, let alone sent. The
shapes follow the request schemas of the OpenAPI spec; ``tests/test_payloads_spec.py``
checks each one against it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from django_klaviyo import limits, values
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.identifiers import (
    clean_profile,
    normalize_email,
    normalize_phone_number,
    profile_key,
)
from django_klaviyo.rules.events import clean_metric, clean_properties
from django_klaviyo.values import check_text, to_json

# Limits and attribute names live in ``limits``; these names stay for the client's callers.
MAX_EVENTS_PER_BULK_REQUEST = limits.EVENTS_PER_REQUEST
MAX_PROFILES_PER_IMPORT_JOB = limits.PROFILES_PER_IMPORT_JOB
MAX_IDS_PER_LIST_REQUEST = limits.IDS_PER_LIST_REQUEST
MAX_PROFILES_PER_SUBSCRIBE_JOB = limits.PROFILES_PER_SUBSCRIBE_JOB
MAX_PROFILES_PER_UNSUBSCRIBE_JOB = limits.PROFILES_PER_UNSUBSCRIBE_JOB
MAX_BULK_REQUEST_BYTES = limits.MAX_REQUEST_BYTES
MAX_METRIC_NAME_LENGTH = limits.METRIC_MAX_LENGTH
PROFILE_ATTRIBUTES = limits.PROFILE_ATTRIBUTES
EVENT_PROFILE_ATTRIBUTES = limits.EVENT_PROFILE_ATTRIBUTES
UPDATE_PROFILE_ATTRIBUTES = limits.UPDATE_PROFILE_ATTRIBUTES
LOCATION_KEYS = limits.LOCATION_KEYS
EVENT_KEYS = frozenset(
    {"metric", "properties", "time", "value", "value_currency", "unique_id", "backfill"}
)
CONSENT_CHANNELS = limits.CONSENT_CHANNELS
OPT_IN_PROCESSES = ("double_opt_in", "single_opt_in")


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


# -- small validators -------------------------------------------------------------------


@contextmanager
def _located(prefix: str) -> Iterator[None]:
    """Prefix errors of shared validators (identifiers) with the item they concern,
    so ``profile.email`` in item 3 reads ``profiles[3].email``."""
    try:
        yield
    except KlaviyoValidationError as exc:
        field = exc.field or ""
        if field.startswith(prefix):
            raise
        field = field.removeprefix("profile.").removeprefix("profile")
        located = f"{prefix}.{field}" if field else prefix
        raise KlaviyoValidationError(f"{prefix}: {exc}", field=located) from None


def _text(value: Any, field: str, *, max_length: int | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise KlaviyoValidationError(f"{field} must be a non-empty string.", field=field)
    check_text(value, field)
    if max_length is not None and len(value) > max_length:
        raise KlaviyoValidationError(
            f"{field} is {len(value)} characters long; Klaviyo accepts at most {max_length}.",
            field=field,
        )
    return value


def _optional_text(value: Any, field: str) -> str | None:
    return None if value is None else _text(value, field)


def _identifier(value: Any, field: str) -> str:
    """An id for a URL path or a relationship: a non-empty string (ints are accepted)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return _text(value, field)


def _mapping(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise KlaviyoValidationError(
            f"{field} must be an object (a dict), not {type(value).__name__}.", field=field
        )
    return dict(value)


def _batch(items: Any, field: str, limit: int) -> list[Any]:
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise KlaviyoValidationError(f"{field} must be a list.", field=field)
    items = list(items)
    if len(items) > limit:
        raise KlaviyoValidationError(
            f"{field} has {len(items)} items; Klaviyo accepts at most {limit} per request.",
            field=field,
        )
    return items


def _time(value: Any, field: str) -> str | None:
    """The one time rule (``values.iso_time``): a naive time is in the current time zone."""
    return None if value is None else values.iso_time(value, field)


def _parsed(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def _profile_attributes(
    profile: Mapping[str, Any], allowed: frozenset[str], field: str
) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for key, value in profile.items():
        if key not in allowed:
            raise KlaviyoValidationError(
                f"{field}.{key} is not a Klaviyo profile attribute; custom data goes in "
                f"{field}.properties.",
                field=f"{field}.{key}",
            )
        if key == "location" and value is not None:
            location = _mapping(value, f"{field}.location")
            unknown = sorted(set(location) - LOCATION_KEYS)
            if unknown:
                raise KlaviyoValidationError(
                    f"{field}.location.{unknown[0]} is not a Klaviyo location field.",
                    field=f"{field}.location.{unknown[0]}",
                )
            value = location
        elif key == "properties" and value is not None:
            value = _mapping(value, f"{field}.properties")
        attributes[key] = value
    # The same value rules as outbox rows: plain JSON, storable text, strings and nesting
    # within Klaviyo's limits.
    return to_json(attributes, field)


def _split_profile(profile: Mapping[str, Any]) -> tuple[str | None, dict[str, Any] | None, dict]:
    """Pull the resource-level ``id`` and ``meta`` out of a flat profile dict."""
    rest = dict(profile)
    profile_id = rest.pop("id", None)
    meta = rest.pop("meta", None)
    if profile_id is not None:
        profile_id = _identifier(profile_id, "profile.id")
    if meta is not None:
        meta = _mapping(meta, "profile.meta")
    return profile_id, meta, rest


def _event_profile(profile: Any, field: str, *, meta_inside: bool) -> dict[str, Any]:
    cleaned = clean_profile(profile, for_event=True)
    profile_id, meta, rest = _split_profile(cleaned)
    data: dict[str, Any] = {
        "type": "profile",
        "attributes": _profile_attributes(rest, EVENT_PROFILE_ATTRIBUTES, field),
    }
    if profile_id:
        data["id"] = profile_id
    if meta:
        # create_event nests meta in attributes; bulk_create_events puts it beside them.
        if meta_inside:
            data["attributes"]["meta"] = meta
        else:
            data["meta"] = meta
    return {"data": data}


def clean_event_profile(profile: Any) -> dict[str, Any]:
    """A flat event profile with identifiers normalised and every attribute name checked,
    as ``assemble_bulk_events`` expects it."""
    with _located("profile"):
        cleaned = clean_profile(profile, for_event=True)
        _profile_id, _meta, rest = _split_profile(cleaned)
        _profile_attributes(rest, EVENT_PROFILE_ATTRIBUTES, "profile")
    return cleaned


def _event_attributes(event: Mapping[str, Any], field: str) -> dict[str, Any]:
    """An event's attributes, cleaned by the same rules as outbox rows
    (``django_klaviyo.rules.events``), with the field paths of this request."""
    properties = event.get("properties")
    time = event.get("time")
    unique_id = event.get("unique_id")
    if isinstance(unique_id, int) and not isinstance(unique_id, bool):
        unique_id = str(unique_id)
    attributes: dict[str, Any] = {
        "properties": clean_properties(properties, f"{field}.properties"),
        "metric": {
            "data": {
                "type": "metric",
                "attributes": {"name": clean_metric(event.get("metric"), f"{field}.metric")},
            }
        },
    }
    currency = event.get("value_currency")
    optional = {
        "time": None if time is None else values.iso_time(time, f"{field}.time"),
        "value": values.number(event.get("value"), f"{field}.value"),
        "value_currency": None if currency is None else _text(currency, f"{field}.value_currency"),
        "unique_id": None
        if unique_id in (None, "")
        else values.key(unique_id, f"{field}.unique_id"),
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    backfill = event.get("backfill")
    if backfill is not None:
        if not isinstance(backfill, bool):
            raise KlaviyoValidationError(
                f"{field}.backfill must be true or false.", field=f"{field}.backfill"
            )
        if backfill:
            attributes["backfill"] = True
    return attributes


# -- events -----------------------------------------------------------------------------


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
    event = {
        "backfill": backfill,
        "metric": metric,
        "properties": properties,
        "time": time,
        "value": value,
        "value_currency": value_currency,
        "unique_id": unique_id,
    }
    attributes = _event_attributes(event, "event")
    attributes["profile"] = _event_profile(profile, "profile", meta_inside=True)
    return {"data": {"type": "event", "attributes": attributes}}


def bulk_events_body(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Body of ``POST /api/event-bulk-create-jobs``.

    ``entries`` = ``[{"profile": {...}, "events": [{"metric", "properties", "time",
    "value", "value_currency", "unique_id"}, ...]}, ...]``. At most 1000 events in all,
    and no (profile, metric, unique_id) twice: Klaviyo would fail the whole request.
    """
    entries = _batch(entries, "entries", MAX_EVENTS_PER_BULK_REQUEST)
    built: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    total = 0
    for i, entry in enumerate(entries):
        field = f"entries[{i}]"
        entry = _mapping(entry, field)
        unknown = sorted(set(entry) - {"profile", "events"})
        if unknown:
            raise KlaviyoValidationError(
                f"{field}.{unknown[0]} is not an entry key (expected profile and events).",
                field=f"{field}.{unknown[0]}",
            )
        with _located(f"{field}.profile"):
            profile = _event_profile(entry.get("profile"), f"{field}.profile", meta_inside=False)
        profile_data = profile["data"]
        identity = profile_key({**profile_data["attributes"], "id": profile_data.get("id")})
        events = _batch(entry.get("events"), f"{field}.events", MAX_EVENTS_PER_BULK_REQUEST)
        if not events:
            raise KlaviyoValidationError(
                f"{field}.events is empty; each entry needs at least one event.",
                field=f"{field}.events",
            )
        total = _count_bulk_events(total, len(events))
        built_events = []
        for j, event in enumerate(events):
            event_field = f"{field}.events[{j}]"
            event = _mapping(event, event_field)
            unknown = sorted(set(event) - EVENT_KEYS)
            if unknown:
                raise KlaviyoValidationError(
                    f"{event_field}.{unknown[0]} is not an event field.",
                    field=f"{event_field}.{unknown[0]}",
                )
            attributes = _event_attributes(event, event_field)
            unique = attributes.get("unique_id")
            if unique is not None:
                metric_name = attributes["metric"]["data"]["attributes"]["name"]
                _remember_unique(seen, (identity, metric_name, unique), event_field)
            built_events.append({"type": "event", "attributes": attributes})
        built.append(
            {
                "type": "event-bulk-create",
                "attributes": {"profile": profile, "events": {"data": built_events}},
            }
        )
    return _bulk_events_job(built)


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


def _upsert_resource(
    attributes: Mapping[str, Any], profile_id: str | None, field: str
) -> dict[str, Any]:
    attributes = _mapping(attributes, field)
    embedded_id, meta, rest = _split_profile(attributes)
    profile_id = _identifier(profile_id, "profile_id") if profile_id is not None else embedded_id
    has_identifier = any(rest.get(k) for k in ("email", "phone_number", "external_id"))
    # With a Klaviyo id the profile is already identified; otherwise Klaviyo needs one.
    cleaned = clean_profile(rest) if has_identifier or not profile_id else _normalized(rest)
    data: dict[str, Any] = {
        "type": "profile",
        "attributes": _profile_attributes(cleaned, PROFILE_ATTRIBUTES, field),
    }
    if profile_id:
        data["id"] = profile_id
    if meta:
        data["meta"] = meta
    return data


def _normalized(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise the identifiers present without requiring any (partial updates)."""
    result = dict(attributes)
    if result.get("email") is not None:
        result["email"] = normalize_email(result["email"])
    if result.get("phone_number") is not None:
        result["phone_number"] = normalize_phone_number(result["phone_number"])
    if result.get("external_id") is not None:
        result["external_id"] = str(result["external_id"])
    return result


def profile_upsert_body(
    attributes: Mapping[str, Any], *, profile_id: str | None = None
) -> dict[str, Any]:
    """Body of ``POST /api/profile-import``; an ``id`` key in ``attributes`` counts as
    ``profile_id``, a ``meta`` key becomes the resource's meta (patch_properties)."""
    return {"data": _upsert_resource(attributes, profile_id, "profile")}


def profile_update_body(profile_id: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Body of ``PATCH /api/profiles/{id}``: ``data.id`` repeats the path id, as required."""
    profile_id = _identifier(profile_id, "profile_id")
    attributes = _mapping(attributes, "attributes")
    embedded_id = attributes.pop("id", None)
    if embedded_id is not None and str(embedded_id) != profile_id:
        raise KlaviyoValidationError(
            f"attributes.id {embedded_id!r} differs from profile_id {profile_id!r}.",
            field="attributes.id",
        )
    meta = attributes.pop("meta", None)
    data: dict[str, Any] = {
        "type": "profile",
        "id": profile_id,
        "attributes": _profile_attributes(
            _normalized(attributes), UPDATE_PROFILE_ATTRIBUTES, "attributes"
        ),
    }
    if meta is not None:
        data["meta"] = _mapping(meta, "attributes.meta")
    return {"data": data}


def bulk_import_body(
    profiles: Sequence[Mapping[str, Any]], *, list_ids: Iterable[str] = ()
) -> dict[str, Any]:
    """Body of ``POST /api/profile-bulk-import-jobs`` (at most 10,000 profiles)."""
    profiles = _batch(profiles, "profiles", MAX_PROFILES_PER_IMPORT_JOB)
    if not profiles:
        raise KlaviyoValidationError("profiles is empty; import at least one.", field="profiles")
    data = []
    for i, profile in enumerate(profiles):
        with _located(f"profiles[{i}]"):
            data.append(_upsert_resource(profile, None, f"profiles[{i}]"))
    body: dict[str, Any] = {
        "data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": data}}}
    }
    ids = [_identifier(x, "list_ids") for x in _batch(list_ids, "list_ids", 1000)]
    if ids:
        body["data"]["relationships"] = {
            "lists": {"data": [{"type": "list", "id": x} for x in dict.fromkeys(ids)]}
        }
    return body


# -- consent ----------------------------------------------------------------------------


def _consent_contact(profile: Any, field: str, allowed: frozenset[str]) -> dict[str, Any]:
    profile = _mapping(profile, field)
    unknown = sorted(set(profile) - allowed)
    if unknown:
        raise KlaviyoValidationError(
            f"{field}.{unknown[0]} is not accepted here (expected {', '.join(sorted(allowed))}).",
            field=f"{field}.{unknown[0]}",
        )
    contact: dict[str, Any] = {}
    if profile.get("email"):
        contact["email"] = normalize_email(profile["email"])
    if profile.get("phone_number"):
        contact["phone_number"] = normalize_phone_number(profile["phone_number"])
    if not contact:
        raise KlaviyoValidationError(
            f"{field} needs an email or a phone_number: consent is tied to a contact channel.",
            field=f"{field}.email",
        )
    channels = profile.get("channels")
    if (
        isinstance(channels, (str, bytes))
        or not isinstance(channels, Iterable)
        or not (channels := list(channels))
        or any(c not in CONSENT_CHANNELS for c in channels)
    ):
        raise KlaviyoValidationError(
            f"{field}.channels must be a non-empty list of 'email' and/or 'sms'.",
            field=f"{field}.channels",
        )
    for channel, needs in (("email", "email"), ("sms", "phone_number")):
        if channel in channels and needs not in contact:
            raise KlaviyoValidationError(
                f"{field}: the {channel} channel needs {needs}.", field=f"{field}.{needs}"
            )
    contact["channels"] = list(dict.fromkeys(channels))
    return contact


def _list_relationship(list_id: str | None) -> dict[str, Any] | None:
    if list_id is None:
        return None
    return {"list": {"data": {"type": "list", "id": _identifier(list_id, "list_id")}}}


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
    profiles = _batch(profiles, "profiles", MAX_PROFILES_PER_SUBSCRIBE_JOB)
    allowed = frozenset({"email", "phone_number", "channels", "consented_at"})
    data = []
    for i, profile in enumerate(profiles):
        field = f"profiles[{i}]"
        contact = _consent_contact(profile, field, allowed)
        consented_at = _time(profile.get("consented_at"), f"{field}.consented_at")
        if historical_import and consented_at is None:
            raise KlaviyoValidationError(
                f"{field}.consented_at is required for a historical import.",
                field=f"{field}.consented_at",
            )
        if consented_at is not None and not historical_import:
            raise KlaviyoValidationError(
                f"{field}.consented_at is only accepted with historical_import=True.",
                field=f"{field}.consented_at",
            )
        if consented_at is not None and now is not None and _parsed(consented_at) > now:
            raise KlaviyoValidationError(
                f"{field}.consented_at {consented_at} is in the future.",
                field=f"{field}.consented_at",
            )
        marketing: dict[str, Any] = {"consent": "SUBSCRIBED"}
        if consented_at is not None:
            marketing["consented_at"] = consented_at
        attributes = {k: contact[k] for k in ("email", "phone_number") if k in contact}
        attributes["subscriptions"] = {
            c: {"marketing": dict(marketing)} for c in contact["channels"]
        }
        data.append({"type": "profile", "attributes": attributes})
    job_attributes: dict[str, Any] = {"profiles": {"data": data}}
    if custom_source is not None:
        job_attributes["custom_source"] = _text(custom_source, "custom_source")
    if historical_import:
        job_attributes["historical_import"] = True
    body: dict[str, Any] = {
        "data": {"type": "profile-subscription-bulk-create-job", "attributes": job_attributes}
    }
    relationship = _list_relationship(list_id)
    if relationship:
        body["data"]["relationships"] = relationship
    return body


def unsubscribe_body(
    profiles: Sequence[Mapping[str, Any]], *, list_id: str | None = None
) -> dict[str, Any]:
    """Body of ``POST /api/profile-subscription-bulk-delete-jobs`` (at most 100).

    Without ``list_id`` Klaviyo unsubscribes the profiles globally from the channels.
    """
    profiles = _batch(profiles, "profiles", MAX_PROFILES_PER_UNSUBSCRIBE_JOB)
    allowed = frozenset({"email", "phone_number", "channels"})
    data = []
    for i, profile in enumerate(profiles):
        contact = _consent_contact(profile, f"profiles[{i}]", allowed)
        attributes = {k: contact[k] for k in ("email", "phone_number") if k in contact}
        attributes["subscriptions"] = {
            c: {"marketing": {"consent": "UNSUBSCRIBED"}} for c in contact["channels"]
        }
        data.append({"type": "profile", "attributes": attributes})
    body: dict[str, Any] = {
        "data": {
            "type": "profile-subscription-bulk-delete-job",
            "attributes": {"profiles": {"data": data}},
        }
    }
    relationship = _list_relationship(list_id)
    if relationship:
        body["data"]["relationships"] = relationship
    return body


# -- lists ------------------------------------------------------------------------------


def list_relationship_body(profile_ids: Iterable[str]) -> dict[str, Any]:
    """Body of ``POST|DELETE /api/lists/{id}/relationships/profiles`` (at most 1000 ids).

    Duplicates are dropped: membership is a set, and a repeat would only spend the limit.
    """
    ids = [
        _identifier(x, f"profile_ids[{i}]")
        for i, x in enumerate(_batch(profile_ids, "profile_ids", MAX_IDS_PER_LIST_REQUEST))
    ]
    return {"data": [{"type": "profile", "id": x} for x in dict.fromkeys(ids)]}


def create_list_body(name: str, *, opt_in_process: str | None = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"name": _text(name, "name")}
    if opt_in_process is not None:
        if opt_in_process not in OPT_IN_PROCESSES:
            raise KlaviyoValidationError(
                f"opt_in_process must be one of {', '.join(OPT_IN_PROCESSES)}, not "
                f"{opt_in_process!r}.",
                field="opt_in_process",
            )
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
    attributes: dict[str, Any] = {"name": _text(name, "name")}
    if description is not None:
        attributes["description"] = _text(description, "description")
    url = _text(endpoint_url, "endpoint_url")
    if not url.lower().startswith("https://"):
        raise KlaviyoValidationError(
            "endpoint_url must be an https:// URL; Klaviyo refuses plain http.",
            field="endpoint_url",
        )
    attributes["endpoint_url"] = url
    if not isinstance(secret_key, str) or not secret_key.strip():
        raise KlaviyoValidationError("secret_key must be a non-empty string.", field="secret_key")
    attributes["secret_key"] = secret_key
    topic_ids = [_text(t, f"topics[{i}]") for i, t in enumerate(_batch(topics, "topics", 1000))]
    if not topic_ids:
        raise KlaviyoValidationError("topics must name at least one topic.", field="topics")
    return {
        "data": {
            "type": "webhook",
            "attributes": attributes,
            "relationships": {
                "webhook-topics": {
                    "data": [{"type": "webhook-topic", "id": t} for t in dict.fromkeys(topic_ids)]
                }
            },
        }
    }


def profile_deletion_body(
    *, email: str | None = None, phone_number: str | None = None, profile_id: str | None = None
) -> dict[str, Any]:
    """Body of ``POST /api/data-privacy-deletion-jobs``: exactly one identifier."""
    given = {
        k: v
        for k, v in (("email", email), ("phone_number", phone_number), ("profile_id", profile_id))
        if v not in (None, "")
    }
    if len(given) != 1:
        raise KlaviyoValidationError(
            "A deletion request names exactly one of email, phone_number or profile_id "
            f"(got {len(given)}).",
            field="profile",
        )
    data: dict[str, Any] = {"type": "profile", "attributes": {}}
    if "email" in given:
        data["attributes"]["email"] = normalize_email(email)  # type: ignore[arg-type]
    elif "phone_number" in given:
        data["attributes"]["phone_number"] = normalize_phone_number(phone_number)  # type: ignore[arg-type]
    else:
        data["id"] = _identifier(profile_id, "profile_id")
    return {
        "data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": data}},
        }
    }
