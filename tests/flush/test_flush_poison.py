"""Poison rows are contained: one row that cannot be read, prepared or encoded ends dead
with the reason, the rest of its batch goes on, and no row is retried past MAX_ATTEMPTS,
however its attempts ended (even when every flusher holding it died)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.db import connection
from django.test import override_settings

from django_klaviyo import rules
from django_klaviyo.flush.claim import reclaim_expired_leases
from django_klaviyo.models import OutboxEvent
from tests.flush.test_flush import EVENTS_URL, bulk_events, calls_to, make_event
from tests.klaviyo_fixtures import flush
from tests.projects.settings import KLAVIYO as TEST_KLAVIYO

Status = OutboxEvent.Status

# Rate-limit windows live in the cache: every test starts with none.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_rate_limits")]


def nested(depth: int) -> str:
    """JSON text of an object ``depth`` levels deep (json.dumps itself would give up)."""
    return '{"deeper": ' * depth + '"bottom"' + "}" * depth


def insert_by_sql(payload_text: str, *, rules_version: int) -> uuid.UUID:
    """An event row written around the API and its rules, as a hand-written SQL would."""
    pk = uuid.uuid4()
    table = OutboxEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (id, kind, payload, metric, unique_id, profile_key, "
            "rules_version, status, attempts, next_attempt_at, last_error_code, "
            "last_error_detail, locked_by, outcome_note, created_at, updated_at) "
            f"VALUES (%s, 'event', %s::jsonb, 'Placed Order', 'poison', 'email:p@example.com', "
            "%s, 'pending', 0, %s, '', '', '', '', %s, %s)",
            [str(pk), payload_text, rules_version, *[_now()] * 3],
        )
    return pk


def _now() -> Any:
    from django.utils import timezone

    return timezone.now() - timedelta(seconds=1)


@pytest.mark.postgres  # SQLite refuses JSON nested this deep, so it cannot hold such a row
@pytest.mark.parametrize(
    ("rules_version", "depth"),
    [
        # The row: never cleaned, so the flusher cleans it and the nesting rule refuses it.
        (0, 3_000),
        # A row that claims the current rules: trusted, so only a failure while preparing it
        # can stop it. Python 3.13 parses 3,000 levels; none of 3.10-3.13 parses 10,000.
        (rules.RULES_VERSION, 10_000),
    ],
    ids=["unclean", "current"],
)
def test_a_row_nested_too_deep_is_dead_and_its_batch_is_sent(
    klaviyo_client, clock, mocked, rules_version, depth
):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    healthy = [make_event(unique_id=f"ok{i}") for i in range(5)]
    payload = (
        '{"metric": "Placed Order", "profile": {"email": "p@example.com"}, '
        f'"properties": {nested(depth)}}}'
    )
    poison = insert_by_sql(payload, rules_version=rules_version)

    report = flush(klaviyo_client, clock)

    status, code, detail = OutboxEvent.objects.filter(pk=poison).values_list(
        "status", "last_error_code", "last_error_detail"
    )[0]
    assert status == Status.DEAD
    assert code == "invalid_payload"
    assert "RecursionError" in detail or "nest" in detail
    assert (
        OutboxEvent.objects.filter(pk__in=[r.pk for r in healthy], status=Status.SENT).count() == 5
    )
    (call,) = calls_to(mocked, EVENTS_URL)
    assert sorted(e["unique_id"] for _, e in bulk_events(call)) == [f"ok{i}" for i in range(5)]
    assert (report.sent, report.dead) == (5, 1)


@override_settings(KLAVIYO={**TEST_KLAVIYO, "MAX_ATTEMPTS": 3})
def test_a_row_reclaimed_after_max_attempts_is_dead_not_retried(clock):
    """A row whose every flusher died holding it (its attempts counted at each claim)."""
    worn = make_event(
        status=Status.SENDING,
        attempts=3,
        locked_by="crashed-host:1:abc",
        locked_at=clock.now - timedelta(seconds=301),
    )
    fresh = make_event(
        status=Status.SENDING,
        attempts=2,
        locked_by="crashed-host:1:abc",
        locked_at=clock.now - timedelta(seconds=301),
    )

    reclaim_expired_leases(now=clock.now)

    worn.refresh_from_db()
    assert worn.status == Status.DEAD
    assert worn.last_error_code == "lease_expired"
    assert worn.last_error_detail.startswith("Gave up after 3 attempts")
    fresh.refresh_from_db()
    assert fresh.status == Status.RETRYING


def test_a_request_that_cannot_be_built_is_split_until_its_bad_row_is_dead(clock, mocked):
    """An exception that is not Klaviyo's answer (here: building the body of any request
    holding one row fails, as a payload written around the rules can make it) ends only
    that row, found by splitting the request; the rest of the batch is sent."""
    from django_klaviyo.client import KlaviyoClient

    class Client(KlaviyoClient):
        def send_event_entries(self, entries: Any) -> None:
            if any(e["unique_id"] == "bad" for entry in entries for e in entry["events"]):
                raise RecursionError("maximum recursion depth exceeded while encoding")
            super().send_event_entries(entries)

    mocked.add(responses.POST, EVENTS_URL, status=202)
    rows = [make_event(unique_id=f"ok{i}") for i in range(5)]
    bad = make_event(unique_id="bad")

    report = flush(Client(sleep=clock.sleep, clock=clock.monotonic), clock)

    bad.refresh_from_db()
    assert (bad.status, bad.last_error_code) == (Status.DEAD, "invalid_payload")
    assert "RecursionError" in bad.last_error_detail
    assert OutboxEvent.objects.filter(pk__in=[r.pk for r in rows], status=Status.SENT).count() == 5
    assert (report.sent, report.dead) == (5, 1)
