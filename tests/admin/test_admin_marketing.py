"""The admin's Marketing page: figures with their Klaviyo links, and every report state
that is not fresh shown as such (never as zeros), for staff with the view permission."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from django_klaviyo.models import (
    KlaviyoCampaign,
    KlaviyoCampaignReport,
    KlaviyoFlowReport,
    KlaviyoReportFetch,
    KlaviyoRevenueDay,
)

pytestmark = pytest.mark.django_db
URL = "/admin/django_klaviyo/marketing/"
Kind = KlaviyoReportFetch.Kind
State = KlaviyoReportFetch.State


@pytest.fixture(autouse=True)
def _no_user_tracking(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "TRACK_USERS": False}


@pytest.fixture
def viewer(client):
    """Staff with only the view permission on the report fetches: not a superuser."""
    user = get_user_model().objects.create_user("viewer", "v@example.com", "pw-123456789")
    user.is_staff = True
    user.save()
    user.user_permissions.add(
        Permission.objects.get(
            codename="view_klaviyoreportfetch", content_type__app_label="django_klaviyo"
        )
    )
    client.force_login(user)
    return client


def fetch(kind: str, state: str, **fields) -> KlaviyoReportFetch:
    now = timezone.now()
    return KlaviyoReportFetch.objects.create(
        kind=kind, state=state, refresh_at=now + dt.timedelta(minutes=5), **fields
    )


def figures(now: dt.datetime) -> None:
    KlaviyoCampaign.objects.create(klaviyo_id="C1", name="Spring sale")
    common = {
        "timeframe_start": now - dt.timedelta(days=30),
        "timeframe_end": now,
        "fetched_at": now,
    }
    KlaviyoCampaignReport.objects.create(
        campaign_id="C1",
        message_id="C1m",
        recipients=200,
        conversions=3,
        conversion_value=Decimal("123.45"),
        open_rate=0.4,
        click_rate=0.1,
        **common,
    )
    KlaviyoFlowReport.objects.create(
        flow_id="F1",
        message_id="F1m",
        recipients=50,
        conversions=1,
        conversion_value=Decimal("40.00"),
        open_rate=0.5,
        click_rate=0.2,
        **common,
    )
    for i, value in enumerate(("10.00", "25.50")):
        KlaviyoRevenueDay.objects.create(
            day=(now - dt.timedelta(days=i)).date(),
            value=Decimal(value),
            orders=i + 1,
            fetched_at=now,
        )


def test_a_view_only_staff_user_sees_the_figures_each_linking_to_klaviyo(viewer):
    now = timezone.now()
    figures(now)
    for kind in (Kind.REVENUE_BY_DAY, Kind.CAMPAIGN_VALUES, Kind.FLOW_VALUES):
        fetch(kind, State.FRESH, fetched_at=now, metric_id="PLACED")
    page = viewer.get(URL)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Spring sale" in html and "123.45" in html and "40.00" in html
    assert 'href="https://www.klaviyo.com/campaign/C1/reports"' in html
    assert 'href="https://www.klaviyo.com/flow/F1/edit"' in html
    assert 'href="https://www.klaviyo.com/metric/PLACED/placed-order"' in html
    # Three charts: revenue per day (a line), top campaigns and top flows (rankings).
    assert html.count('<figure class="dk-chart') == 3
    assert "dk-chart-line" in html and html.count("dk-chart-ranking") == 2
    assert "Total 35.50 over 2 days with orders" in html
    assert "charts.css" in html
    assert "style=" not in html.split('id="klaviyo-marketing"')[1]  # CSP: no inline style
    # The app's admin index and the outbox dashboard link to the page.
    assert URL in viewer.get("/admin/django_klaviyo/").content.decode()


def test_forbidden_rate_limited_and_not_computed_reports_say_so_instead_of_zeros(viewer):
    fetch(
        Kind.CAMPAIGN_VALUES,
        State.FORBIDDEN,
        detail="Klaviyo refused the report: You do not have permission to perform this "
        "action.. The private key needs the 'campaigns:read' scope.",
    )
    fetch(Kind.FLOW_VALUES, State.RATE_LIMITED, detail="Klaviyo's reporting limit was reached")
    html = viewer.get(URL).content.decode()
    assert 'data-report="campaign_values" data-state="forbidden"' in html
    assert "Forbidden (missing scope)" in html and "&#x27;campaigns:read&#x27; scope" in html
    assert 'data-state="rate_limited"' in html and "refreshes at" in html
    # Never fetched: not computed yet, and no figure at all (not a 0).
    assert 'data-report="revenue_by_day" data-state="pending"' in html
    assert "Not computed yet" in html
    assert "dk-chart" not in html and "0.00" not in html


def test_the_outbox_dashboard_links_to_the_page(admin_client):
    html = admin_client.get("/admin/django_klaviyo/outboxevent/").content.decode()
    assert f'href="{URL}"' in html


def test_staff_without_the_view_permission_is_refused(client):
    user = get_user_model().objects.create_user("nobody", "n@example.com", "pw-123456789")
    user.is_staff = True
    user.save()
    client.force_login(user)
    assert client.get(URL).status_code == 403


def test_several_accounts_get_a_selector_and_each_its_own_figures(viewer):
    now = timezone.now()
    fetch(Kind.REVENUE_BY_DAY, State.FRESH, fetched_at=now)
    KlaviyoReportFetch.objects.create(
        account="eu", kind=Kind.REVENUE_BY_DAY, state=State.FRESH, fetched_at=now
    )
    KlaviyoRevenueDay.objects.create(
        account="eu", day=now.date(), value=Decimal("77.00"), orders=2, fetched_at=now
    )
    html = viewer.get(URL).content.decode()
    assert 'id="klaviyo-account"' in html and "77.00" not in html
    assert "77.00" in viewer.get(URL + "?account=eu").content.decode()


def test_segment_sizes_over_time_link_to_each_segment(viewer):
    from django_klaviyo.models import KlaviyoSegment, KlaviyoSegmentSize

    today = timezone.now().date()
    vip = KlaviyoSegment.objects.create(klaviyo_id="SegVIP", name="VIP", profile_count=12)
    KlaviyoSegment.objects.create(account="eu", klaviyo_id="SegEU", name="EU only")
    for days, count in ((2, 9), (1, 11), (0, 12)):
        KlaviyoSegmentSize.objects.create(
            segment=vip, date=today - dt.timedelta(days=days), profile_count=count
        )
    html = viewer.get(URL).content.decode()
    section = html.split('id="klaviyo-segment-sizes"')[1]
    assert "Segment sizes (profiles)" in section and "dk-chart-line" in section
    assert 'href="https://www.klaviyo.com/lists/SegVIP"' in section
    assert "EU only" not in section


def test_no_segment_size_yet_says_so(viewer):
    html = viewer.get(URL).content.decode()
    assert 'data-report="segment_sizes" data-state="pending"' in html
