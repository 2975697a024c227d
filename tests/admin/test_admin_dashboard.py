"""The outbox dashboard and changelist on big tables: bounded queries, estimates above a cap."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_klaviyo.admin import dashboard
from django_klaviyo.admin.dashboard import Figure, outbox_dashboard, table_rows, timeline_chart
from django_klaviyo.admin.outbox import OutboxEventAdmin
from django_klaviyo.health import HourBucket
from django_klaviyo.models import OutboxEvent

pytestmark = pytest.mark.django_db
S = OutboxEvent.Status
K = OutboxEvent.Kind
CHANGELIST = "admin:django_klaviyo_outboxevent_changelist"


def row(status: str, **fields) -> OutboxEvent:
    defaults = {
        "kind": K.EVENT,
        "metric": "Placed Order",
        "payload": {"metric": "Placed Order", "profile": {"email": "ann@example.com"}},
        "profile_key": "email:ann@example.com",
    }
    return OutboxEvent.objects.create(status=status, **{**defaults, **fields})


@pytest.fixture(autouse=True)
def _no_user_tracking(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "TRACK_USERS": False}


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(user)
    return client


def test_dashboard_counts_unfinished_rows_by_status_kind_and_time():
    now = timezone.now()
    row(S.PENDING, next_attempt_at=now - dt.timedelta(minutes=30))
    row(S.RETRYING, next_attempt_at=now - dt.timedelta(minutes=5), last_error_code="rate_limited")
    row(S.PENDING, next_attempt_at=now + dt.timedelta(minutes=5))  # not due yet
    row(S.DEAD, kind=K.SUBSCRIBE, last_error_code="invalid")
    row(S.DEAD, kind=K.SUBSCRIBE, last_error_code="invalid")
    row(S.SENT, sent_at=now - dt.timedelta(minutes=10), last_error_code="old_error")
    row(S.SENT, sent_at=now - dt.timedelta(hours=5))
    row(S.SENT, sent_at=now - dt.timedelta(days=3))

    stats = outbox_dashboard(now=now)

    assert stats.by_status == {
        "pending": Figure(2),
        "retrying": Figure(1),
        "sending": Figure(0),
        "dead": Figure(2),
        "sent": Figure(3),
    }
    assert stats.unfinished_by_kind == {
        "event": {"pending": 2, "retrying": 1},
        "subscribe": {"dead": 2},
    }
    assert stats.oldest_due_age == dt.timedelta(minutes=30)
    assert (stats.sent_last_hour, stats.sent_last_day) == (Figure(1), Figure(2))
    # A sent row's old error is history, not a failure.
    assert stats.top_error_codes == [("invalid", 2), ("rate_limited", 1)]


def test_dashboard_on_an_empty_queue():
    stats = outbox_dashboard()
    assert stats.oldest_due_age is None and stats.top_error_codes == []
    assert all(figure == Figure(0) for figure in stats.by_status.values())


def test_counts_above_the_cap_become_estimates(monkeypatch):
    monkeypatch.setattr(dashboard, "COUNT_CAP", 3)
    for _ in range(5):
        row(S.DEAD, last_error_code="invalid")
    stats = outbox_dashboard()
    dead = stats.by_status["dead"]
    assert not dead.exact
    assert stats.sampled  # the kind table and top errors describe the first 3 dead rows
    assert stats.unfinished_by_kind == {"event": {"dead": 3}}
    if connection.vendor == "postgresql":
        assert dead.value >= 3 and str(dead).startswith("≈ ")  # the planner's estimate
    else:
        assert str(dead) == "3+"  # no estimate on SQLite: "at least the cap"


def test_table_total_comes_from_statistics_not_a_count():
    for _ in range(30):
        row(S.SENT)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {OutboxEvent._meta.db_table}")
    with CaptureQueriesContext(connection) as queries:
        total = table_rows()
    assert total == Figure(30, exact=False) and str(total) == "≈ 30"
    assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)


def _outbox_selects(queries) -> list[str]:
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    return [q["sql"] for q in queries.captured_queries if f"FROM {table}" in q["sql"]]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"status__exact": "dead"},
        {"last_error_code": "invalid"},
        {"kind__exact": "event", "created_at__gte": "2026-01-01 00:00:00+00:00"},
        {"q": "ann@example.com"},
    ],
)
def test_changelist_and_dashboard_never_read_the_whole_table(staff, params, monkeypatch):
    # More matching rows than one page, as on a big table (a single page is read whole).
    monkeypatch.setattr(OutboxEventAdmin, "list_per_page", 2)
    for n in range(12):
        row(S.SENT if n % 3 else S.DEAD, last_error_code="" if n % 3 else "invalid")
    with CaptureQueriesContext(connection) as queries:
        response = staff.get(reverse(CHANGELIST), params)
    assert response.status_code == 200
    selects = _outbox_selects(queries)
    assert selects
    pk = connection.ops.quote_name("id").upper()
    for sql in selects:
        upper = sql.upper()
        # No DISTINCT or GROUP BY over the table (the hourly chart groups only the newest
        # rows, a LIMITed subquery), and every row read or count is bounded: a LIMIT, the
        # page's rows by primary key, the due index's MIN, the table statistics or the
        # planner's estimate.
        assert "DISTINCT" not in upper, sql
        if "GROUP BY" in upper:
            assert re.search(r"FROM \(SELECT .+ LIMIT \d+\) \w+ GROUP BY", upper), sql
        assert (
            re.search(r"\bLIMIT\b", upper)
            or f"{pk} IN (" in upper
            or "MIN(" in upper
            or upper.startswith("EXPLAIN")
            or "ROWID" in upper
        ), sql


def test_changelist_is_newest_first_and_counts_without_a_full_count(staff):
    rows = [row(S.SENT) for _ in range(5)]
    response = staff.get(reverse(CHANGELIST))
    cl = response.context["cl"]
    assert list(cl.result_list) == rows[::-1]
    assert cl.result_count == 5


def test_error_code_filter_offers_only_codes_of_failing_rows(staff):
    row(S.DEAD, last_error_code="invalid")
    row(S.RETRYING, last_error_code="throttled")
    old = row(S.SENT, last_error_code="server_error")  # failed once, then went through
    response = staff.get(reverse(CHANGELIST))
    [code_filter] = [
        f
        for f in response.context["cl"].filter_specs
        if getattr(f, "parameter_name", None) == "last_error_code"
    ]
    assert [value for value, _ in code_filter.lookup_choices] == ["invalid", "throttled"]
    response = staff.get(reverse(CHANGELIST), {"last_error_code": "server_error"})
    assert old not in response.context["cl"].result_list


# --- the hourly chart ----------------------------------------------------------------------


@pytest.fixture
def viewer(client):
    """Staff who may only view the outbox (a support role), not a superuser."""
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user("viewer", "viewer@example.com", "pw")
    user.is_staff = True
    user.save()
    user.user_permissions.add(Permission.objects.get(codename="view_outboxevent"))
    client.force_login(user)
    return client


def timeline_figure(page: str) -> ET.Element:
    """The chart inside the dashboard's #klaviyo-timeline, parsed (it is well-formed)."""
    block = page[page.index('id="klaviyo-timeline"') :]
    figure = block[block.index("<figure") : block.index("</figure>") + len("</figure>")]
    return ET.fromstring(figure.replace(' xmlns="http://www.w3.org/2000/svg"', ""))


def figures_table(figure: ET.Element) -> dict[str, tuple[str, str]]:
    rows = figure.findall(".//details/table/tbody/tr")
    return {
        row.find("th").text: tuple("".join(td.itertext()) for td in row.findall("td"))
        for row in rows
    }


def test_view_only_staff_see_the_hourly_chart_with_its_figures(viewer):
    # Rows at fixed hours: should the page's clock pass an hour, they stay in its 24.
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    for minutes in (0, 1):
        row(S.SENT, sent_at=hour + dt.timedelta(minutes=minutes))
    row(S.SENT, sent_at=hour - dt.timedelta(hours=2))
    dead = row(S.DEAD, last_error_code="invalid")
    OutboxEvent.objects.filter(pk=dead.pk).update(updated_at=hour - dt.timedelta(minutes=30))

    response = viewer.get(reverse(CHANGELIST))

    assert response.status_code == 200
    page = response.content.decode()
    assert "/static/django_klaviyo/charts.css" in page
    assert "/static/django_klaviyo/outbox_dashboard.css" in page
    figure = timeline_figure(page)
    figures = figures_table(figure)
    assert len(figures) == 24  # every hour, the quiet ones too
    label = lambda at: at.strftime("%H:%M")  # noqa: E731 - UTC in the test settings
    assert figures[label(hour)] == ("2", "0")
    assert figures[label(hour - dt.timedelta(hours=1))] == ("0", "1")
    assert figures[label(hour - dt.timedelta(hours=2))] == ("1", "0")
    # The bars draw the same numbers: 3 sent, 1 dead.
    values = {
        series: sum(
            float(r.get("data-value")) for r in figure.iter("rect") if series in r.get("class")
        )
        for series in ("dk-series-0", "dk-series-1")
    }
    assert values == {"dk-series-0": 3, "dk-series-1": 1}
    assert ["".join(li.itertext()) for li in figure.iter("li")] == ["Sent", "Dead"]


def test_a_quiet_day_says_no_data_instead_of_an_empty_chart(viewer):
    figure = timeline_figure(viewer.get(reverse(CHANGELIST)).content.decode())
    assert figure.find("p").text == "No data."


def test_hours_read_in_part_or_not_at_all_say_so_in_the_chart():
    start = dt.datetime(2026, 5, 4, 9, tzinfo=dt.timezone.utc)
    buckets = [
        HourBucket(start, None, 0),
        HourBucket(start + dt.timedelta(hours=1), 1200, 0, sent_partial=True),
        HourBucket(start + dt.timedelta(hours=2), 3400, 2),
    ]
    figure = ET.fromstring(
        str(timeline_chart(buckets)).replace(' xmlns="http://www.w3.org/2000/svg"', "")
    )
    assert figures_table(figure) == {
        "09:00": ("not counted", "0"),
        "10:00": ("1,200+", "0"),
        "11:00": ("3,400", "2"),
    }
    titles = ["".join(r.find("title").itertext()) for r in figure.iter("rect")]
    assert "09:00, Sent: not counted" in titles
    assert "10:00, Sent: 1,200+" in titles


def test_the_changelist_says_when_the_chart_left_hours_uncounted(staff, monkeypatch):
    from django_klaviyo.admin import outbox

    monkeypatch.setattr(outbox, "TIMELINE_ROWS", 2)
    now = timezone.now()
    for hours_ago in (0, 0, 3):
        row(S.SENT, sent_at=now - dt.timedelta(hours=hours_ago))
    page = staff.get(reverse(CHANGELIST)).content.decode()
    assert "older hours show no bar" in page
    assert "not counted" in "".join(timeline_figure(page).itertext())


@pytest.mark.parametrize("per_page", [1, 100])  # several pages (OutboxPaginator), or one
def test_a_page_leaves_the_payload_and_error_detail_unread(staff, per_page, monkeypatch):
    monkeypatch.setattr(OutboxEventAdmin, "list_per_page", per_page)
    for _ in range(2):
        row(S.DEAD, last_error_code="invalid", last_error_detail="x" * 5000)
    with CaptureQueriesContext(connection) as queries:
        response = staff.get(reverse(CHANGELIST))
    shown = list(response.context["cl"].result_list)
    assert len(shown) == min(per_page, 2)
    assert all(r.get_deferred_fields() == {"payload", "last_error_detail"} for r in shown)
    payload = connection.ops.quote_name("payload")
    for sql in _outbox_selects(queries):
        assert sql.startswith("EXPLAIN") or f".{payload}" not in sql, sql
    assert "Placed Order" in response.content.decode()


def test_the_list_shows_times_to_the_second_and_sorts_by_them(staff, settings):
    settings.TIME_ZONE = "Europe/Paris"
    sent_at = dt.datetime(2026, 5, 4, 12, 30, 15, tzinfo=dt.timezone.utc)
    row(S.SENT, sent_at=sent_at)
    row(S.PENDING)
    page = staff.get(reverse(CHANGELIST)).content.decode()
    assert '<td class="field-sent">2026-05-04 14:30:15</td>' in page  # Paris, summer time
    assert '<td class="field-sent">-</td>' in page  # not sent yet
    # The columns still sort by their field (the header links to ?o=<column>).
    sorted_page = staff.get(reverse(CHANGELIST), {"o": "9"})
    assert sorted_page.status_code == 200
    ordering = sorted_page.context["cl"].queryset.query.order_by
    assert any("sent_at" in str(field) for field in ordering), ordering
