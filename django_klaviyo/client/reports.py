"""The account's figures: metrics, campaign and flow reports, metric aggregates (revision
2026-07-15). Every report is a read, so each request is idempotent; ``max_wait`` lets the
caller stop (``KlaviyoRateLimitError``, nothing sent) rather than wait out the reporting
limits (1/s, 2/m, 225/d), and resume on its next run (``insights.reports``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from django_klaviyo.client.bodies.reports import (
    AGGREGATE_INTERVALS,
    SERIES_INTERVALS,
    build_flow_series_report,
    build_metric_aggregate,
    build_values_report,
)
from django_klaviyo.client.pagination import collection_params
from django_klaviyo.exceptions import KlaviyoValidationError

if TYPE_CHECKING:
    from django_klaviyo.client.transport import Transport

REPORT_OPERATIONS = {
    "campaign": "query_campaign_values",
    "flow": "query_flow_values",
}
MAX_TIMEFRAME = dt.timedelta(days=365)


def _check_timeframe(start: dt.datetime, end: dt.datetime, longest: dt.timedelta) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise KlaviyoValidationError("start and end must be aware datetimes.", field="timeframe")
    if not start < end:
        raise KlaviyoValidationError("start must be before end.", field="timeframe")
    if end - start > longest:
        raise KlaviyoValidationError(
            f"The timeframe is longer than Klaviyo allows ({longest.days} days).",
            field="timeframe",
        )


class ReportMethods:
    """Mixed into ``KlaviyoClient``, which provides the plumbing declared here."""

    _transport: Transport

    if TYPE_CHECKING:

        def _send(self, operation: str, method: str, path: str, **kwargs: Any) -> Any: ...

        def _data(self, document: Any) -> dict[str, Any]: ...

        def _collection(
            self, operation: str, path: str, params: Mapping[str, str] | None
        ) -> Iterator[dict[str, Any]]: ...

    def get_metrics(self) -> Iterator[dict[str, Any]]:
        """``GET /api/metrics``, all pages (cursor only). Klaviyo filters metrics by
        integration only, so a name is matched by the caller."""
        params = collection_params(fields={"metric": ("name", "integration")})
        return self._collection("get_metrics", "/api/metrics", params)

    def find_metric_id(self, name: str) -> str | None:
        """The id of the metric named ``name`` (e.g. "Placed Order"), None when the account
        has none yet (no such event was ever received). Metrics made by an integration
        (Shopify's Placed Order) come before the API's own when both exist."""
        found = [m for m in self.get_metrics() if (m.get("attributes") or {}).get("name") == name]
        if not found:
            return None
        found.sort(key=lambda m: (m.get("attributes") or {}).get("integration") is None)
        return str(found[0]["id"])

    def query_values_report(
        self,
        kind: str,
        *,
        start: dt.datetime,
        end: dt.datetime,
        conversion_metric_id: str,
        statistics: Sequence[str] | None = None,
        max_wait: float | None = None,
    ) -> dict[str, Any]:
        """``POST /api/campaign-values-reports`` (``kind="campaign"``) or
        ``/api/flow-values-reports`` (``"flow"``): the report's ``data`` resource."""
        if kind not in REPORT_OPERATIONS:
            raise KlaviyoValidationError("kind must be 'campaign' or 'flow'.", field="kind")
        _check_timeframe(start, end, MAX_TIMEFRAME)
        options = {"statistics": statistics} if statistics else {}
        body = build_values_report(
            kind, start=start, end=end, conversion_metric_id=conversion_metric_id, **options
        )
        document = self._send(
            REPORT_OPERATIONS[kind],
            "POST",
            f"/api/{kind}-values-reports",
            body=body,
            idempotent=True,
            max_wait=max_wait,
        )
        return self._data(document)

    def query_flow_series(
        self,
        *,
        start: dt.datetime,
        end: dt.datetime,
        conversion_metric_id: str,
        interval: str = "daily",
        max_wait: float | None = None,
    ) -> dict[str, Any]:
        """``POST /api/flow-series-reports``: ``date_times`` and one series per flow message.
        Daily series cover at most 60 days a request."""
        if interval not in SERIES_INTERVALS:
            raise KlaviyoValidationError(f"Unknown interval {interval!r}.", field="interval")
        longest = {"hourly": 7, "daily": 60, "weekly": 365, "monthly": 364}[interval]
        _check_timeframe(start, end, dt.timedelta(days=longest))
        body = build_flow_series_report(
            start=start, end=end, conversion_metric_id=conversion_metric_id, interval=interval
        )
        document = self._send(
            "query_flow_series",
            "POST",
            "/api/flow-series-reports",
            body=body,
            idempotent=True,
            max_wait=max_wait,
        )
        return self._data(document)

    def query_metric_aggregates(
        self,
        *,
        metric_id: str,
        start: dt.datetime,
        end: dt.datetime,
        measurements: Sequence[str] = ("sum_value", "count"),
        interval: str = "day",
        by: Sequence[str] = (),
        max_wait: float | None = None,
    ) -> dict[str, Any]:
        """``POST /api/metric-aggregates``, every page joined: ``{"dates": [...],
        "data": [{"dimensions": [...], "measurements": {...}}, ...]}``."""
        if interval not in AGGREGATE_INTERVALS:
            raise KlaviyoValidationError(f"Unknown interval {interval!r}.", field="interval")
        _check_timeframe(start, end, MAX_TIMEFRAME)
        dates: list[str] = []
        rows: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            body = build_metric_aggregate(
                metric_id=metric_id,
                start=start,
                end=end,
                measurements=measurements,
                interval=interval,
                by=by,
                page_cursor=cursor,
            )
            document = self._send(
                "query_metric_aggregates",
                "POST",
                "/api/metric-aggregates",
                body=body,
                idempotent=True,
                max_wait=max_wait,
            )
            data = self._data(document)
            attributes = data.get("attributes") or {}
            dates = dates or list(attributes.get("dates") or [])
            rows.extend(r for r in attributes.get("data") or [] if isinstance(r, dict))
            links = (document or {}).get("links") or {}
            cursor = _cursor(links.get("next"))
            if not cursor:
                return {"dates": dates, "data": rows}


def _cursor(next_link: Any) -> str | None:
    """The ``page[cursor]`` of a ``links.next`` URL, if any."""
    if not isinstance(next_link, str) or "page" not in next_link:
        return None
    values = parse_qs(urlsplit(next_link).query).get("page[cursor]")
    return values[0] if values else None
