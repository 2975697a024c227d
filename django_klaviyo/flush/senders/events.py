"""Events: rows (and an order's expanded Ordered Product events) packed into bulk requests."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils.dateparse import parse_datetime

from django_klaviyo import payloads
from django_klaviyo.exceptions import KlaviyoError
from django_klaviyo.flush.claim import ClaimedRow
from django_klaviyo.flush.outcomes import Located, locate_rows
from django_klaviyo.flush.senders.base import (
    EVENTS_PER_REQUEST,
    ITEM_OVERHEAD_BYTES,
    REQUEST_BYTES_BUDGET,
    InvalidRow,
    Request,
    Sender,
    is_mapping,
    optional_str,
    require_mapping,
)
from django_klaviyo.identifiers import profile_key
from django_klaviyo.models import OutboxEvent

Kind = OutboxEvent.Kind

# Where an error names one entry (and event) of the bulk request.
_ENTRY_POINTER = re.compile(r"events-bulk-create/data/(\d+)(?:/attributes/events/data/(\d+))?")
_ENTRY_FIELD = re.compile(r"^entries\[(\d+)\](?:\.events\[(\d+)\])?")


@dataclass(slots=True)
class _EventItem:
    profile: dict[str, Any]
    # The same identity the client uses to spot repeated unique_ids.
    identity: str
    # Rows with equal profiles share one entry of the bulk request.
    entry_key: Any
    # The row's own event, then those of its payload's "expand" (None: none), all for
    # this profile. Few objects per row: each one lives for the whole batch, and the
    # garbage collector's passes over them were a measurable share of the flush.
    event: dict[str, Any]
    expanded: list[dict[str, Any]] | None = None

    @property
    def count(self) -> int:
        return 1 + len(self.expanded) if self.expanded else 1

    def events(self) -> list[dict[str, Any]]:
        return [self.event, *self.expanded] if self.expanded else [self.event]

    def repeat_keys(self) -> list[tuple[str, str, str]]:
        """(profile, metric, unique_id) of each event with a unique_id: Klaviyo fails a
        whole request that holds one twice."""
        if not self.expanded:  # the common case, once per row and plan
            unique_id = self.event["unique_id"]
            return [(self.identity, self.event["metric"], unique_id)] if unique_id else []
        return [
            (self.identity, e["metric"], e["unique_id"]) for e in self.events() if e["unique_id"]
        ]


_EXPAND_KEYS = frozenset({"metric", "unique_id", "properties", "value"})


def _metric(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) >= 128:
        raise InvalidRow(f"{where} must be a non-empty string shorter than 128 characters.")
    return value


def _properties(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not is_mapping(value):
        raise InvalidRow(f"{where} must be an object.")
    return value


def _event_value(value: Any, where: str) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRow(f"{where} must be a number or null.")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRow(f"{where} must be a finite number.")
    return value


def _event_time(value: Any) -> str | None:
    """An ISO-8601 time with an offset, as the bulk endpoint takes it (None: now)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRow("payload['time'] must be an ISO-8601 string or null.")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        # Python 3.10's fromisoformat takes only its own output ("Z" is not in it).
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None
    if parsed is None:
        raise InvalidRow(f"payload['time'] {value!r} is not an ISO-8601 date-time.")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidRow(f"payload['time'] {value!r} has no UTC offset.")
    return value if value[10:11] == "T" else parsed.isoformat()


class EventSender(Sender):
    kind = Kind.EVENT

    def __init__(self) -> None:
        # The last cleaned profile per profile_key, with the raw dict it came from: an
        # order's events repeat one profile, and validating an email is the costliest
        # step of preparing an event. Rows whose profiles are equal share the cleaned
        # dict, and its identity groups them into one bulk entry.
        self._profiles: dict[str, tuple[Mapping[str, Any], dict[str, Any], str]] = {}

    def _clean_profile(self, key: str, raw: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        cached = self._profiles.get(key)
        if cached is not None and cached[0] == raw:
            return cached[1], cached[2]
        profile = payloads.clean_event_profile(raw)
        # The same identity the client uses to spot repeated unique_ids.
        identity = profile_key(profile)
        if len(self._profiles) >= 10_000:
            self._profiles.clear()
        self._profiles[key] = (raw, profile, identity)
        return profile, identity

    def prepare(self, row: ClaimedRow) -> _EventItem:
        """Validate everything the client's trusted path does not check again."""
        payload = row.payload
        profile, identity = self._clean_profile(
            row.profile_key, require_mapping(payload, "profile")
        )
        metric = _metric(payload.get("metric") or row.metric, "metric")
        time = _event_time(payload.get("time"))
        currency = optional_str(payload, "value_currency")
        event = {
            "metric": metric,
            "properties": _properties(payload.get("properties"), "payload['properties']"),
            "time": time,
            "value": _event_value(payload.get("value"), "payload['value']"),
            "value_currency": currency,
            "unique_id": row.unique_id or None,
        }
        # A historical event (api backfill=True): recorded without triggering flows.
        backfill = payload.get("backfill") is True
        if backfill:
            event["backfill"] = True
        # Live rows keep their cleaned dicts alive, so ids cannot repeat within a batch.
        item = _EventItem(profile, identity, id(profile), event)
        expand = payload.get("expand")
        if expand is not None:
            item.expanded = self._expanded(expand, time, currency, backfill)
            keys = item.repeat_keys()
            if len(set(keys)) < len(keys):
                raise InvalidRow(
                    "two of the row's events share a metric and unique_id; Klaviyo would "
                    "reject every request carrying them."
                )
            if item.count > EVENTS_PER_REQUEST:
                raise InvalidRow(
                    f"the row carries {item.count} events; a request holds at most "
                    f"{EVENTS_PER_REQUEST}."
                )
        return item

    def _expanded(
        self, expand: Any, time: str | None, currency: str | None, backfill: bool = False
    ) -> list[dict]:
        """The extra events of an ``expand`` list: the row's profile, time and currency."""
        if not isinstance(expand, list):
            raise InvalidRow("payload['expand'] must be a list.")
        events = []
        for i, item in enumerate(expand):
            where = f"payload['expand'][{i}]"
            if not isinstance(item, Mapping):
                raise InvalidRow(f"{where} must be an object.")
            unknown = sorted(set(item) - _EXPAND_KEYS)
            if unknown:
                raise InvalidRow(f"{where} has an unknown key {unknown[0]!r}.")
            unique_id = item.get("unique_id")
            if not isinstance(unique_id, str) or not unique_id:
                raise InvalidRow(f"{where}['unique_id'] must be a non-empty string.")
            events.append(
                {
                    "metric": _metric(item.get("metric"), f"{where}['metric']"),
                    "properties": _properties(item.get("properties"), f"{where}['properties']"),
                    "time": time,
                    "value": _event_value(item.get("value"), f"{where}['value']"),
                    "value_currency": currency,
                    "unique_id": unique_id,
                    **({"backfill": True} if backfill else {}),
                }
            )
        return events

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        requests: list[Request] = []
        pending = rows
        while pending:
            # Klaviyo fails a whole bulk request that repeats (profile, metric, unique_id),
            # so a row holding a repeat waits for the next request.
            deferred: list[ClaimedRow] = []
            current: list[ClaimedRow] = []
            seen: set[tuple[str, str, str]] = set()
            events = 0
            for row in pending:
                item: _EventItem = row.flush_item
                keys = item.repeat_keys()
                if keys and not seen.isdisjoint(keys):
                    deferred.append(row)
                    continue
                count = item.count
                if events + count > EVENTS_PER_REQUEST:
                    requests.extend(self._sized(current))
                    current, seen, events = [], set(), 0
                current.append(row)
                events += count
                seen.update(keys)
            if current:
                requests.extend(self._sized(current))
            pending = deferred
        return requests

    def _sized(self, rows: list[ClaimedRow]) -> list[Request]:
        """One request for ``rows``, or halves of them until each fits in 5 MB.

        The rows' stored sizes bound the body's when known (each row's payload holds its
        events and its profile); only a request they cannot clear is measured, once per
        request rather than per event. A single row too large for any request still goes
        out alone, and the client's size check dead-letters it.
        """
        request = self._request(rows)
        if len(rows) == 1:
            return [request]
        overhead = ITEM_OVERHEAD_BYTES * (len(request.index) + sum(len(i) for i in request.index))
        sizes = [row.size for row in rows]
        if None not in sizes and sum(sizes) + overhead <= REQUEST_BYTES_BUDGET:
            return [request]
        size = len(json.dumps(request.body, separators=(",", ":"), default=str))
        if size + overhead <= REQUEST_BYTES_BUDGET:
            return [request]
        half = len(rows) // 2
        return self._sized(rows[:half]) + self._sized(rows[half:])

    def _request(self, rows: list[ClaimedRow]) -> Request:
        entries: dict[Any, list[ClaimedRow]] = {}
        for row in rows:
            entries.setdefault(row.flush_item.entry_key, []).append(row)
        body = []
        index = []
        ordered = []
        for entry_rows in entries.values():
            events = []
            # One row per event, so an error pointing at an event finds its row.
            event_rows = []
            for row in entry_rows:
                item = row.flush_item
                events.append(item.event)
                event_rows.append(row)
                if item.expanded:
                    events += item.expanded
                    event_rows += [row] * len(item.expanded)
            # A copy: entries must not share one mutable dict with the cache.
            body.append({"profile": dict(entry_rows[0].flush_item.profile), "events": events})
            index.append(event_rows)
            ordered.extend(entry_rows)
        return Request(self.kind, None, ordered, body, index)

    def send(self, client: Any, request: Request) -> Any:
        # Every profile and event was validated by prepare(): the client only wraps them.
        return client.bulk_create_events(request.body, validated=True)

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        return locate_rows(err, request.index, pointer=_ENTRY_POINTER, field=_ENTRY_FIELD)
