"""Honest outcomes: what a row records is what Klaviyo did with it.

A key missing one scope holds only the kinds whose endpoint needs it (the row says which
scope), while a rejected key (401) still stops the run; the flusher makes one HTTP attempt
per call and does its own retries; a 409 duplicate_profile met while looking up a
list member's id is resolved by updating the profile Klaviyo names.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import responses
from django.utils import timezone

import django_klaviyo
from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent
from django_klaviyo.testing.sandbox import SandboxServer
from tests.flush.test_flush import (
    EVENTS_URL,
    PROFILE_IMPORT_URL,
    body,
    calls_to,
    duplicate_body,
    error_body,
    list_url,
    make_event,
    make_row,
    url,
)
from tests.klaviyo_fixtures import FakeClock

Status = OutboxEvent.Status
Kind = OutboxEvent.Kind

# Rate-limit windows live in the cache: every test starts with none.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_rate_limits")]


@pytest.mark.klaviyo_sandbox()
def test_a_key_without_the_subscriptions_scope_holds_only_subscriptions(
    klaviyo_sandbox: SandboxServer,
) -> None:
    klaviyo_sandbox.deny_scopes("subscriptions:write")
    subscribe = django_klaviyo.subscribe({"email": "ada@example.com"}, channels=["email"])
    order = django_klaviyo.track("Placed Order", {"email": "ada@example.com"}, unique_id="o1")
    started = timezone.now()

    report = flush_outbox()

    assert OutboxEvent.objects.get(pk=order.pk).status == Status.SENT
    assert len(klaviyo_sandbox.state.events("Placed Order")) == 1
    held = OutboxEvent.objects.get(pk=subscribe.pk)
    assert (held.status, held.attempts) == (Status.PENDING, 0)  # waits, uncounted
    assert held.last_error_status == 403
    assert held.last_error_code == "missing_scope"
    assert "subscriptions:write" in held.last_error_detail  # what the admin shows
    assert held.next_attempt_at >= started + timedelta(minutes=4)
    assert report.kinds["subscribe"].held == 1
    assert "waiting for a scope 1" in "\n".join(report.summary_lines())

    # Once the scope is granted, the row goes out when it is due again.
    klaviyo_sandbox.deny_scopes()
    OutboxEvent.objects.filter(pk=subscribe.pk).update(next_attempt_at=timezone.now())
    flush_outbox()
    assert OutboxEvent.objects.get(pk=subscribe.pk).status == Status.SENT


def test_the_flusher_makes_one_http_attempt_per_call_and_retries_by_rescheduling() -> None:
    """The settings' client would try 3 times within the request (HTTP_MAX_ATTEMPTS);
    the flusher's does not: one policy (the row's back-off), one place."""
    row = make_event()
    with responses.RequestsMock() as mocked:
        mocked.add(
            responses.POST, EVENTS_URL, status=503, json=error_body(503, "unavailable", "Down.")
        )
        report = flush_outbox()
        assert len(calls_to(mocked, EVENTS_URL)) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error_status) == (Status.RETRYING, 1, 503)
    assert report.retrying == 1


def test_a_duplicate_profile_met_while_resolving_a_list_member_uses_the_named_profile() -> None:
    clock = FakeClock()
    from django_klaviyo.client import KlaviyoClient

    row = make_row(
        Kind.LIST_ADD,
        {"list_id": "LIST1", "profile": {"email": "guest@example.com", "external_id": "7"}},
    )
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, PROFILE_IMPORT_URL, status=409, json=duplicate_body("01GUEST"))
        mocked.add(
            responses.PATCH,
            url("/profiles/01GUEST"),
            json={"data": {"type": "profile", "id": "01GUEST", "attributes": {}}},
        )
        mocked.add(responses.POST, list_url("LIST1"), status=204)
        flush_outbox(
            client=KlaviyoClient(sleep=clock.sleep, clock=clock.monotonic),
            clock=clock,
            sleep=clock.sleep,
        )
        (add,) = calls_to(mocked, list_url("LIST1"))
        assert body(add)["data"] == [{"type": "profile", "id": "01GUEST"}]
        patch = calls_to(mocked, re.compile(r".*/profiles/01GUEST"))[0]
        assert body(patch)["data"]["attributes"]["external_id"] == "7"
    assert OutboxEvent.objects.get(pk=row.pk).status == Status.SENT


def test_a_rejected_key_still_stops_the_run() -> None:
    from django_klaviyo.flush import FlushAborted

    make_event()
    with responses.RequestsMock() as mocked:
        mocked.add(
            responses.POST,
            EVENTS_URL,
            status=401,
            json=error_body(401, "authentication_failed", "Incorrect authentication credentials."),
        )
        with pytest.raises(FlushAborted) as caught:
            flush_outbox()
    assert caught.value.reason == "auth"


def test_the_scopes_named_to_the_admin_are_those_of_klaviyos_spec() -> None:
    from django_klaviyo.flush.outages import SCOPES
    from django_klaviyo.testing import openapi

    for operation, scopes in SCOPES.items():
        assert scopes == tuple(openapi.operation(operation)["x-klaviyo-scopes"]), operation


def test_klaviyo_unreachable_puts_rows_back_without_spending_their_attempts(settings) -> None:
    """Nothing left (connection refused): a network outage must not use up MAX_ATTEMPTS."""
    settings.KLAVIYO = {**settings.KLAVIYO, "API_URL": "http://127.0.0.1:9"}
    row = make_event()
    started = timezone.now()

    report = flush_outbox()

    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.PENDING, 0)
    assert row.next_attempt_at > started
    assert report.kinds["event"].released == 1


@pytest.mark.klaviyo_sandbox()
def test_list_removes_of_unknown_profiles_look_them_up_100_at_a_time(
    klaviyo_sandbox: SandboxServer,
) -> None:
    list_id = klaviyo_sandbox.state.create_list("Newsletter")["id"]
    known = [
        klaviyo_sandbox.state.upsert_profile({"email": f"m{i}@example.com"}, None)[0]["id"]
        for i in range(150)
    ]
    klaviyo_sandbox.state.add_members(list_id, known)
    for i in range(151):  # the last one Klaviyo has never seen
        django_klaviyo.remove_from_list(list_id, {"email": f"m{i}@example.com"})

    report = flush_outbox()

    counts = klaviyo_sandbox.state.request_counts()
    assert sum(counts["get_profiles"].values()) == 2  # 151 emails, 100 per lookup
    assert sum(counts["remove_profiles_from_list"].values()) == 1
    assert klaviyo_sandbox.state.members(list_id) == []
    assert report.sent == 151
