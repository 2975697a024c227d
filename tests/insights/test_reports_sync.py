"""klaviyo_sync reports: the sandbox's reports stored, limits shared and resumed, errors kept."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from io import StringIO

import pytest
import responses
from django.core.management import call_command
from django.utils import timezone

from django_klaviyo.client import KlaviyoClient
from django_klaviyo.insights.reports import sync_reports
from django_klaviyo.models import (
    KlaviyoCampaignReport,
    KlaviyoFlowReport,
    KlaviyoFlowSeries,
    KlaviyoReportFetch,
    KlaviyoRevenueDay,
)
from django_klaviyo.testing.openapi import request_violations
from django_klaviyo.testing.sandbox.report_routes import metric_id
from tests.fakes import FakeClock
from tests.klaviyo_fixtures import fast_client

pytestmark = pytest.mark.django_db
Kind = KlaviyoReportFetch.Kind
State = KlaviyoReportFetch.State
API = "https://a.klaviyo.com/api"


def place_orders(client: KlaviyoClient, values_and_days: list[tuple[float, int]]) -> None:
    """Placed Orders reach the sandbox through the client, ``days`` ago each."""
    now = timezone.now()
    for i, (value, days) in enumerate(values_and_days):
        client.create_event(
            metric="Placed Order",
            profile={"email": f"buyer{i}@example.com"},
            properties={"OrderId": f"o{i}"},
            value=value,
            time=now - dt.timedelta(days=days, hours=1),
            unique_id=f"order-{i}",
        )


def test_reports_from_the_sandbox_are_stored_with_their_attribution(klaviyo_sandbox):
    client = fast_client()
    # Attributed in turn: campaign 1, campaign 2, flow 1, flow 2, nothing.
    place_orders(client, [(10.0, 1), (20.0, 2), (30.0, 2), (40.0, 3), (50.0, 3), (5.0, 1)])

    outcomes = sync_reports(client)

    assert [(o.kind, o.state) for o in outcomes] == [
        (kind, State.FRESH)
        for kind in (Kind.REVENUE_BY_DAY, Kind.CAMPAIGN_VALUES, Kind.FLOW_VALUES, Kind.FLOW_SERIES)
    ]
    total = KlaviyoRevenueDay.objects.filter(group="")
    assert sum(r.value for r in total) == Decimal("155.00")
    assert sum(r.orders for r in total) == 6
    campaigns = {r.campaign_id: r for r in KlaviyoCampaignReport.objects.all()}
    # The 1st and the 6th order (10 + 5) to the first campaign, the 2nd (20) to the second.
    assert sorted(r.conversion_value for r in campaigns.values()) == [
        Decimal("15.00"),
        Decimal("20.00"),
    ]
    assert all(0 < r.open_rate <= 1 and r.recipients == 60 for r in campaigns.values())
    flows = {r.flow_id: r.conversion_value for r in KlaviyoFlowReport.objects.all()}
    assert sorted(flows.values()) == [Decimal("30.00"), Decimal("40.00")]
    series = KlaviyoFlowSeries.objects.all()
    assert sum(p.conversion_value for p in series) == Decimal("70.00")
    by_flow = KlaviyoRevenueDay.objects.filter(group="flow")
    assert {r.group_id for r in by_flow} == set(flows)
    assert sum(r.value for r in by_flow) == Decimal("70.00")
    # The second run keeps the fresh reports: nothing is asked again before they are due.
    before = klaviyo_sandbox.state.request_counts()
    assert all(o.skipped for o in sync_reports(client))
    assert klaviyo_sandbox.state.request_counts() == before


def test_no_placed_order_yet_is_not_computed_rather_than_zero(klaviyo_sandbox):
    outcomes = sync_reports(fast_client())
    assert {o.state for o in outcomes} == {State.PENDING}
    fetch = KlaviyoReportFetch.objects.get(kind=Kind.CAMPAIGN_VALUES)
    assert "no 'Placed Order' metric yet" in fetch.detail and fetch.refresh_at is None
    assert not KlaviyoRevenueDay.objects.exists()


@pytest.mark.klaviyo_sandbox(time_scale=100)  # one report a 100 s window: every 2nd is a 429
def test_a_429_mid_run_is_recorded_and_the_next_run_resumes_where_it_stopped(klaviyo_sandbox):
    client = fast_client()
    place_orders(client, [(12.0, 2), (13.0, 90), (14.0, 130), (15.0, 80)])
    since = (timezone.now() - dt.timedelta(days=150)).date()  # three pieces of 60 days

    first = sync_reports(client, since=since, kinds=[Kind.FLOW_SERIES])[0]
    assert first.state == State.RATE_LIMITED
    assert first.refresh_at > timezone.now()
    fetch = KlaviyoReportFetch.objects.get(kind=Kind.FLOW_SERIES)
    assert fetch.resume_from is not None and "resumes" in fetch.detail
    counts = klaviyo_sandbox.state.request_counts()["query_flow_series"]
    assert counts == {200: 1, 429: 1}

    # Before its Retry-After, a run does not even ask.
    again = sync_reports(client, since=since, kinds=[Kind.FLOW_SERIES])[0]
    assert again.skipped and klaviyo_sandbox.state.request_counts()["query_flow_series"] == counts

    later = fetch.refresh_at + dt.timedelta(seconds=1)
    for _ in range(2):
        klaviyo_sandbox.limiter.reset()  # the window has passed
        last = sync_reports(client, since=since, now=later, kinds=[Kind.FLOW_SERIES])[0]
        later = (last.refresh_at or later) + dt.timedelta(seconds=1)
    assert last.state == State.FRESH
    # Each piece was asked for once: the runs resumed, never started over.
    assert klaviyo_sandbox.state.request_counts()["query_flow_series"][200] == 3
    flows = KlaviyoFlowSeries.objects.all()
    assert {p.flow_id for p in flows}  # the fixture flows got the attributed orders
    assert sum(p.conversion_value for p in flows) == Decimal("29.00")  # orders 3 and 4


def _metrics_page() -> dict:
    return {
        "data": [{"type": "metric", "id": "PLACED", "attributes": {"name": "Placed Order"}}],
        "links": {"self": f"{API}/metrics", "next": None},
    }


def _values_body(kind: str) -> dict:
    return {
        "data": {
            "type": f"{kind}-values-report",
            "attributes": {
                "results": [
                    {
                        "groupings": {f"{kind}_id": "X1", f"{kind}_message_id": "X1m"},
                        "statistics": {"conversion_value": 5.0, "recipients": 10},
                    }
                ]
            },
        }
    }


def test_the_limit_is_shared_across_two_workers_and_the_third_request_is_not_sent(settings):
    """Two clients (two workers' processes) share the rate-limit cache: 2 a minute in all."""
    settings.KLAVIYO = {**settings.KLAVIYO, "REPORTS_MAX_WAIT_SECONDS": 5}
    clock = FakeClock()
    key = "pk_shared_reports_0123456789abcdef"
    workers = [KlaviyoClient(key, clock=clock, sleep=clock.sleep, max_attempts=1) for _ in range(2)]
    bodies = []
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/metrics", json=_metrics_page())

        def answer(request):
            body = json.loads(request.body)
            bodies.append(body)
            return 200, {}, json.dumps(_values_body("campaign"))

        mock.add_callback(responses.POST, f"{API}/campaign-values-reports", callback=answer)
        outcomes = [
            sync_reports(worker, kinds=[Kind.CAMPAIGN_VALUES], force=True)[0]
            for worker in (workers[0], workers[1], workers[0])
        ]
    assert [o.state for o in outcomes] == [State.FRESH, State.FRESH, State.RATE_LIMITED]
    assert len(bodies) == 2  # the third was never sent
    assert "shared limiter" in outcomes[2].detail
    for body in bodies:  # what we send is what the spec allows
        assert request_violations("query_campaign_values", body) == []
        assert body["data"]["attributes"]["conversion_metric_id"] == "PLACED"


def test_a_missing_scope_is_recorded_as_forbidden_shown_on_the_page_and_fails_the_command(
    settings, admin_client
):
    settings.KLAVIYO = {**settings.KLAVIYO, "TRACK_USERS": False}
    forbidden = {
        "errors": [
            {
                "id": "e1",
                "status": 403,
                "code": "permission_denied",
                "title": "You do not have permission to perform this action.",
                "detail": "You do not have permission to perform this action.",
            }
        ]
    }
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{API}/metrics", json=_metrics_page())
        mock.post(f"{API}/campaign-values-reports", json=forbidden, status=403)
        mock.post(f"{API}/flow-values-reports", json=_values_body("flow"))
        mock.post(
            f"{API}/flow-series-reports",
            json={
                "data": {
                    "type": "flow-series-report",
                    "attributes": {"results": [], "date_times": []},
                }
            },
        )
        mock.post(
            f"{API}/metric-aggregates",
            json={"data": {"type": "metric-aggregate", "attributes": {"dates": [], "data": []}}},
        )
        from django.core.management.base import CommandError

        from django_klaviyo.management.commands import klaviyo_sync

        original = klaviyo_sync.get_client
        klaviyo_sync.get_client = lambda account=None: fast_client()
        try:
            out = StringIO()
            with pytest.raises(CommandError) as failed:
                call_command("klaviyo_sync", "reports", stdout=out)
        finally:
            klaviyo_sync.get_client = original
    fetch = KlaviyoReportFetch.objects.get(kind=Kind.CAMPAIGN_VALUES)
    assert fetch.state == State.FORBIDDEN and "'campaigns:read'" in fetch.detail
    assert "campaigns:read" in str(failed.value)
    assert KlaviyoReportFetch.objects.get(kind=Kind.FLOW_VALUES).state == State.FRESH
    assert "Flow performance (default): fresh" in out.getvalue()
    # The Marketing page says so, where the campaigns would be; the flows show their figures.
    html = admin_client.get("/admin/django_klaviyo/marketing/").content.decode()
    assert 'data-report="campaign_values" data-state="forbidden"' in html
    assert "campaigns:read" in html
    assert 'href="https://www.klaviyo.com/flow/X1/edit"' in html


def test_sandbox_metric_ids_are_stable():
    assert metric_id("Placed Order") == metric_id("Placed Order") != metric_id("Viewed Product")


def test_klaviyo_sync_without_arguments_runs_the_mirrors_and_the_reports(klaviyo_sandbox):
    client = fast_client()
    place_orders(client, [(25.0, 1)])
    from django_klaviyo.management.commands import klaviyo_sync

    original = klaviyo_sync.get_client
    klaviyo_sync.get_client = lambda account=None: fast_client()
    try:
        out = StringIO()
        call_command("klaviyo_sync", stdout=out)
    finally:
        klaviyo_sync.get_client = original
    text = out.getvalue()
    assert "flows: " in text and "reports: Campaign performance (default): fresh" in text
    assert sum(r.value for r in KlaviyoRevenueDay.objects.filter(group="")) == Decimal("25.00")


def test_a_report_another_worker_is_fetching_is_left_to_it(klaviyo_sandbox):
    from django.core.cache import caches

    from django_klaviyo.insights.reports import claim_key

    client = fast_client()
    place_orders(client, [(25.0, 1)])
    cache = caches["default"]
    assert cache.add(claim_key("", Kind.FLOW_VALUES), "other-worker", timeout=60)
    try:
        outcomes = {o.kind: o for o in sync_reports(client)}
    finally:
        cache.delete(claim_key("", Kind.FLOW_VALUES))
    assert outcomes[Kind.FLOW_VALUES].skipped
    assert "another worker" in outcomes[Kind.FLOW_VALUES].detail
    assert "query_flow_values" not in klaviyo_sandbox.state.request_counts()
    assert outcomes[Kind.CAMPAIGN_VALUES].state == State.FRESH
