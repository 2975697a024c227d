"""The sandbox's reporting API: ``GET /api/metrics``, campaign and flow values reports, flow
series reports and metric aggregates, with figures derived from the events it received.

The figures are deterministic (docs/sandbox.md, "Reports"):

* metrics: one per metric name among the events received, id ``M`` + 5 hex digits of the
  name's SHA-1;
* the first report request adds the fixture campaigns and flows below to the account (each
  campaign has one message, id ``<campaign id>-m``; each flow one, ``<flow id>-m``);
* Placed Orders are attributed by their ``$attributed_flow`` / ``$attributed_message``
  properties when sent, else in turn by their order of arrival: the 1st to the first
  campaign, the 2nd to the second, the 3rd and 4th to the two flows, the 5th to nothing,
  and so on;
* a report's conversions and conversion value are those orders (count, sum of ``value``)
  inside its timeframe; recipients are ten a profile of the account, opens and clicks follow
  from the conversions (3 opens and 2 clicks a conversion, plus one of each), so each rate
  is a number a chart can show.

The reporting limits (1/s, 2/m, 225/d) are enforced by the server like every operation's
(``--time-scale`` shrinks them).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any

from django_klaviyo.testing.openapi import parse_date_time
from django_klaviyo.testing.sandbox.jsonapi import Handler, Request, Response, invalid, registrar
from django_klaviyo.testing.sandbox.state import SandboxState

ROUTES: dict[str, Handler] = {}
handles = registrar(ROUTES)

PLACED_ORDER = "Placed Order"
FIXTURE_CAMPAIGNS = ("Spring sale", "Weekly newsletter")
FIXTURE_FLOWS = ("Welcome series", "Abandoned cart")
STEPS = {"daily": dt.timedelta(days=1), "hourly": dt.timedelta(hours=1)}
STEPS |= {"day": STEPS["daily"], "hour": STEPS["hourly"]}
STEPS |= {"weekly": dt.timedelta(days=7), "week": dt.timedelta(days=7)}
STEPS |= {"monthly": dt.timedelta(days=30), "month": dt.timedelta(days=30)}


def metric_id(name: str) -> str:
    return "M" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:5].upper()  # noqa: S324


def _fixtures(state: SandboxState) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The fixture campaigns and flows, added to the account on first use."""
    campaigns = {c["name"]: c for c in state.campaigns("email")}
    flows = {f["name"]: f for f in state.flows()}
    for name in FIXTURE_CAMPAIGNS:
        if name not in campaigns:
            campaigns[name] = state.add_campaign(name, status="Sent")
    for name in FIXTURE_FLOWS:
        if name not in flows:
            flows[name] = state.add_flow(name)
    return [campaigns[n] for n in FIXTURE_CAMPAIGNS], [flows[n] for n in FIXTURE_FLOWS]


def _aware(value: str) -> dt.datetime:
    parsed = parse_date_time(value)
    assert parsed is not None  # the schema's date-time format was already checked
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _orders(state: SandboxState) -> list[dict[str, Any]]:
    """Every Placed Order with its time, value and attribution (``flow`` / ``message``)."""
    campaigns, flows = _fixtures(state)
    turns: list[tuple[str, str] | None] = [
        ("message", f"{campaigns[0]['id']}-m"),
        ("message", f"{campaigns[1]['id']}-m"),
        ("flow", flows[0]["id"]),
        ("flow", flows[1]["id"]),
        None,
    ]
    orders = []
    for i, event in enumerate(state.events(PLACED_ORDER)):
        properties = event.get("properties") or {}
        attributed: dict[str, str] = {}
        if properties.get("$attributed_flow"):
            attributed["flow"] = str(properties["$attributed_flow"])
        elif properties.get("$attributed_message"):
            attributed["message"] = str(properties["$attributed_message"])
        elif turns[i % len(turns)] is not None:
            key, value = turns[i % len(turns)]  # type: ignore[misc]
            attributed[key] = value
        orders.append(
            {
                "time": _aware(event["time"]),
                "value": float(event.get("value") or 0),
                **attributed,
            }
        )
    return orders


def _timeframe(attributes: dict[str, Any], now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    frame = attributes["timeframe"]
    if "key" not in frame:
        start, end = _aware(frame["start"]), _aware(frame["end"])
    else:
        days = {"today": 0, "yesterday": 1, "last_7_days": 7, "last_week": 7}.get(frame["key"], 30)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        start, end = midnight - dt.timedelta(days=days), now
    if end <= start:
        raise invalid("The timeframe's end must be after its start.", "/data/attributes/timeframe")
    if end - start > dt.timedelta(days=366):
        raise invalid("The timeframe is at most 1 year.", "/data/attributes/timeframe")
    return start, end


def _statistics(names: Iterable[str], orders: list[dict[str, Any]], recipients: int) -> dict:
    conversions = len(orders)
    value = round(sum(o["value"] for o in orders), 2)
    opens, clicks = conversions * 3 + 1, conversions * 2 + 1
    known = {
        "conversions": conversions,
        "conversion_uniques": conversions,
        "conversion_value": value,
        "recipients": recipients,
        "delivered": recipients,
        "opens": opens,
        "opens_unique": min(opens, recipients),
        "clicks": clicks,
        "clicks_unique": min(clicks, recipients),
        "open_rate": round(min(1.0, opens / recipients), 4),
        "click_rate": round(min(1.0, clicks / recipients), 4),
        "conversion_rate": round(min(1.0, conversions / recipients), 4),
        "revenue_per_recipient": round(value / recipients, 4),
        "average_order_value": round(value / conversions, 2) if conversions else 0.0,
    }
    return {name: known.get(name, 0) for name in names}


def _recipients(state: SandboxState) -> int:
    """Each campaign and flow reached ten recipients a profile of the account."""
    return max(1, 10 * len(state.profiles()))


def _check_metric(state: SandboxState, metric: str, pointer: str) -> None:
    if metric != metric_id(PLACED_ORDER) or not state.events(PLACED_ORDER):
        raise invalid(f"Metric {metric!r} does not exist or is not a conversion metric.", pointer)


# --- GET /api/metrics -----------------------------------------------------------------------


@handles("get_metrics")
def get_metrics(state: SandboxState, request: Request) -> Response:
    names = sorted(state.metric_counts())
    data = [
        {
            "type": "metric",
            "id": metric_id(name),
            "attributes": {"name": name, "created": None, "updated": None, "integration": None},
            "links": {"self": f"{request.base_url}/api/metrics/{metric_id(name)}/"},
        }
        for name in names
    ]
    return Response(200, {"data": data, "links": {"self": f"{request.base_url}/api/metrics/"}})


# --- values reports -------------------------------------------------------------------------


def _values_report(state: SandboxState, request: Request, kind: str) -> Response:
    attributes = request.body["data"]["attributes"]
    _check_metric(
        state, attributes["conversion_metric_id"], "/data/attributes/conversion_metric_id"
    )
    now = dt.datetime.now(dt.timezone.utc)
    start, end = _timeframe(attributes, now)
    campaigns, flows = _fixtures(state)
    orders = [o for o in _orders(state) if start <= o["time"] < end]
    recipients = _recipients(state)
    results = []
    owners = campaigns if kind == "campaign" else flows
    for owner in owners:
        message = f"{owner['id']}-m"
        mine = [
            o
            for o in orders
            if o.get("message" if kind == "campaign" else "flow")
            in (message if kind == "campaign" else owner["id"],)
        ]
        results.append(
            {
                "groupings": {
                    f"{kind}_id": owner["id"],
                    f"{kind}_message_id": message,
                    "send_channel": "email",
                },
                "statistics": _statistics(attributes["statistics"], mine, recipients),
            }
        )
    body = {
        "data": {
            "type": f"{kind}-values-report",
            "id": state.new_id(),
            "attributes": {"results": results},
        },
        "links": {"self": f"{request.base_url}{request.path}"},
    }
    return Response(200, body)


@handles("query_campaign_values")
def query_campaign_values(state: SandboxState, request: Request) -> Response:
    return _values_report(state, request, "campaign")


@handles("query_flow_values")
def query_flow_values(state: SandboxState, request: Request) -> Response:
    return _values_report(state, request, "flow")


def _buckets(start: dt.datetime, end: dt.datetime, step: dt.timedelta) -> list[dt.datetime]:
    first = start.replace(minute=0, second=0, microsecond=0)
    if step >= dt.timedelta(days=1):
        first = first.replace(hour=0)
    out = []
    while first < end:
        out.append(first)
        first += step
    return out


def _index(buckets: list[dt.datetime], step: dt.timedelta, when: dt.datetime) -> int | None:
    for i, begin in enumerate(buckets):
        if begin <= when < begin + step:
            return i
    return None


@handles("query_flow_series")
def query_flow_series(state: SandboxState, request: Request) -> Response:
    attributes = request.body["data"]["attributes"]
    _check_metric(
        state, attributes["conversion_metric_id"], "/data/attributes/conversion_metric_id"
    )
    start, end = _timeframe(attributes, dt.datetime.now(dt.timezone.utc))
    step = STEPS[attributes["interval"]]
    if attributes["interval"] == "daily" and end - start > dt.timedelta(days=60):
        raise invalid("A daily series covers at most 60 days.", "/data/attributes/timeframe")
    buckets = _buckets(start, end, step)
    _, flows = _fixtures(state)
    recipients = _recipients(state)
    orders = [o for o in _orders(state) if start <= o["time"] < end]
    results = []
    for flow in flows:
        per_bucket: list[list[dict[str, Any]]] = [[] for _ in buckets]
        for order in orders:
            i = _index(buckets, step, order["time"])
            if order.get("flow") == flow["id"] and i is not None:
                per_bucket[i].append(order)
        stats: dict[str, list[Any]] = {name: [] for name in attributes["statistics"]}
        for chunk in per_bucket:
            figures = _statistics(attributes["statistics"], chunk, recipients)
            for name in stats:
                stats[name].append(figures[name])
        results.append(
            {
                "groupings": {"flow_id": flow["id"], "flow_message_id": f"{flow['id']}-m"},
                "statistics": stats,
            }
        )
    body = {
        "data": {
            "type": "flow-series-report",
            "id": state.new_id(),
            "attributes": {
                "results": results,
                "date_times": [b.isoformat() for b in buckets],
            },
        },
        "links": {"self": f"{request.base_url}{request.path}"},
    }
    return Response(200, body)


# --- metric aggregates ----------------------------------------------------------------------


def _aggregate_range(filters: list[str]) -> tuple[dt.datetime, dt.datetime]:
    bounds: dict[str, dt.datetime] = {}
    for text in filters:
        for op in ("greater-or-equal", "less-than"):
            prefix = f"{op}(datetime,"
            if text.startswith(prefix) and text.endswith(")"):
                bounds[op] = _aware(text[len(prefix) : -1])
    if set(bounds) != {"greater-or-equal", "less-than"}:
        raise invalid(
            "filter must hold greater-or-equal(datetime,...) and less-than(datetime,...).",
            "/data/attributes/filter",
        )
    return bounds["greater-or-equal"], bounds["less-than"]


@handles("query_metric_aggregates")
def query_metric_aggregates(state: SandboxState, request: Request) -> Response:
    attributes = request.body["data"]["attributes"]
    _check_metric(state, attributes["metric_id"], "/data/attributes/metric_id")
    start, end = _aggregate_range(attributes["filter"])
    step = STEPS[attributes.get("interval") or "day"]
    buckets = _buckets(start, end, step)
    by = attributes.get("by") or []
    key = {"$attributed_flow": "flow", "$attributed_message": "message"}.get(by[0]) if by else None
    if by and key is None:
        raise invalid(
            "The sandbox groups by $attributed_flow or $attributed_message only.",
            "/data/attributes/by",
        )
    groups: dict[str, list[list[float]]] = {}
    for order in _orders(state):
        i = _index(buckets, step, order["time"])
        if i is None:
            continue
        group = order.get(key, "") if key else ""
        sums = groups.setdefault(group, [[0.0] * len(buckets), [0.0] * len(buckets)])
        sums[0][i] += order["value"]
        sums[1][i] += 1
    if not by:
        groups.setdefault("", [[0.0] * len(buckets), [0.0] * len(buckets)])
    data = []
    for group, (values, counts) in sorted(groups.items()):
        measurements: dict[str, list[float]] = {}
        for name in attributes["measurements"]:
            series = values if name == "sum_value" else counts
            measurements[name] = [round(v, 2) for v in series]
        data.append({"dimensions": [group] if by else [], "measurements": measurements})
    body = {
        "data": {
            "type": "metric-aggregate",
            "id": state.new_id(),
            "attributes": {"dates": [b.isoformat() for b in buckets], "data": data},
        },
        "links": {"self": f"{request.base_url}{request.path}", "next": None},
    }
    return Response(200, body)
