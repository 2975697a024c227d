"""The Marketing page: what Klaviyo's reports say, in the store's admin.

Revenue per day (Placed Order metric aggregates), the campaigns and flows that brought the
most attributed revenue, each figure linking to the Klaviyo object it came from. A report
that is not computed yet, forbidden (a missing scope), rate limited or failed is shown as
such, with Klaviyo's words and when it refreshes: never as zeros (docs/insights.md).

Open to staff with the view permission on the report tables (``KlaviyoReportFetch``), not
only superusers. Charts are ``admin/charts.py``'s server-rendered SVG, each with its figures
as a table: no script, no inline style, so the page works under a strict
Content-Security-Policy.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.safestring import SafeString

from django_klaviyo import accounts
from django_klaviyo.admin.charts import Point, Series, line_chart, ranking_chart
from django_klaviyo.models import (
    KlaviyoCampaign,
    KlaviyoCampaignReport,
    KlaviyoFlow,
    KlaviyoFlowReport,
    KlaviyoFlowSeries,
    KlaviyoReportFetch,
    KlaviyoRevenueDay,
    KlaviyoSegment,
    KlaviyoSegmentSize,
    Marketing,
)

KLAVIYO_APP = "https://www.klaviyo.com"
TOP = 10
Kind = KlaviyoReportFetch.Kind
State = KlaviyoReportFetch.State
VIEW_PERMISSION = "django_klaviyo.view_klaviyoreportfetch"


def campaign_url(campaign_id: str) -> str:
    return f"{KLAVIYO_APP}/campaign/{campaign_id}/reports"


def flow_url(flow_id: str) -> str:
    return f"{KLAVIYO_APP}/flow/{flow_id}/edit"


def metric_url(metric_id: str) -> str | None:
    return f"{KLAVIYO_APP}/metric/{metric_id}/placed-order" if metric_id else None


@dataclass(frozen=True)
class Bar:
    """One figure of a chart: its label and value, and where it came from in Klaviyo."""

    label: str
    value: Decimal
    url: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Ranked:
    """A campaign or flow with its attributed figures (its messages added up)."""

    klaviyo_id: str
    name: str
    url: str
    conversion_value: Decimal
    conversions: float
    recipients: int
    open_rate: float | None
    click_rate: float | None

    @property
    def revenue_per_recipient(self) -> Decimal | None:
        if not self.recipients:
            return None
        return (self.conversion_value / self.recipients).quantize(Decimal("0.01"))


@dataclass
class ReportStatus:
    """How true one kind of report is: the page says this before any figure."""

    kind: str
    label: str
    state: str
    state_label: str
    detail: str = ""
    fetched_at: dt.datetime | None = None
    refresh_at: dt.datetime | None = None

    @property
    def fresh(self) -> bool:
        return self.state == State.FRESH

    @property
    def has_figures(self) -> bool:
        return self.fetched_at is not None


@dataclass
class MarketingPage:
    account: str
    accounts: list[str]
    statuses: dict[str, ReportStatus]
    revenue_days: list[Bar] = field(default_factory=list)
    top_campaigns: list[Ranked] = field(default_factory=list)
    top_flows: list[Ranked] = field(default_factory=list)
    # Days the report covered without an order: in the chart, left out of the day table.
    quiet_days: int = 0
    revenue_chart: SafeString | None = None
    flow_series_chart: SafeString | None = None
    # Segment sizes over time (klaviyo_sync segments), None before any was counted.
    segment_chart: SafeString | None = None
    campaign_chart: SafeString | None = None
    flow_chart: SafeString | None = None

    @property
    def revenue_total(self) -> Decimal:
        return sum((bar.value for bar in self.revenue_days), Decimal(0))


def _cents(value: Any) -> Decimal:
    """Money to the cent (SQLite's SUM of decimals comes back as 25.5)."""
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))


def _statuses(account: str) -> dict[str, ReportStatus]:
    found = {f.kind: f for f in KlaviyoReportFetch.objects.filter(account=account)}
    statuses = {}
    for kind in Kind:
        fetch = found.get(kind)
        if fetch is None:
            statuses[kind] = ReportStatus(
                kind,
                kind.label,
                State.PENDING,
                State.PENDING.label,
                "Not fetched yet: `manage.py klaviyo_sync reports` fetches it.",
            )
            continue
        statuses[kind] = ReportStatus(
            kind,
            kind.label,
            fetch.state,
            State(fetch.state).label,
            fetch.detail,
            fetch.fetched_at,
            fetch.refresh_at,
        )
    return statuses


def _ranked(model: Any, owner: str, account: str, names: dict[str, str], url: Any) -> list:
    rows = model.objects.filter(account=account).values(
        owner,
        "conversion_value",
        "conversions",
        "recipients",
        "open_rate",
        "click_rate",
    )
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row[owner]].append(row)
    ranked = []
    for klaviyo_id, messages in grouped.items():
        recipients = sum(m["recipients"] for m in messages)

        def weighted(name: str, messages=messages, recipients=recipients) -> float | None:
            known = [m for m in messages if m[name] is not None]
            if not known or not recipients:
                return None
            return sum(m[name] * m["recipients"] for m in known) / recipients

        ranked.append(
            Ranked(
                klaviyo_id=klaviyo_id,
                name=names.get(klaviyo_id, klaviyo_id),
                url=url(klaviyo_id),
                conversion_value=_cents(sum((m["conversion_value"] for m in messages), Decimal(0))),
                conversions=sum(m["conversions"] for m in messages),
                recipients=recipients,
                open_rate=weighted("open_rate"),
                click_rate=weighted("click_rate"),
            )
        )
    ranked.sort(key=lambda r: (-r.conversion_value, r.name))
    return ranked[:TOP]


def _ranking(rows: list[Ranked], title: str) -> SafeString:
    return ranking_chart(
        [Point(r.name, float(r.conversion_value), r.url) for r in rows], title=title
    )


def _revenue(page: MarketingPage, account: str) -> None:
    """Placed Order revenue per day: the total, and what flows and campaigns brought."""
    fetch = KlaviyoReportFetch.objects.filter(account=account, kind=Kind.REVENUE_BY_DAY)
    link = metric_url(fetch.values_list("metric_id", flat=True).first() or "")
    rows = (
        KlaviyoRevenueDay.objects.filter(account=account)
        .values("day", "group")
        .annotate(value=Sum("value"), orders=Sum("orders"), n=Count("id"))
        .order_by("day")
    )
    by_group: dict[str, dict[dt.date, tuple[Decimal, int]]] = defaultdict(dict)
    for row in rows:
        by_group[row["group"]][row["day"]] = (_cents(row["value"]), int(row["orders"] or 0))
    days = sorted(by_group.get("", {}))
    page.revenue_days = [
        Bar(f"{day:%Y-%m-%d}", value, link, f"{orders} orders")
        for day in days
        for value, orders in [by_group[""][day]]
        if value or orders
    ]
    page.quiet_days = len(days) - len(page.revenue_days)
    names = (
        ("", "All orders"),
        (KlaviyoRevenueDay.Group.FLOW, "Attributed to flows"),
        (KlaviyoRevenueDay.Group.CAMPAIGN, "Attributed to campaigns"),
    )
    page.revenue_chart = line_chart(
        [
            Series(
                name,
                [
                    Point(
                        f"{day:%m-%d}",
                        float(by_group[group].get(day, (Decimal(0), 0))[0]),
                        link if group == "" else None,
                    )
                    for day in days
                ],
            )
            for group, name in names
        ],
        title="Placed Order revenue per day",
    )


def _flow_series(account: str, names: dict[str, str], flows: int = 5) -> SafeString:
    """The flows' conversion value per day (the flow series report), the top ``flows``."""
    rows = KlaviyoFlowSeries.objects.filter(account=account).values_list(
        "flow_id", "day", "conversion_value"
    )
    values: dict[str, dict[dt.date, Decimal]] = defaultdict(dict)
    for flow_id, day, value in rows:
        values[flow_id][day] = _cents(value)
    days = sorted({day for per_day in values.values() for day in per_day})
    top = sorted(values, key=lambda f: (-sum(values[f].values()), f))[:flows]
    return line_chart(
        [
            Series(
                names.get(flow_id, flow_id),
                [
                    Point(f"{day:%m-%d}", float(values[flow_id].get(day, 0)), flow_url(flow_id))
                    for day in days
                ],
            )
            for flow_id in top
        ],
        title="Flow revenue per day",
    )


def _segment_sizes(account: str, segments: int = 6) -> SafeString | None:
    """The profile count of the account's largest segments, one line each, per day."""
    rows = (
        KlaviyoSegmentSize.objects.filter(segment__account=account)
        .order_by("date")
        .values_list("segment_id", "date", "profile_count")
    )
    sizes: dict[int, dict[dt.date, int]] = defaultdict(dict)
    for segment_id, day, count in rows:
        sizes[segment_id][day] = count
    if not sizes:
        return None
    found = KlaviyoSegment.objects.in_bulk(list(sizes))
    days = sorted({day for per_day in sizes.values() for day in per_day})
    top = sorted(sizes, key=lambda k: (-max(sizes[k].values()), found[k].name))[:segments]
    return line_chart(
        [
            Series(
                found[segment_id].name,
                [
                    Point(f"{day:%m-%d}", float(count), found[segment_id].klaviyo_url)
                    for day in days
                    for count in [sizes[segment_id].get(day)]
                    if count is not None
                ],
            )
            for segment_id in top
        ],
        title="Segment sizes (profiles)",
    )


def marketing_page(account: str = "") -> MarketingPage:
    """What the Marketing page shows for ``account`` (``""``: the default one)."""
    stored = sorted(set(KlaviyoReportFetch.objects.values_list("account", flat=True)) | {account})
    statuses = _statuses(account)
    page = MarketingPage(account=account, accounts=stored, statuses=statuses)
    if statuses[Kind.REVENUE_BY_DAY].has_figures:
        _revenue(page, account)
    if statuses[Kind.CAMPAIGN_VALUES].has_figures:
        names = dict(
            KlaviyoCampaign.objects.filter(account=account).values_list("klaviyo_id", "name")
        )
        page.top_campaigns = _ranked(
            KlaviyoCampaignReport, "campaign_id", account, names, campaign_url
        )
        page.campaign_chart = _ranking(page.top_campaigns, "Top campaigns by attributed revenue")
    if statuses[Kind.FLOW_VALUES].has_figures:
        names = dict(KlaviyoFlow.objects.filter(account=account).values_list("klaviyo_id", "name"))
        page.top_flows = _ranked(KlaviyoFlowReport, "flow_id", account, names, flow_url)
        page.flow_chart = _ranking(page.top_flows, "Top flows by attributed revenue")
    if statuses[Kind.FLOW_SERIES].has_figures:
        names = dict(KlaviyoFlow.objects.filter(account=account).values_list("klaviyo_id", "name"))
        page.flow_series_chart = _flow_series(account, names)
    page.segment_chart = _segment_sizes(account)
    return page


@admin.register(Marketing)
class MarketingAdmin(admin.ModelAdmin):
    """The Marketing page in place of a changelist; nothing to add, change or delete."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VIEW_PERMISSION) or super().has_view_permission(request, obj)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        chosen = request.GET.get("account", "")
        valid = set(accounts.stored_names()) | set(
            KlaviyoReportFetch.objects.values_list("account", flat=True)
        )
        account = chosen if chosen in valid else ""
        page = marketing_page(account)
        context = {
            **self.admin_site.each_context(request),
            "title": "Marketing",
            "opts": self.model._meta,
            "page": page,
            "account_names": [(a, accounts.display(a)) for a in sorted(valid)],
            "several_accounts": len(valid) > 1,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/django_klaviyo/marketing.html", context)


@admin.register(KlaviyoReportFetch)
class KlaviyoReportFetchAdmin(admin.ModelAdmin):
    list_display = ("kind", "account", "state", "fetched_at", "refresh_at", "error_code")
    list_filter = ("state", "kind")
    readonly_fields = [f.name for f in KlaviyoReportFetch._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
