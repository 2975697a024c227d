"""The sandbox's segments: ``GET /api/segments``, ``GET /api/segments/{id}`` (with
``additional-fields[segment]=profile_count``), ``GET /api/segments/{id}/profiles`` and
``POST /api/segment-series-reports`` (daily ``total_members`` over ``last_7_days`` or
``last_30_days``, ending today: on each day, the members created by then).

Every sandbox account starts with three segments whose members are derived from what it
received, so a demo's flush fills them with no setup (docs/sandbox.md):

==========  ===========  ===========================================================
id          name         members
==========  ===========  ===========================================================
``SbxVIP``  VIP          profiles whose Placed Order values add up to 100 or more
``SbxBuy``  Customers    profiles with at least one Placed Order
``SbxAll``  Everyone     every profile
==========  ===========  ===========================================================

Tests add their own with ``segment_store(state).add(name, profile_ids=[...])`` (fixed
members) or ``rule=`` (a function of the state). Members are listed in the order the
profiles were created, so pages are deterministic.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, time, timedelta, timezone
from typing import Any

from django_klaviyo.testing.sandbox.jsonapi import (
    ApiError,
    Handler,
    Request,
    Response,
    filters,
    invalid,
    matches,
    paginate,
    parse_filter,
    registrar,
    rel_links,
)
from django_klaviyo.testing.sandbox.records import now_iso
from django_klaviyo.testing.sandbox.state import SandboxState

ROUTES: dict[str, Handler] = {}
handles = registrar(ROUTES)

VIP_THRESHOLD = 100.0
Rule = Callable[[SandboxState], list[str]]


def _placed_order_totals(state: SandboxState) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for event in state.events("Placed Order"):
        totals[event["profile_id"]] += float(event["value"] or 0)
    return totals


def _in_creation_order(state: SandboxState, chosen: set[str]) -> list[str]:
    return [pid for pid in state.profiles() if pid in chosen]


def vip_members(state: SandboxState) -> list[str]:
    totals = _placed_order_totals(state)
    return _in_creation_order(state, {p for p, v in totals.items() if v >= VIP_THRESHOLD})


def customer_members(state: SandboxState) -> list[str]:
    return _in_creation_order(state, set(_placed_order_totals(state)))


def everyone(state: SandboxState) -> list[str]:
    return list(state.profiles())


FIXTURE: tuple[tuple[str, str, Rule], ...] = (
    ("SbxVIP", "VIP", vip_members),
    ("SbxBuy", "Customers", customer_members),
    ("SbxAll", "Everyone", everyone),
)


class SegmentStore:
    """The account's segments by id: a name, and a rule or a fixed member list."""

    def __init__(self, state: SandboxState) -> None:
        self.lock = threading.RLock()
        self.state = state
        self.segments: dict[str, dict[str, Any]] = {}
        for segment_id, name, rule in FIXTURE:
            self.add(name, rule=rule, segment_id=segment_id)

    def add(
        self,
        name: str,
        *,
        profile_ids: list[str] | None = None,
        rule: Rule | None = None,
        segment_id: str | None = None,
    ) -> dict[str, Any]:
        """A new segment; ``profile_ids`` fixes its members, ``rule`` derives them."""
        with self.lock:
            stamp = now_iso()
            segment_id = segment_id or self.state.new_id(6)
            fixed = list(profile_ids or [])
            self.segments[segment_id] = {
                "id": segment_id,
                "name": name,
                "created": stamp,
                "updated": stamp,
                "rule": rule or (lambda _state: list(fixed)),
            }
            return {"id": segment_id, "name": name}

    def remove(self, segment_id: str) -> None:
        with self.lock:
            del self.segments[segment_id]

    def members(self, segment_id: str) -> list[str]:
        with self.lock:
            rule = self.segments[segment_id]["rule"]
        return [pid for pid in rule(self.state) if self.state.profile(pid) is not None]

    def summary(self) -> dict[str, int]:
        return {s["name"]: len(self.members(i)) for i, s in list(self.segments.items())}


def segment_store(state: SandboxState) -> SegmentStore:
    store = state.extensions.get("segments")
    if store is None:
        store = state.extensions.setdefault("segments", SegmentStore(state))
    return store  # type: ignore[no-any-return]


def _segment_resource(segment: dict[str, Any], base: str) -> dict[str, Any]:
    return {
        "type": "segment",
        "id": segment["id"],
        "attributes": {
            "name": segment["name"],
            "definition": None,
            "created": segment["created"],
            "updated": segment["updated"],
            "is_active": True,
            "is_processing": False,
            "is_starred": False,
        },
        "relationships": {
            "profiles": {"links": rel_links(base, "segments", segment["id"], "profiles")},
        },
        "links": {"self": f"{base}/api/segments/{segment['id']}/"},
    }


def _get(store: SegmentStore, segment_id: str) -> dict[str, Any]:
    with store.lock:
        segment = store.segments.get(segment_id)
    if segment is None:
        raise ApiError(404, "not_found", "Not found.", pointer=None, parameter="id")
    return segment


@handles("get_segments")
def get_segments(state: SandboxState, request: Request) -> Response:
    store = segment_store(state)
    conditions = filters(request, {"name": ("any", "equals"), "id": ("any", "equals")})
    with store.lock:
        items = [s for s in store.segments.values() if matches(s, conditions)]
    page, links = paginate(request, items, default=10, maximum=10)
    data = [_segment_resource(s, request.base_url) for s in page]
    return Response(200, {"data": data, "links": links})


@handles("get_segment")
def get_segment(state: SandboxState, request: Request) -> Response:
    store = segment_store(state)
    segment = _get(store, request.path_params["id"])
    resource = _segment_resource(segment, request.base_url)
    if request.query.get("additional-fields[segment]") == "profile_count":
        resource["attributes"]["profile_count"] = len(store.members(segment["id"]))
    return Response(200, {"data": resource, "links": resource["links"]})


@handles("get_profiles_for_segment")
def get_profiles_for_segment(state: SandboxState, request: Request) -> Response:
    store = segment_store(state)
    segment = _get(store, request.path_params["id"])
    profiles = [state.profile(pid) for pid in store.members(segment["id"])]
    page, links = paginate(request, [p for p in profiles if p], default=20, maximum=100)
    wanted = request.query.get("fields[profile]")
    names = wanted.split(",") if wanted else ["email", "external_id", "phone_number"]
    data = [
        {
            "type": "profile",
            "id": p["id"],
            "attributes": {name: p.get(name) for name in names},
            "links": {"self": f"{request.base_url}/api/profiles/{p['id']}/"},
        }
        for p in page
    ]
    return Response(200, {"data": data, "links": links})


SERIES_DAYS = {"last_7_days": 7, "last_30_days": 30}


@handles("query_segment_series")
def query_segment_series(state: SandboxState, request: Request) -> Response:
    attributes = request.body["data"]["attributes"]
    days = SERIES_DAYS.get((attributes.get("timeframe") or {}).get("key", ""))
    if days is None or attributes["interval"] != "daily":
        raise invalid(
            "The sandbox answers daily series over last_7_days or last_30_days.",
            "/data/attributes/timeframe",
        )
    store = segment_store(state)
    ids: list[str] = []
    for op, name, value in parse_filter(attributes.get("filter") or ""):
        if name != "segment_id" or op not in ("any", "equals"):
            raise invalid(f"Unsupported filter on {name!r}.", "/data/attributes/filter")
        ids += value if isinstance(value, list) else [value]
    if len(ids) > 100:
        raise invalid("Max of 100 segments per ANY filter.", "/data/attributes/filter")
    today = datetime.now(timezone.utc).date()
    dates = [today - timedelta(days=days - 1 - i) for i in range(days)]
    created = {pid: str(p.get("created") or "")[:10] for pid, p in state.profiles().items()}
    results = []
    for segment_id in ids:
        _get(store, segment_id)
        joined = sorted(created.get(pid, "") for pid in store.members(segment_id))
        totals = [sum(1 for c in joined if c <= d.isoformat()) for d in dates]
        results.append(
            {"groupings": {"segment_id": segment_id}, "statistics": {"total_members": totals}}
        )
    stamps = [datetime.combine(d, time(), timezone.utc).isoformat() for d in dates]
    data = {
        "type": "segment-series-report",
        "attributes": {"results": results, "date_times": stamps},
    }
    return Response(200, {"data": data, "links": {"self": f"{request.base_url}{request.path}"}})
