"""Reporting bodies: ``POST /api/campaign-values-reports``, ``/api/flow-values-reports``,
``/api/flow-series-reports`` and ``/api/metric-aggregates`` (revision 2026-07-15)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

# What the insights store of each campaign or flow message (the spec's statistics enum).
VALUES_STATISTICS = (
    "conversions",
    "conversion_value",
    "recipients",
    "open_rate",
    "click_rate",
    "revenue_per_recipient",
)
# A series stores fewer: the revenue a flow brought each day and who it reached.
SERIES_STATISTICS = ("conversions", "conversion_value", "recipients")
# Klaviyo requires these groupings (and groups by them when none are given).
CAMPAIGN_GROUP_BY = ("campaign_id", "campaign_message_id", "send_channel")
FLOW_GROUP_BY = ("flow_id", "flow_message_id", "send_channel")
SERIES_INTERVALS = ("daily", "hourly", "monthly", "weekly")
AGGREGATE_INTERVALS = ("day", "hour", "month", "week")
AGGREGATE_MEASUREMENTS = ("count", "sum_value", "unique")


def _stamp(value: dt.datetime) -> str:
    """Seconds, no microseconds; an aware time keeps its offset (Klaviyo ignores it for a
    report's timeframe and uses the account's timezone)."""
    return value.replace(microsecond=0).isoformat()


def timeframe(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    """A custom timeframe (the spec's ``CustomTimeframe``)."""
    return {"start": _stamp(start), "end": _stamp(end)}


def build_values_report(
    kind: str,
    *,
    start: dt.datetime,
    end: dt.datetime,
    conversion_metric_id: str,
    statistics: Sequence[str] = VALUES_STATISTICS,
) -> dict[str, Any]:
    """A ``campaign-values-report`` or ``flow-values-report`` query."""
    group_by = CAMPAIGN_GROUP_BY if kind == "campaign" else FLOW_GROUP_BY
    return {
        "data": {
            "type": f"{kind}-values-report",
            "attributes": {
                "statistics": list(statistics),
                "timeframe": timeframe(start, end),
                "conversion_metric_id": conversion_metric_id,
                "group_by": list(group_by),
            },
        }
    }


def build_flow_series_report(
    *,
    start: dt.datetime,
    end: dt.datetime,
    conversion_metric_id: str,
    interval: str = "daily",
    statistics: Sequence[str] = SERIES_STATISTICS,
) -> dict[str, Any]:
    return {
        "data": {
            "type": "flow-series-report",
            "attributes": {
                "statistics": list(statistics),
                "timeframe": timeframe(start, end),
                "interval": interval,
                "conversion_metric_id": conversion_metric_id,
                "group_by": ["flow_id", "flow_message_id"],
            },
        }
    }


def build_metric_aggregate(
    *,
    metric_id: str,
    start: dt.datetime,
    end: dt.datetime,
    measurements: Sequence[str] = ("sum_value", "count"),
    interval: str = "day",
    by: Sequence[str] = (),
    timezone: str = "UTC",
    page_cursor: str | None = None,
) -> dict[str, Any]:
    """A ``metric-aggregate`` query: ``[start, end)`` by ``interval``, split ``by`` the
    given dimensions (e.g. ``$attributed_flow``)."""
    naive = "%Y-%m-%dT%H:%M:%S"
    attributes: dict[str, Any] = {
        "metric_id": metric_id,
        "measurements": list(measurements),
        "interval": interval,
        "filter": [
            f"greater-or-equal(datetime,{start.astimezone(dt.timezone.utc).strftime(naive)})",
            f"less-than(datetime,{end.astimezone(dt.timezone.utc).strftime(naive)})",
        ],
        "timezone": timezone,
    }
    if by:
        attributes["by"] = list(by)
    if page_cursor:
        attributes["page_cursor"] = page_cursor
    return {"data": {"type": "metric-aggregate", "attributes": attributes}}
