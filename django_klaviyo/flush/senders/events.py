"""Events: rows (and an order's expanded Ordered Product events) packed into bulk requests."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from django.db import connections

from django_klaviyo.exceptions import KlaviyoError
from django_klaviyo.flush.claim import ClaimedRow
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.outcomes import Located, locate_rows
from django_klaviyo.flush.senders.base import (
    EVENTS_PER_REQUEST,
    ITEM_OVERHEAD_BYTES,
    REQUEST_BYTES_BUDGET,
    Parts,
    Request,
    Sender,
)
from django_klaviyo.models import OutboxEvent
from django_klaviyo.rules.events import DERIVED_EVENT_EXTRA_BYTES, expansions
from django_klaviyo.rules.identifiers import profile_key

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


class EventSender(Sender):
    """Rows hold cleaned events (``django_klaviyo.rules.events``): this only packs them
    into bulk requests of at most 1,000 events and 5 MB, one entry per profile. A row
    with more events than one request holds (an order with 1,000 lines) is split into
    several requests, and is sent once all of them are accepted; a retry resends them
    all, which Klaviyo's per-event unique_id makes harmless."""

    kind = Kind.EVENT

    def __init__(self) -> None:
        # The last profile per profile_key, with its identity: rows whose profiles are
        # equal share one dict, and its id() groups them into one bulk entry.
        self._profiles: dict[str, tuple[dict[str, Any], str]] = {}
        self._stored_in_jsonb: bool | None = None

    def _profile(self, key: str, profile: dict[str, Any]) -> tuple[dict[str, Any], str]:
        cached = self._profiles.get(key)
        if cached is not None and cached[0] == profile:
            return cached
        if len(self._profiles) >= 10_000:
            self._profiles.clear()
        # The same identity the client uses to spot repeated unique_ids.
        cached = self._profiles[key] = (profile, profile_key(profile))
        return cached

    def prepare(self, row: ClaimedRow) -> _EventItem:
        payload = row.payload
        profile, identity = self._profile(row.profile_key, payload["profile"])
        time = payload.get("time")
        currency = payload.get("value_currency")
        event = {
            "metric": payload["metric"],
            "properties": payload.get("properties") or {},
            "time": time,
            "value": payload.get("value"),
            "value_currency": currency,
            "unique_id": row.unique_id or None,
        }
        # A historical event (backfill=True): Klaviyo records it without triggering flows.
        backfill = payload.get("backfill") is True
        if backfill:
            event["backfill"] = True
        # Live rows keep their profile dicts alive, so ids cannot repeat within a batch.
        item = _EventItem(profile, identity, id(profile), event)
        if payload.get("item_events") or payload.get("expand"):
            item.expanded = [
                {
                    "metric": metric,
                    "properties": properties or {},
                    "time": time,
                    "value": value,
                    "value_currency": currency,
                    "unique_id": unique_id,
                    **({"backfill": True} if backfill else {}),
                }
                for metric, unique_id, properties, value in expansions(payload)
            ]
            derived = payload.get("item_events")
            if derived and self._jsonb():
                # A version-1 row's Ordered Products were read back from jsonb, which
                # orders an object's keys: the derived ones are sent in the same order,
                # so a request is the same bytes whichever version wrote the row.
                for event in item.expanded[: len(derived["unique_ids"])]:
                    event["properties"] = jsonb_key_order(event["properties"])
            if derived and row.size is not None:
                # The stored text holds each item once; the request repeats it in the
                # item's own event, with a few more keys and the row's time and currency.
                row.size += _derived_size_bound(row.size, item.expanded, payload)
        return item

    def _jsonb(self) -> bool:
        """Whether rows come back from PostgreSQL's jsonb (keys in its order)."""
        if self._stored_in_jsonb is None:
            self._stored_in_jsonb = connections[self.using].vendor == "postgresql"
        return self._stored_in_jsonb

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        requests: list[Request] = []
        pending = []
        for row in rows:
            # A row with one event (no expansion) always fits: only others are measured.
            if row.flush_item.expanded is not None and _too_big(row):
                requests.extend(self._split(row))
            else:
                pending.append(row)
        while pending:
            # Klaviyo fails a whole bulk request that repeats (profile, metric, unique_id),
            # so a row holding a repeat waits for the next request.
            deferred: list[ClaimedRow] = []
            current: list[ClaimedRow] = []
            seen: set[tuple[str, str, str]] = set()
            events = 0
            for row in pending:
                item: _EventItem = row.flush_item
                if not item.expanded:
                    # One event, the common case: its key alone, no list per row.
                    event = item.event
                    unique_id = event["unique_id"]
                    key = (item.identity, event["metric"], unique_id) if unique_id else None
                    if key is not None and key in seen:
                        deferred.append(row)
                        continue
                    if events >= EVENTS_PER_REQUEST:
                        requests.extend(self._sized(current))
                        current, seen, events = [], set(), 0
                    current.append(row)
                    events += 1
                    if key is not None:
                        seen.add(key)
                    continue
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

    def _split(self, row: ClaimedRow) -> list[Request]:
        """The requests one oversized row takes: its events in order, at most 1,000 and
        under the byte budget per request, every part naming the row."""
        item: _EventItem = row.flush_item
        profile_size = len(json.dumps(item.profile, separators=(",", ":")))
        chunks: list[list[dict[str, Any]]] = [[]]
        size = profile_size
        for event in item.events():
            event_size = len(json.dumps(event, separators=(",", ":"))) + ITEM_OVERHEAD_BYTES
            current = chunks[-1]
            if current and (
                len(current) >= EVENTS_PER_REQUEST or size + event_size > REQUEST_BYTES_BUDGET
            ):
                chunks.append([])
                size = profile_size
            chunks[-1].append(event)
            size += event_size
        parts = Parts(len(chunks))
        return [
            Request(
                self.kind,
                None,
                [row],
                [{"profile": dict(item.profile), "events": events}],
                [[row] * len(events)],
                parts=parts,
            )
            for events in chunks
        ]

    def _sized(self, rows: list[ClaimedRow]) -> list[Request]:
        """One request for ``rows``, or halves of them until each fits in 5 MB.

        The rows' stored sizes bound the body's when known (each row's payload holds its
        events and its profile); only a request they cannot clear is measured, once per
        request rather than per event.
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
            key = row.flush_item.entry_key
            group = entries.get(key)
            if group is None:
                entries[key] = [row]
            else:
                group.append(row)
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

    def send(self, ctx: SendContext, request: Request) -> Any:
        # Rows were cleaned when written: the client only assembles the request.
        return ctx.client.send_event_entries(request.body)

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        return locate_rows(err, request.index, pointer=_ENTRY_POINTER, field=_ENTRY_FIELD)


def jsonb_key_order(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with its keys in the order PostgreSQL's jsonb stores them: shorter keys
    (in UTF-8 bytes) first, keys of one length in byte order."""
    return dict(sorted(obj.items(), key=_jsonb_key))


def _jsonb_key(item: tuple[str, Any]) -> tuple[int, bytes]:
    encoded = item[0].encode("utf-8")
    return len(encoded), encoded


def _derived_size_bound(stored: int, expanded: list[dict[str, Any]], payload: Any) -> int:
    """An upper bound of what the events derived from a row's Items add to its share of a
    request: at most the stored text again (the items, the unique_ids), plus per event the
    added keys and the row's time and currency, each escaped as the client sends them."""
    shared = len(json.dumps(payload.get("time"))) + len(json.dumps(payload.get("value_currency")))
    shared += len(json.dumps(payload["properties"].get("OrderId")))
    shared += len(json.dumps(payload["item_events"]["metric"]))
    return stored + len(expanded) * (DERIVED_EVENT_EXTRA_BYTES + shared)


def _too_big(row: ClaimedRow) -> bool:
    """More events than one request holds, or (known to be) more bytes."""
    item: _EventItem = row.flush_item
    if item.count > EVENTS_PER_REQUEST:
        return True
    return item.expanded is not None and (row.size or 0) > REQUEST_BYTES_BUDGET
