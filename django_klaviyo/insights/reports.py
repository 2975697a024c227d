"""Fetch Klaviyo's reports into the report tables (``manage.py klaviyo_sync reports``).

Four kinds per account, each with its ``KlaviyoReportFetch`` row:

* ``revenue_by_day``: Placed Order metric aggregates by day (sum of value, count), for the
  whole account and split by ``$attributed_flow`` and ``$attributed_message``;
* ``campaign_values`` / ``flow_values``: values reports per campaign or flow message;
* ``flow_series``: the flow series report, daily, added up per flow.

The reporting API allows 1 request a second, 2 a minute and 225 a day per operation, shared
by every process of the account (``client.ratelimit`` through ``RATE_LIMIT_CACHE``). A
request that would wait longer than ``REPORTS_MAX_WAIT_SECONDS`` is not sent: the report
stops there, keeps its progress (``resume_from``, for the series fetched in pieces of 60
days) and says "rate limited, refreshes at T"; a 429 from Klaviyo is held for its
Retry-After the same way. The next run resumes; no run loops on 429s.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.cache import caches
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import (
    KlaviyoError,
    KlaviyoPermissionError,
    KlaviyoRateLimitError,
)
from django_klaviyo.models import (
    KlaviyoCampaignReport,
    KlaviyoFlowReport,
    KlaviyoFlowSeries,
    KlaviyoReportFetch,
    KlaviyoRevenueDay,
)
from django_klaviyo.orders.fields import metric

__all__ = ["ReportOutcome", "sync_reports"]

Kind = KlaviyoReportFetch.Kind
State = KlaviyoReportFetch.State
KINDS = (Kind.REVENUE_BY_DAY, Kind.CAMPAIGN_VALUES, Kind.FLOW_VALUES, Kind.FLOW_SERIES)
# The scope each kind's request needs (the spec's x-klaviyo-scopes), named on a 403.
SCOPES = {
    Kind.REVENUE_BY_DAY: "metrics:read",
    Kind.CAMPAIGN_VALUES: "campaigns:read",
    Kind.FLOW_VALUES: "flows:read",
    Kind.FLOW_SERIES: "flows:read",
}
# Klaviyo's longest daily flow series; metric aggregates are fetched in the same pieces.
PIECE = dt.timedelta(days=60)
LONGEST = dt.timedelta(days=365)
# How long a worker's claim on one report outlives it if it dies mid-fetch.
CLAIM_SECONDS = 600
# Metric aggregates: the whole account, then split by what the order is attributed to.
REVENUE_SPLITS = (
    (KlaviyoRevenueDay.Group.TOTAL, ()),
    (KlaviyoRevenueDay.Group.FLOW, ("$attributed_flow",)),
    (KlaviyoRevenueDay.Group.CAMPAIGN, ("$attributed_message",)),
)


@dataclass(frozen=True)
class ReportOutcome:
    """What one run did with one kind of report."""

    account: str
    kind: str
    state: str
    detail: str = ""
    refresh_at: dt.datetime | None = None
    skipped: bool = False

    def __str__(self) -> str:
        label = Kind(self.kind).label
        account = self.account or "default"
        text = f"{label} ({account}): {State(self.state).label.lower()}"
        if self.skipped:
            text += " (kept; not due)"
        if self.detail:
            text += f": {self.detail}"
        if self.refresh_at and self.state != State.FRESH:
            text += f"; refreshes at {self.refresh_at:%Y-%m-%d %H:%M:%S} UTC"
        return text


class _NotComputed(Exception):
    """Klaviyo has nothing to report on yet (e.g. no Placed Order metric)."""


def _money(value: Any, places: str = "0.01") -> Decimal:
    try:
        return Decimal(str(value or 0)).quantize(Decimal(places))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _rate(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _day(value: Any) -> dt.date | None:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    return parsed.date() if parsed else None


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.timezone.utc)


def timeframe_for(since: dt.date | None, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """``[since's midnight (UTC), the next minute)``; ``REPORTS_DAYS`` back when no date
    is given, and never more than the year a Klaviyo report covers."""
    if since is None:
        since = now.date() - dt.timedelta(days=int(klaviyo_settings.REPORTS_DAYS))
    # Midnights only, so that the runs of one day ask for the same timeframe (and resume).
    earliest = (now - LONGEST).date() + dt.timedelta(days=1)
    # The end is the next whole minute: an order of this very second is inside.
    end = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    return _midnight(max(since, earliest)), end


# --- storing what Klaviyo answered ------------------------------------------------------------


def _store_values(kind: str, account: str, data: Mapping[str, Any], start, end, now) -> int:
    model = KlaviyoCampaignReport if kind == Kind.CAMPAIGN_VALUES else KlaviyoFlowReport
    owner = "campaign_id" if kind == Kind.CAMPAIGN_VALUES else "flow_id"
    message = "campaign_message_id" if kind == Kind.CAMPAIGN_VALUES else "flow_message_id"
    rows = []
    for result in (data.get("attributes") or {}).get("results") or []:
        groupings = result.get("groupings") or {}
        stats = result.get("statistics") or {}
        if not groupings.get(owner):
            continue
        rpr = stats.get("revenue_per_recipient")
        rows.append(
            model(
                account=account,
                **{owner: str(groupings[owner])[:64]},
                message_id=str(groupings.get(message) or "")[:64],
                send_channel=str(groupings.get("send_channel") or "")[:32],
                timeframe_start=start,
                timeframe_end=end,
                recipients=int(_number(stats.get("recipients"))),
                conversions=_number(stats.get("conversions")),
                conversion_value=_money(stats.get("conversion_value")),
                open_rate=_rate(stats.get("open_rate")),
                click_rate=_rate(stats.get("click_rate")),
                revenue_per_recipient=None if rpr is None else _money(rpr, "0.0001"),
                fetched_at=now,
            )
        )
    with transaction.atomic():
        model.objects.filter(account=account).delete()
        model.objects.bulk_create(rows)
    return len(rows)


def _store_series(account: str, data: Mapping[str, Any], start, end, now) -> None:
    attributes = data.get("attributes") or {}
    days = [_day(value) for value in attributes.get("date_times") or []]
    totals: dict[tuple[str, dt.date], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for result in attributes.get("results") or []:
        flow_id = str((result.get("groupings") or {}).get("flow_id") or "")[:64]
        stats = result.get("statistics") or {}
        if not flow_id:
            continue
        for i, day in enumerate(days):
            if day is None:
                continue
            figures = totals[(flow_id, day)]
            for j, name in enumerate(("recipients", "conversions", "conversion_value")):
                series = stats.get(name) or []
                figures[j] += _number(series[i]) if i < len(series) else 0.0
    rows = [
        KlaviyoFlowSeries(
            account=account,
            flow_id=flow_id,
            day=day,
            recipients=int(recipients),
            conversions=conversions,
            conversion_value=_money(value),
            fetched_at=now,
        )
        for (flow_id, day), (recipients, conversions, value) in totals.items()
    ]
    with transaction.atomic():
        KlaviyoFlowSeries.objects.filter(
            account=account, day__gte=start.date(), day__lte=end.date()
        ).delete()
        KlaviyoFlowSeries.objects.bulk_create(rows)


def _store_revenue(account: str, group: str, answer: Mapping[str, Any], start, end, now) -> None:
    days = [_day(value) for value in answer.get("dates") or []]
    sums: dict[tuple[str, dt.date], list[Any]] = defaultdict(lambda: [Decimal(0), 0])
    for row in answer.get("data") or []:
        dimensions = row.get("dimensions") or []
        group_id = str(dimensions[0])[:64] if dimensions else ""
        if group and not group_id:
            continue  # orders attributed to nothing: counted in the total only
        measurements = row.get("measurements") or {}
        values = measurements.get("sum_value") or []
        counts = measurements.get("count") or []
        for i, day in enumerate(days):
            if day is None:
                continue
            figures = sums[(group_id, day)]
            figures[0] += _money(values[i] if i < len(values) else 0)
            figures[1] += int(_number(counts[i] if i < len(counts) else 0))
    rows = [
        KlaviyoRevenueDay(
            account=account,
            day=day,
            group=group,
            group_id=group_id,
            value=value,
            orders=orders,
            fetched_at=now,
        )
        for (group_id, day), (value, orders) in sums.items()
        if group == "" or value or orders
    ]
    with transaction.atomic():
        KlaviyoRevenueDay.objects.filter(
            account=account, group=group, day__gte=start.date(), day__lte=end.date()
        ).delete()
        KlaviyoRevenueDay.objects.bulk_create(rows)


# --- one run ----------------------------------------------------------------------------------


class _Run:
    def __init__(self, client: Any, account: str, start, end, now, max_wait: float) -> None:
        self.client = client
        self.account = account
        self.start = start
        self.end = end
        self.now = now
        self.max_wait = max_wait
        self._metric_id: str | None = None

    def metric_id(self) -> str:
        if self._metric_id is None:
            name = metric("placed_order")
            try:
                found = self.client.find_metric_id(name)
            except KlaviyoPermissionError as exc:
                exc.scope = "metrics:read"  # type: ignore[attr-defined]
                raise
            if not found:
                raise _NotComputed(
                    f"Klaviyo has no {name!r} metric yet: no order has reached the account."
                )
            self._metric_id = found
        return self._metric_id

    def pieces(self, fetch: KlaviyoReportFetch) -> Iterable[tuple[dt.datetime, dt.datetime]]:
        begin = self.start
        if fetch.resume_from and fetch.timeframe_start == self.start:
            begin = max(self.start, fetch.resume_from)
        while begin < self.end:
            stop = min(begin + PIECE, self.end)
            yield begin, stop
            begin = stop

    def values(self, fetch: KlaviyoReportFetch) -> None:
        kind = "campaign" if fetch.kind == Kind.CAMPAIGN_VALUES else "flow"
        data = self.client.query_values_report(
            kind,
            start=self.start,
            end=self.end,
            conversion_metric_id=self.metric_id(),
            max_wait=self.max_wait,
        )
        _store_values(fetch.kind, self.account, data, self.start, self.end, self.now)

    def series(self, fetch: KlaviyoReportFetch) -> None:
        for begin, stop in self.pieces(fetch):
            data = self.client.query_flow_series(
                start=begin,
                end=stop,
                conversion_metric_id=self.metric_id(),
                max_wait=self.max_wait,
            )
            _store_series(self.account, data, begin, stop, self.now)
            _progress(fetch, stop)

    def revenue(self, fetch: KlaviyoReportFetch) -> None:
        for begin, stop in self.pieces(fetch):
            for group, by in REVENUE_SPLITS:
                answer = self.client.query_metric_aggregates(
                    metric_id=self.metric_id(), start=begin, end=stop, by=by, max_wait=self.max_wait
                )
                _store_revenue(self.account, group, answer, begin, stop, self.now)
            _progress(fetch, stop)

    def fetcher(self, kind: str) -> Callable[[KlaviyoReportFetch], None]:
        return {
            Kind.REVENUE_BY_DAY: self.revenue,
            Kind.CAMPAIGN_VALUES: self.values,
            Kind.FLOW_VALUES: self.values,
            Kind.FLOW_SERIES: self.series,
        }[kind]


def _progress(fetch: KlaviyoReportFetch, stop: dt.datetime) -> None:
    fetch.resume_from = stop
    fetch.save(update_fields=["resume_from"])


def _due(fetch: KlaviyoReportFetch, start: dt.datetime, now: dt.datetime, force: bool) -> bool:
    waiting = fetch.refresh_at is not None and fetch.refresh_at > now
    if fetch.state == State.RATE_LIMITED and waiting:
        return False  # Klaviyo said when; asking earlier only costs a 429
    if fetch.state == State.FORBIDDEN and waiting and not force:
        return False  # a scope is not granted by asking again; --force after granting it
    if force or fetch.state != State.FRESH or fetch.timeframe_start != start:
        return True
    return fetch.refresh_at is None or fetch.refresh_at <= now


def _fetch_one(run: _Run, fetch: KlaviyoReportFetch, refresh: dt.timedelta) -> None:
    now = run.now
    resuming = bool(fetch.resume_from) and fetch.timeframe_start == run.start
    fetch.attempted_at = now
    fetch.timeframe_start = run.start
    if not resuming:
        fetch.resume_from = None
    fetch.save()
    try:
        run.fetcher(fetch.kind)(fetch)
    except _NotComputed as exc:
        _settle(fetch, State.PENDING, str(exc), "no_metric", None)
    except KlaviyoRateLimitError as exc:
        wait = exc.retry_after if exc.retry_after is not None else 60.0
        source = "this app's shared limiter" if exc.code == "client_rate_limited" else "Klaviyo"
        detail = (
            f"Klaviyo's reporting limit (1/s, 2/m, 225/d) was reached ({source}); "
            "the figures so far are kept and the run resumes from there."
        )
        _settle(
            fetch,
            State.RATE_LIMITED,
            detail,
            exc.code or "throttled",
            now + dt.timedelta(seconds=wait),
        )
    except KlaviyoPermissionError as exc:
        detail = (
            f"Klaviyo refused the report: {exc.detail or exc.title or 'permission denied'}. "
            f"The private key needs the {getattr(exc, 'scope', SCOPES[fetch.kind])!r} scope."
        )
        _settle(fetch, State.FORBIDDEN, detail, exc.code or "permission_denied", now + refresh)
    except KlaviyoError as exc:
        _settle(fetch, State.ERROR, str(exc)[:2000], getattr(exc, "code", None) or "error", None)
    else:
        fetch.state = State.FRESH
        fetch.error_code = ""
        fetch.detail = ""
        fetch.resume_from = None
        fetch.timeframe_end = run.end
        fetch.fetched_at = now
        fetch.refresh_at = now + refresh
        fetch.metric_id = run.metric_id()
        fetch.save()


def _settle(fetch, state: str, detail: str, code: str, refresh_at) -> None:
    fetch.state = state
    fetch.detail = detail
    fetch.error_code = code[:64]
    fetch.refresh_at = refresh_at
    fetch.save()


def sync_reports(
    client: Any,
    *,
    account: str = "",
    since: dt.date | None = None,
    now: dt.datetime | None = None,
    force: bool = False,
    kinds: Iterable[str] | None = None,
) -> list[ReportOutcome]:
    """Fetch every due report of ``account`` (its ``OutboxEvent.account`` value: ``""`` is
    the default account) through ``client``; return what became of each kind (``kinds``:
    some of ``KlaviyoReportFetch.Kind``, default all). Errors are recorded on the
    ``KlaviyoReportFetch`` rows, never raised: the page shows them."""
    now = now or timezone.now()
    start, end = timeframe_for(since, now)
    refresh = dt.timedelta(seconds=float(klaviyo_settings.REPORTS_REFRESH_SECONDS))
    run = _Run(client, account, start, end, now, float(klaviyo_settings.REPORTS_MAX_WAIT_SECONDS))
    outcomes = []
    for kind in KINDS if kinds is None else kinds:
        fetch, _ = KlaviyoReportFetch.objects.get_or_create(account=account, kind=kind)
        due = _due(fetch, start, now, force)
        busy = False
        if due:
            with _claimed(account, kind) as mine:
                busy = not mine
                if mine:
                    fetch.refresh_from_db()
                    _fetch_one(run, fetch, refresh)
        outcomes.append(
            ReportOutcome(
                account=account,
                kind=fetch.kind,
                state=fetch.state,
                detail="another worker is fetching it" if busy else fetch.detail,
                refresh_at=fetch.refresh_at,
                skipped=busy or not due,
            )
        )
    return outcomes


def claim_key(account: str, kind: str) -> str:
    return f"django_klaviyo:reports:{account or 'default'}:{kind}"


@contextmanager
def _claimed(account: str, kind: str) -> Iterator[bool]:
    """One worker at a time fetches one report of one account: a lock in the shared
    rate-limit cache (every process already shares it), let go at the end or after
    ``CLAIM_SECONDS`` if its holder died."""
    cache = caches[klaviyo_settings.RATE_LIMIT_CACHE]
    key = claim_key(account, kind)
    token = uuid.uuid4().hex
    mine = cache.add(key, token, timeout=CLAIM_SECONDS)
    try:
        yield mine
    finally:
        if mine and cache.get(key) == token:
            cache.delete(key)
