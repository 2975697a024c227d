"""The one writer of outbox rows: validate, dedupe, insert.

Rows are written in the caller's transaction (the same connection as the store's own
writes), so a rolled-back order leaves no row and a committed one always has its row.
``transaction.on_commit`` is used only to send the ``outbox_ready`` wake-up hint, never
to write: a crash between commit and the hook would otherwise lose events.

Every row of one call goes in ONE ``INSERT`` (``bulk_create``). Rows carrying a
``dedupe_key`` are inserted with ``ignore_conflicts`` on its unique constraint, so saving
the same state again adds nothing.

The ``build_*`` functions validate one operation at call time and return an
:class:`OutboxRow`; they raise :class:`KlaviyoValidationError` naming the bad field.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import sqlite3
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.functional import Promise

from django_klaviyo import payloads
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.identifiers import (
    EVENT_IDENTIFIERS,
    PROFILE_IDENTIFIERS,
    clean_profile,
    normalize_email,
    normalize_phone_number,
    profile_key,
)
from django_klaviyo.models import OutboxEvent
from django_klaviyo.models.outbox import new_outbox_id

Kind = OutboxEvent.Kind

# Klaviyo: metric names must be shorter than 128 characters.
METRIC_MAX_LENGTH = 127
# Klaviyo: at most 400 event properties; nesting at most 10 levels.
MAX_PROPERTIES = 400
MAX_DEPTH = 10
KEY_MAX_LENGTH = 255
# The same attribute sets the client validates requests with, so a row accepted here is
# never rejected at flush time for its shape; events also take a Klaviyo profile "id".
EVENT_PROFILE_ATTRIBUTES = payloads.EVENT_PROFILE_ATTRIBUTES | frozenset(EVENT_IDENTIFIERS)
PROFILE_ATTRIBUTES = payloads.PROFILE_ATTRIBUTES
LOCATION_KEYS = payloads.LOCATION_KEYS
CHANNELS = payloads.CONSENT_CHANNELS
# Klaviyo rejects event times before 1990 or more than a year ahead.
EARLIEST_EVENT_TIME = dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class OutboxRow:
    """One row to insert. ``trusted`` rows come from a ``build_*`` function and are
    already plain JSON, so the hot path does not walk their payload twice."""

    kind: str
    payload: dict[str, Any]
    unique_id: str = ""
    dedupe_key: str | None = None
    metric: str = ""
    trusted: bool = field(default=False, repr=False, compare=False)
    # The payload as JSON text when a builder already encoded it (the INSERT reuses it).
    encoded: str | None = field(default=None, repr=False, compare=False)


# --- value cleaning -------------------------------------------------------------------


def to_json(value: Any, path: str, *, _depth: int = 0) -> Any:
    """``value`` as plain JSON types (Decimal → float, datetime → ISO string), or raise.

    Faster than a ``json.dumps``/``json.loads`` round trip, and the error names the
    exact path of the offending value ("properties.Items[2].Price").
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise KlaviyoValidationError(f"{path} is {value!r}, not valid JSON.", field=path)
        return value
    if _depth > MAX_DEPTH:
        raise KlaviyoValidationError(
            f"{path} is nested more than {MAX_DEPTH} levels deep.", field=path
        )
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise KlaviyoValidationError(
                    f"{path} has a key {key!r} that is not a string.", field=path
                )
            result[key] = to_json(item, f"{path}.{key}", _depth=_depth + 1)
        return result
    if isinstance(value, (list, tuple)):
        return [to_json(item, f"{path}[{i}]", _depth=_depth + 1) for i, item in enumerate(value)]
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise KlaviyoValidationError(f"{path} is {value}, not a number.", field=path)
        return float(value)
    if isinstance(value, dt.datetime):
        return _iso_utc(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, Promise)):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise KlaviyoValidationError(
        f"{path} holds a {type(value).__name__}, which is not JSON-serialisable; "
        "convert it to a string, number, list or dict.",
        field=path,
    )


def _iso_utc(value: dt.datetime) -> str:
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    return value.astimezone(dt.timezone.utc).isoformat()


def clean_metric(metric: Any) -> str:
    if not isinstance(metric, str) or not metric.strip():
        raise KlaviyoValidationError("metric must be a non-empty string.", field="metric")
    metric = metric.strip()
    if len(metric) > METRIC_MAX_LENGTH:
        raise KlaviyoValidationError(
            f"metric must be shorter than 128 characters (got {len(metric)}).", field="metric"
        )
    return metric


def clean_value(value: Any, field_name: str = "value") -> float | None:
    if value is None:
        return None
    # bool is an int subclass, but True is not an amount of money.
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise KlaviyoValidationError(
            f"{field_name} must be a number, not {type(value).__name__}.", field=field_name
        )
    number = float(value)
    if not math.isfinite(number):
        raise KlaviyoValidationError(f"{field_name} must be a finite number.", field=field_name)
    return number


def clean_currency(currency: Any) -> str | None:
    if currency is None or currency == "":
        return None
    if (
        not isinstance(currency, str)
        or len(currency) != 3
        or not currency.isascii()
        or not currency.isalpha()
    ):
        raise KlaviyoValidationError(
            f"value_currency must be a 3-letter ISO 4217 code, not {currency!r}.",
            field="value_currency",
        )
    return currency.upper()


def clean_time(value: Any, field_name: str = "time", *, allow_future: bool = True) -> str:
    """An aware datetime or ISO-8601 string → ISO-8601 UTC string; None → now."""
    if value is None:
        return timezone.now().astimezone(dt.timezone.utc).isoformat()
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None
        if parsed is None:
            raise KlaviyoValidationError(
                f"{field_name} {value!r} is not an ISO-8601 date-time.", field=field_name
            )
        value = parsed
    elif not isinstance(value, dt.datetime):
        raise KlaviyoValidationError(
            f"{field_name} must be a datetime or an ISO-8601 string, not {type(value).__name__}.",
            field=field_name,
        )
    if timezone.is_naive(value):
        value = timezone.make_aware(value)
    value = value.astimezone(dt.timezone.utc)
    now = timezone.now()
    if value < EARLIEST_EVENT_TIME:
        raise KlaviyoValidationError(f"{field_name} must be after 1990.", field=field_name)
    latest = now + dt.timedelta(days=365) if allow_future else now
    if value > latest:
        which = "more than a year in the future" if allow_future else "in the future"
        raise KlaviyoValidationError(f"{field_name} must not be {which}.", field=field_name)
    return value.isoformat()


def clean_key(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not value:
        raise KlaviyoValidationError(f"{field_name} must be a non-empty string.", field=field_name)
    if len(value) > KEY_MAX_LENGTH:
        raise KlaviyoValidationError(
            f"{field_name} must be at most {KEY_MAX_LENGTH} characters.", field=field_name
        )
    return value


def clean_list_id(list_id: Any) -> str:
    # A KlaviyoList mirror row is accepted in place of its id.
    list_id = getattr(list_id, "klaviyo_id", list_id)
    if not isinstance(list_id, str) or not list_id.strip():
        raise KlaviyoValidationError("list_id must be a non-empty string.", field="list_id")
    return list_id.strip()


def clean_profile_attributes(profile: Any, *, for_event: bool = False) -> dict[str, Any]:
    """Identifiers normalised (see identifiers.clean_profile) and every attribute
    checked against the names Klaviyo accepts, as plain JSON."""
    cleaned = clean_profile(profile, for_event=for_event)
    allowed = EVENT_PROFILE_ATTRIBUTES if for_event else PROFILE_ATTRIBUTES
    for key in cleaned:
        if key not in allowed:
            raise KlaviyoValidationError(
                f"profile attribute {key!r} is not a Klaviyo profile attribute "
                f"(use profile['properties'] for custom data).",
                field=f"profile.{key}",
            )
    location = cleaned.get("location")
    if location is not None:
        if not isinstance(location, Mapping):
            raise KlaviyoValidationError(
                "profile.location must be a dict.", field="profile.location"
            )
        for key in location:
            if key not in LOCATION_KEYS:
                raise KlaviyoValidationError(
                    f"profile.location has an unknown key {key!r}.",
                    field=f"profile.location.{key}",
                )
    properties = cleaned.get("properties")
    if properties is not None and not isinstance(properties, Mapping):
        raise KlaviyoValidationError(
            "profile.properties must be a dict.", field="profile.properties"
        )
    return to_json(cleaned, "profile")


def clean_properties(properties: Any) -> dict[str, Any]:
    if properties is None:
        return {}
    if not isinstance(properties, Mapping):
        raise KlaviyoValidationError(
            f"properties must be a dict, not {type(properties).__name__}.", field="properties"
        )
    if len(properties) > MAX_PROPERTIES:
        raise KlaviyoValidationError(
            f"properties has {len(properties)} keys; Klaviyo accepts at most {MAX_PROPERTIES}.",
            field="properties",
        )
    return to_json(properties, "properties")


def clean_channels(channels: Any) -> list[str]:
    if isinstance(channels, str):
        channels = [channels]
    if not isinstance(channels, (list, tuple, set, frozenset)) or not channels:
        raise KlaviyoValidationError(
            "channels must be a non-empty list of 'email' and/or 'sms'.", field="channels"
        )
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise KlaviyoValidationError(
            f"unknown channel(s) {unknown!r}; use 'email' and/or 'sms'.", field="channels"
        )
    return [c for c in CHANNELS if c in channels]


def _consent_profile(profile: Any, channels: list[str]) -> dict[str, str]:
    """Subscriptions identify profiles by email and phone only."""
    if not isinstance(profile, Mapping):
        raise KlaviyoValidationError(
            "profile must be a dict with email and/or phone_number.", field="profile"
        )
    cleaned: dict[str, str] = {}
    if profile.get("email"):
        cleaned["email"] = normalize_email(profile["email"])
    if profile.get("phone_number"):
        cleaned["phone_number"] = normalize_phone_number(profile["phone_number"])
    extra = sorted(k for k, v in profile.items() if k not in ("email", "phone_number") and v)
    if extra:
        raise KlaviyoValidationError(
            f"subscriptions identify profiles by email and phone_number only; "
            f"remove {', '.join(extra)}.",
            field=f"profile.{extra[0]}",
        )
    if "email" in channels and "email" not in cleaned:
        raise KlaviyoValidationError(
            "the email channel needs profile['email'].", field="profile.email"
        )
    if "sms" in channels and "phone_number" not in cleaned:
        raise KlaviyoValidationError(
            "the sms channel needs profile['phone_number'] in E.164 format.",
            field="profile.phone_number",
        )
    return cleaned


EXPAND_KEYS = frozenset({"metric", "unique_id", "properties", "value"})
# One bulk request holds at most 1,000 events: the row's own plus its expansions.
MAX_EXPAND = 999


def clean_expand(expand: Any, metric: str, unique_id: str) -> list[dict[str, Any]]:
    """The extra events of an ``event`` row: ``[{"metric", "unique_id", "properties",
    "value"}, ...]``. They share the row's profile, time and currency and are sent in the
    same bulk request, so no two may repeat a (metric, unique_id), the row's included."""
    if isinstance(expand, (str, bytes, Mapping)) or not isinstance(expand, (list, tuple)):
        raise KlaviyoValidationError("expand must be a list of event dicts.", field="expand")
    if len(expand) > MAX_EXPAND:
        raise KlaviyoValidationError(
            f"expand has {len(expand)} events; one row sends at most {MAX_EXPAND + 1}.",
            field="expand",
        )
    seen = {(metric, unique_id)}
    cleaned = []
    for i, item in enumerate(expand):
        path = f"expand[{i}]"
        if not isinstance(item, Mapping):
            raise KlaviyoValidationError(f"{path} must be a dict.", field=path)
        unknown = sorted(str(k) for k in item if k not in EXPAND_KEYS)
        if unknown:
            raise KlaviyoValidationError(
                f"{path} has unknown key(s) {', '.join(unknown)}; expanded events share the "
                "row's profile, time and value_currency.",
                field=f"{path}.{unknown[0]}",
            )
        try:
            event = {
                "metric": clean_metric(item.get("metric")),
                "unique_id": clean_key(item.get("unique_id"), "unique_id"),
                "properties": clean_properties(item.get("properties")),
                "value": clean_value(item.get("value")),
            }
        except KlaviyoValidationError as exc:
            raise KlaviyoValidationError(f"{path}: {exc}", field=f"{path}.{exc.field}") from exc
        key = (event["metric"], event["unique_id"])
        if key in seen:
            raise KlaviyoValidationError(
                f"{path} repeats metric {key[0]!r} with unique_id {key[1]!r}.",
                field=f"{path}.unique_id",
            )
        seen.add(key)
        cleaned.append(event)
    return cleaned


def payload_digest(payload: Mapping[str, Any]) -> str:
    """A short stable hash of a payload, for dedupe keys."""
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:24]


# --- row builders ---------------------------------------------------------------------


def build_event(
    *,
    metric: Any,
    profile: Any,
    properties: Any = None,
    value: Any = None,
    value_currency: Any = None,
    time: Any = None,
    unique_id: Any = None,
    dedupe_key: Any = None,
    expand: Any = None,
) -> OutboxRow:
    """One ``event`` row; ``expand`` lists further events (see :func:`clean_expand`)
    sent with it, sharing its profile, time and currency."""
    return _event_row(
        clean_metric(metric),
        clean_profile_attributes(profile, for_event=True),
        properties=properties,
        value=value,
        value_currency=value_currency,
        time=time,
        unique_id=unique_id,
        dedupe_key=dedupe_key,
        expand=expand,
    )


def build_events(specs: Iterable[Mapping[str, Any]]) -> list[OutboxRow]:
    """``build_event`` for a mapper's event specs. The events of one order share their
    profile, so each distinct (flat) profile is validated once."""
    cleaned: dict[Any, dict[str, Any]] = {}
    rows = []
    for spec in specs:
        spec = dict(spec)
        profile = spec.pop("profile", None)
        memo_key: Any = None
        if isinstance(profile, Mapping) and all(
            isinstance(v, (str, int, float, type(None))) for v in profile.values()
        ):
            memo_key = tuple(sorted(profile.items()))
        if memo_key is None or memo_key not in cleaned:
            cleaned_profile = clean_profile_attributes(profile, for_event=True)
            if memo_key is not None:
                cleaned[memo_key] = cleaned_profile
        else:
            cleaned_profile = cleaned[memo_key]
        rows.append(_event_row(clean_metric(spec.pop("metric", None)), cleaned_profile, **spec))
    return rows


class _NotTrusted(Exception):
    """A trusted spec holds something the fast checks do not vouch for."""


def build_trusted_events(specs: Iterable[Mapping[str, Any]]) -> list[OutboxRow]:
    """``build_events`` for the package's OWN order mapper (``ecommerce``), whose specs
    are built from typed order fields: metric names, values and keys are taken as they
    are; the profile, currency and time are still checked, and the properties are
    checked by the one JSON encoding the INSERT needs anyway. A spec that fails a fast
    check goes through the full validation of ``build_events``, so its error (or its
    conversion, e.g. of a Decimal) is exactly the one ``build_events`` would give.
    Never use it for output of code the package does not own."""
    rows = []
    for spec in specs:
        try:
            rows.append(_trusted_event_row(spec))
        except _NotTrusted:
            rows.extend(build_events([spec]))
    return rows


def _trusted_event_row(spec: Mapping[str, Any]) -> OutboxRow:
    metric = spec["metric"]
    unique_id = spec["unique_id"]
    value = spec.get("value")
    time = spec.get("time")
    if (
        not _is_trusted_key(unique_id)
        or not _is_amount(value)
        or not isinstance(time, str)
        or not _is_event_time(time)
    ):
        raise _NotTrusted
    payload: dict[str, Any] = {
        "metric": metric,
        "profile": clean_profile_attributes(spec.get("profile"), for_event=True),
        "properties": spec.get("properties") or {},
        "time": time,
        "value": value,
        "value_currency": clean_currency(spec.get("value_currency")),
    }
    expand = spec.get("expand")
    if expand:
        for item in expand:
            if not _is_trusted_key(item["unique_id"]) or not _is_amount(item["value"]):
                raise _NotTrusted
        payload["expand"] = expand
    try:
        encoded = _encode(payload)
    except (TypeError, ValueError):  # not plain JSON, or NaN / infinity
        raise _NotTrusted from None
    dedupe_key = spec.get("dedupe_key")
    if dedupe_key is not None and not _is_trusted_key(dedupe_key):
        raise _NotTrusted
    return OutboxRow(
        kind=Kind.EVENT,
        payload=payload,
        unique_id=unique_id,
        dedupe_key=dedupe_key,
        metric=metric,
        trusted=True,
        encoded=encoded,
    )


def _is_trusted_key(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= KEY_MAX_LENGTH


def _is_amount(value: Any) -> bool:
    return value is None or (type(value) is float and math.isfinite(value))


def _is_event_time(value: str) -> bool:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    if parsed.tzinfo is None:
        return False
    return EARLIEST_EVENT_TIME <= parsed <= timezone.now() + dt.timedelta(days=365)


def _encode(payload: Mapping[str, Any]) -> str:
    # Compact: the row is written on the store's save path and read back as JSON anyway.
    return json.dumps(payload, allow_nan=False, separators=(",", ":"))


def _event_row(
    metric: str,
    profile: dict[str, Any],
    *,
    properties: Any = None,
    value: Any = None,
    value_currency: Any = None,
    time: Any = None,
    unique_id: Any = None,
    dedupe_key: Any = None,
    expand: Any = None,
) -> OutboxRow:
    # Generated once here and stored, so every retry sends the same idempotency key.
    unique_id = uuid.uuid4().hex if unique_id is None else clean_key(unique_id, "unique_id")
    payload = {
        "metric": metric,
        "profile": profile,
        "properties": clean_properties(properties),
        "time": clean_time(time),
        "value": clean_value(value),
        "value_currency": clean_currency(value_currency),
    }
    if expand:
        payload["expand"] = clean_expand(expand, metric, unique_id)
    return OutboxRow(
        kind=Kind.EVENT,
        payload=payload,
        unique_id=unique_id,
        dedupe_key=None if dedupe_key is None else clean_key(dedupe_key, "dedupe_key"),
        metric=metric,
        trusted=True,
    )


def build_profile_upsert(profile: Any, *, dedupe_key: Any = None) -> OutboxRow:
    return OutboxRow(
        kind=Kind.PROFILE_UPSERT,
        payload={"profile": clean_profile_attributes(profile)},
        dedupe_key=None if dedupe_key is None else clean_key(dedupe_key, "dedupe_key"),
        trusted=True,
    )


def build_list_change(
    kind: str, list_id: Any, profile: Any, *, dedupe_key: Any = None
) -> OutboxRow:
    identifiers = clean_profile(profile)
    # Only identifiers travel: the flusher resolves them to a Klaviyo profile id.
    identifiers = {k: v for k, v in identifiers.items() if k in PROFILE_IDENTIFIERS}
    return OutboxRow(
        kind=kind,
        payload={"list_id": clean_list_id(list_id), "profile": identifiers},
        dedupe_key=None if dedupe_key is None else clean_key(dedupe_key, "dedupe_key"),
        trusted=True,
    )


def build_subscribe(
    profile: Any,
    *,
    channels: Any = ("email",),
    list_id: Any = None,
    custom_source: Any = None,
    consented_at: Any = None,
    dedupe_key: Any = None,
) -> OutboxRow:
    channel_list = clean_channels(channels)
    if custom_source is not None and (not isinstance(custom_source, str) or not custom_source):
        raise KlaviyoValidationError(
            "custom_source must be a non-empty string.", field="custom_source"
        )
    payload = {
        "profile": _consent_profile(profile, channel_list),
        "channels": channel_list,
        "list_id": None if list_id is None else clean_list_id(list_id),
        "custom_source": custom_source,
        # A consent date means a historical import, which Klaviyo requires in the past.
        "consented_at": (
            None
            if consented_at is None
            else clean_time(consented_at, "consented_at", allow_future=False)
        ),
    }
    return OutboxRow(
        kind=Kind.SUBSCRIBE,
        payload=payload,
        dedupe_key=None if dedupe_key is None else clean_key(dedupe_key, "dedupe_key"),
        trusted=True,
    )


def build_unsubscribe(
    profile: Any, *, channels: Any = ("email",), list_id: Any = None, dedupe_key: Any = None
) -> OutboxRow:
    channel_list = clean_channels(channels)
    payload = {
        "profile": _consent_profile(profile, channel_list),
        "channels": channel_list,
        "list_id": None if list_id is None else clean_list_id(list_id),
    }
    return OutboxRow(
        kind=Kind.UNSUBSCRIBE,
        payload=payload,
        dedupe_key=None if dedupe_key is None else clean_key(dedupe_key, "dedupe_key"),
        trusted=True,
    )


def build_profile_deletion(
    *, email: Any = None, phone_number: Any = None, profile_id: Any = None
) -> OutboxRow:
    given = [
        (name, value)
        for name, value in (("email", email), ("phone_number", phone_number), ("id", profile_id))
        if value not in (None, "")
    ]
    if len(given) != 1:
        raise KlaviyoValidationError(
            "forget_profile needs exactly one of email, phone_number or profile_id "
            f"(got {len(given)}).",
            field="profile",
        )
    name, value = given[0]
    if name == "email":
        value = normalize_email(value)
    elif name == "phone_number":
        value = normalize_phone_number(value)
    elif not isinstance(value, str):
        raise KlaviyoValidationError("profile_id must be a string.", field="profile_id")
    return OutboxRow(kind=Kind.PROFILE_DELETION, payload={"profile": {name: value}}, trusted=True)


# --- the writer -----------------------------------------------------------------------


def _validated(row: OutboxRow) -> dict[str, Any]:
    """The row's column values (those that differ from the model defaults)."""
    if row.kind not in Kind.values:
        raise KlaviyoValidationError(f"unknown outbox kind {row.kind!r}.", field="kind")
    if row.trusted:
        payload = row.payload
    else:
        if not isinstance(row.payload, Mapping):
            raise KlaviyoValidationError("payload must be a dict.", field="payload")
        payload = to_json(row.payload, "payload")
    profile = payload.get("profile")
    key = profile_key(profile) if isinstance(profile, Mapping) else ""
    if not key:
        raise KlaviyoValidationError(
            "payload['profile'] needs at least one identifier.", field="profile"
        )
    metric = row.metric or (payload.get("metric", "") if row.kind == Kind.EVENT else "")
    if row.kind == Kind.EVENT:
        metric = clean_metric(metric)
    return {
        "id": new_outbox_id(),
        "kind": row.kind,
        "payload": payload,
        "metric": metric,
        "unique_id": clean_key(row.unique_id, "unique_id") if row.unique_id else "",
        "dedupe_key": clean_key(row.dedupe_key, "dedupe_key") if row.dedupe_key else None,
        "profile_key": key[:320],
        _ENCODED: row.encoded,
    }


# Column values every new row shares; the timestamps are filled in per call.
_NEW_ROW = {
    "status": OutboxEvent.Status.PENDING.value,
    "attempts": 0,
    "locked_at": None,
    "locked_by": "",
    "last_error_status": None,
    "last_error_code": "",
    "last_error_detail": "",
    "sent_at": None,
}
_TIMESTAMPS = ("next_attempt_at", "created_at", "updated_at")
# Key (not a column) carrying a row's JSON text from its builder to the INSERT.
_ENCODED = "__encoded__"
# Rows per statement: PostgreSQL takes at most 65535 parameters, old SQLite 999.
_MAX_ROWS_PER_INSERT = 1000


def enqueue_many(rows: Iterable[OutboxRow], *, using: str | None = None) -> list[OutboxEvent]:
    """Insert ``rows`` in one statement in the caller's transaction.

    Returns the rows as built; a row whose ``dedupe_key`` already existed was not
    inserted (the earlier row stands). Returns ``[]`` when ``ENABLED`` is False.
    """
    if not klaviyo_settings.ENABLED:
        return []
    return _write(rows, using, build_objects=True)


def enqueue_rows(rows: Iterable[OutboxRow], *, using: str | None = None) -> int:
    """:func:`enqueue_many` for callers that need no model instances back (the save
    signal's hot path); returns how many rows were written (0 when ``ENABLED`` is False)."""
    if not klaviyo_settings.ENABLED:
        return 0
    return len(_write(rows, using, build_objects=False))


def _write(rows: Iterable[OutboxRow], using: str | None, *, build_objects: bool) -> list[Any]:
    """Validate and insert; returns OutboxEvent instances, or the column dicts when
    ``build_objects`` is off and the fast INSERT needs no instances."""
    alias = using or DEFAULT_DB_ALIAS
    values: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in rows:
        columns = _validated(row)
        key = columns["dedupe_key"]
        if key:
            if key in seen:
                continue
            seen.add(key)
        values.append(columns)
    if not values:
        return []
    now = timezone.now()
    fields = OutboxEvent._meta.concrete_fields
    for columns in values:
        columns.update(_NEW_ROW)
        for name in _TIMESTAMPS:
            columns[name] = now
        for f in fields:
            # A column added to the model later starts at its default.
            if f.attname not in columns:
                columns[f.attname] = f.get_default()
    connection = connections[alias]
    fast = _supports_fast_insert(connection)
    objs: list[Any] = values
    if build_objects or not fast:
        objs = [OutboxEvent(*(columns[f.attname] for f in fields)) for columns in values]
    if fast:
        _insert(connection, values, ignore_conflicts=bool(seen))
    else:
        OutboxEvent.objects.using(alias).bulk_create(objs, ignore_conflicts=bool(seen))
    kinds = frozenset(columns["kind"] for columns in values)
    transaction.on_commit(lambda: _send_ready(len(values), kinds), using=alias)
    return objs


def _insert(connection: Any, values: list[dict[str, Any]], *, ignore_conflicts: bool) -> None:
    """One INSERT ... VALUES (...), (...) [ON CONFLICT (dedupe_key) DO NOTHING].

    Written by hand because ``bulk_create``'s per-call SQL compilation costs several
    times the statement itself, and this runs inside every tracked checkout. Values
    are prepared by the model fields, exactly as the ORM would.
    """
    fields = OutboxEvent._meta.concrete_fields
    prepared_now: dict[str, Any] = {}
    params: list[Any] = []
    for columns in values:
        for f in fields:
            value = columns[f.attname]
            if f.attname in _TIMESTAMPS:
                if f.attname not in prepared_now:
                    prepared_now[f.attname] = f.get_db_prep_save(value, connection)
                value = prepared_now[f.attname]
            elif f.attname == "payload":
                # JSON text, cast to jsonb in the SQL on PostgreSQL: encoded once, here or
                # by the builder that already had to encode it.
                value = columns[_ENCODED] or _encode(value)
            elif value is not None and not isinstance(value, (str, int)):
                value = f.get_db_prep_save(value, connection)  # uuid
            params.append(value)
    width = len(fields)
    max_params = connection.features.max_query_params or 65535
    per_statement = max(1, min(_MAX_ROWS_PER_INSERT, max_params // width))
    with transaction.atomic(using=connection.alias, savepoint=False):
        for start in range(0, len(values), per_statement):
            count = min(per_statement, len(values) - start)
            sql = _insert_sql(connection, count, ignore_conflicts)
            chunk = params[start * width : (start + count) * width]
            with connection.cursor() as cursor:
                cursor.execute(sql, chunk)


def _supports_fast_insert(connection: Any) -> bool:
    if connection.vendor == "postgresql":
        return True
    # SQLite understands ON CONFLICT (column) DO NOTHING from 3.24.
    return connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 24)


_SQL_CACHE: dict[tuple[str, int, bool], str] = {}


def _insert_sql(connection: Any, count: int, ignore_conflicts: bool) -> str:
    cache_key = (connection.vendor, count, ignore_conflicts)
    sql = _SQL_CACHE.get(cache_key)
    if sql is None:
        qn = connection.ops.quote_name
        fields = OutboxEvent._meta.concrete_fields
        columns = ", ".join(qn(f.column) for f in fields)
        json_placeholder = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
        row = (
            "("
            + ", ".join(json_placeholder if f.attname == "payload" else "%s" for f in fields)
            + ")"
        )
        # Names come from the model and are quoted; every value is a parameter.
        sql = f"INSERT INTO {qn(OutboxEvent._meta.db_table)} ({columns}) VALUES "  # noqa: S608
        sql += ", ".join([row] * count)
        if ignore_conflicts:
            # Only a repeated dedupe key is ignored; any other error still raises.
            sql += f" ON CONFLICT ({qn('dedupe_key')}) DO NOTHING"
        _SQL_CACHE[cache_key] = sql
    return sql


def enqueue(
    kind: str,
    payload: Mapping[str, Any],
    *,
    unique_id: str = "",
    dedupe_key: str | None = None,
    metric: str = "",
    using: str | None = None,
) -> OutboxEvent | None:
    """Insert one row (see :func:`enqueue_many`); None when ``ENABLED`` is False."""
    written = enqueue_many(
        [
            OutboxRow(
                kind=kind,
                payload=payload,  # type: ignore[arg-type]
                unique_id=unique_id,
                dedupe_key=dedupe_key,
                metric=metric,
            )
        ],
        using=using,
    )
    return written[0] if written else None


def _send_ready(count: int, kinds: frozenset[str]) -> None:
    from django_klaviyo.signals import outbox_ready

    outbox_ready.send(sender=OutboxEvent, count=count, kinds=kinds)
