"""Health: klaviyo_status's figures, thresholds and exit codes, the status endpoint, the
dashboard's hourly timeline."""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from django_klaviyo import health
from django_klaviyo.models import OutboxEvent
from tests.projects.settings import KLAVIYO

pytestmark = pytest.mark.django_db
S = OutboxEvent.Status
K = OutboxEvent.Kind


def row(status: str, *, kind: str = K.EVENT, **fields) -> OutboxEvent:
    defaults = {
        "payload": {"metric": "Placed Order", "profile": {"email": "a@example.com"}},
        "profile_key": "email:a@example.com",
        "next_attempt_at": timezone.now(),
    }
    return OutboxEvent.objects.create(kind=kind, status=status, **{**defaults, **fields})


def status(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("klaviyo_status", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code), out.getvalue()
    return 0, out.getvalue()


def test_an_empty_outbox_is_healthy():
    code, out = status()
    assert code == health.HEALTHY
    assert "status: healthy" in out
    assert "last successful send: never" in out


def test_figures_count_due_rows_by_kind_dead_rows_by_code_and_the_last_send():
    now = timezone.now()
    row(S.PENDING, next_attempt_at=now - dt.timedelta(minutes=3))
    row(S.RETRYING, kind=K.SUBSCRIBE, next_attempt_at=now - dt.timedelta(minutes=1))
    row(S.PENDING, next_attempt_at=now + dt.timedelta(hours=1))  # not due yet
    row(S.DEAD, last_error_code="invalid")
    row(S.DEAD, last_error_code="invalid")
    row(S.DEAD, last_error_code="not_found")
    sent_at = now - dt.timedelta(minutes=7)
    row(S.SENT, sent_at=sent_at)
    row(S.SENT, sent_at=now - dt.timedelta(hours=2))

    result = health.check(health.Thresholds(max_dead=None), now=now)

    assert result.due_by_kind == {"event": 1, "subscribe": 1}
    assert result.oldest_due_age == dt.timedelta(minutes=3)
    assert result.dead_by_error_code == {"invalid": 2, "not_found": 1}
    assert result.last_sent_at == sent_at
    assert result.code == health.HEALTHY


def test_json_output_carries_the_same_figures():
    row(S.DEAD, last_error_code="invalid")
    code, out = status("--json", "--max-dead", "off")
    data = json.loads(out)
    assert code == 0
    assert data["status"] == "healthy"
    assert data["dead_by_error_code"] == {"invalid": 1}
    assert data["due"] == 0 and data["last_sent_at"] is None


def test_too_many_due_rows_exit_1_backlog():
    for _ in range(3):
        row(S.PENDING)
    assert status("--max-due", "3")[0] == health.HEALTHY
    code, out = status("--max-due", "2")
    assert code == health.BACKLOG
    assert "3 due rows (threshold 2)" in out


def test_an_old_due_row_exits_1_backlog():
    row(S.PENDING, next_attempt_at=timezone.now() - dt.timedelta(minutes=20))
    assert status("--max-age", "3600")[0] == health.HEALTHY
    code, out = status("--max-age", "600")
    assert code == health.BACKLOG
    assert "oldest due row waiting" in out


def test_the_due_age_threshold_defaults_to_the_setting():
    row(S.PENDING, next_attempt_at=timezone.now() - dt.timedelta(minutes=20))
    assert status()[0] == health.BACKLOG  # default 900 s
    with override_settings(KLAVIYO={**KLAVIYO, "HEALTH_MAX_DUE_AGE_SECONDS": None}):
        assert status()[0] == health.HEALTHY


def test_dead_rows_exit_2_and_backlog_with_dead_exits_3():
    row(S.DEAD, last_error_code="invalid")
    code, out = status()  # default: no dead row tolerated
    assert code == health.DEAD
    assert "invalid: 1" in out
    assert status("--max-dead", "1")[0] == health.HEALTHY
    row(S.PENDING)
    assert status("--max-due", "0")[0] == health.BACKLOG | health.DEAD == 3


# --- the endpoint -----------------------------------------------------------------------

URL = "/klaviyo/status/"


def test_endpoint_refuses_anonymous_callers(client):
    assert client.get(URL).status_code == 403


def test_endpoint_refuses_every_token_while_none_is_configured(client):
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer None").status_code == 403
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer ").status_code == 403


@override_settings(KLAVIYO={**KLAVIYO, "HEALTH_TOKEN": "probe-token-123"})
def test_endpoint_with_the_token_answers_200_when_healthy_and_503_otherwise(client):
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    ok = client.get(URL, HTTP_AUTHORIZATION="Bearer probe-token-123")
    assert ok.status_code == 200
    assert ok.json()["status"] == "healthy"
    row(S.DEAD, last_error_code="invalid")
    bad = client.get(URL, HTTP_AUTHORIZATION="Bearer probe-token-123")
    assert bad.status_code == 503
    assert bad.json()["dead_by_error_code"] == {"invalid": 1}
    assert "probe-token-123" not in bad.content.decode()


def test_endpoint_answers_staff_without_a_token(client, django_user_model):
    user = django_user_model.objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(URL).json()["status"] == "healthy"
    user.is_staff = False
    user.save()
    assert client.get(URL).status_code == 403


# --- the dashboard timeline ---------------------------------------------------------------


def test_timeline_buckets_sent_and_dead_rows_by_hour():
    now = dt.datetime(2026, 5, 4, 12, 30, tzinfo=dt.timezone.utc)
    row(S.SENT, sent_at=now - dt.timedelta(minutes=10))  # 12:20
    row(S.SENT, sent_at=now - dt.timedelta(minutes=20))  # 12:10
    row(S.SENT, sent_at=now - dt.timedelta(hours=2))  # 10:30
    row(S.SENT, sent_at=now - dt.timedelta(hours=30))  # outside the window
    dead = row(S.DEAD)
    OutboxEvent.objects.filter(pk=dead.pk).update(updated_at=now - dt.timedelta(minutes=50))

    timeline = health.hourly_timeline(24, now=now)

    assert len(timeline) == 24
    by_hour = {b.hour.hour: (b.sent, b.dead) for b in timeline}
    assert timeline[-1].hour == dt.datetime(2026, 5, 4, 12, tzinfo=dt.timezone.utc)
    assert by_hour[12] == (2, 0)
    assert by_hour[11] == (0, 1)
    assert by_hour[10] == (1, 0)
    assert sum(b.sent for b in timeline) == 3


def test_dashboard_shows_the_hourly_timeline(admin_client):
    sent = row(S.SENT, sent_at=timezone.now())
    page = admin_client.get("/admin/django_klaviyo/outboxevent/").content.decode()
    assert 'id="klaviyo-timeline"' in page
    # The chart's figures (tests/admin/test_admin_dashboard.py reads them in full).
    hour = f"{sent.sent_at:%H:%M}"[:3] + "00"
    assert f'<tr><th scope="row">{hour}</th><td class="dk-num" data-value="1">1</td>' in page


def test_the_dashboard_timeline_reads_a_bounded_number_of_rows():
    now = dt.datetime(2026, 5, 4, 12, 30, tzinfo=dt.timezone.utc)
    for minutes in (1, 2, 3):
        row(S.SENT, sent_at=now - dt.timedelta(minutes=minutes))  # 12:xx
    row(S.SENT, sent_at=now - dt.timedelta(minutes=50))  # 11:40
    row(S.SENT, sent_at=now - dt.timedelta(minutes=55))  # 11:35
    row(S.SENT, sent_at=now - dt.timedelta(hours=2))  # 10:30

    bounded = health.hourly_timeline(4, now=now, limit=4)
    exact = health.hourly_timeline(4, now=now)

    # The 4 newest: three at 12:xx, one of 11:xx's two, so 11:00 is partial and 10:00 and
    # 09:00 were not read.
    assert [(b.sent, b.sent_partial) for b in bounded] == [
        (None, False),
        (None, False),
        (1, True),
        (3, False),
    ]
    assert [b.sent for b in exact] == [0, 1, 2, 3]


def test_due_rows_are_counted_up_to_a_cap_above_the_threshold(monkeypatch):
    monkeypatch.setattr(health, "DUE_COUNT_CAP", 2)
    for _ in range(4):
        row(S.PENDING)
    capped = health.check(health.Thresholds(max_due=None, max_dead=None))
    assert capped.due == 3 and capped.due_capped
    assert capped.as_dict()["due_at_least"] is True
    # A threshold above the cap raises it, so the verdict is always exact.
    exact = health.check(health.Thresholds(max_due=10, max_dead=None))
    assert exact.due == 4 and not exact.due_capped and exact.code == health.HEALTHY
