"""Flushing the outbox: claiming, batching into Klaviyo requests, and recording outcomes.

Klaviyo is mocked at the HTTP level with ``responses``; rows are real database rows.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
import responses
from django.db import OperationalError, connection
from django.test import override_settings

from django_klaviyo.flush import FlushAborted, flush_outbox
from django_klaviyo.flush.claim import claim_batch, reclaim_expired_leases
from django_klaviyo.flush.loop import Flusher
from django_klaviyo.models import (
    Consent,
    KlaviyoList,
    KlaviyoProfileLink,
    ListMembership,
    OutboxEvent,
)
from django_klaviyo.rules.identifiers import profile_key
from tests.klaviyo_fixtures import flush
from tests.projects.settings import KLAVIYO as TEST_KLAVIYO

API = "https://a.klaviyo.com/api"
Status = OutboxEvent.Status
Kind = OutboxEvent.Kind

# Rate-limit windows live in the cache: every test starts with none.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_rate_limits")]


def url(path: str) -> re.Pattern[str]:
    """A Klaviyo endpoint URL, with or without a trailing slash or query string."""
    return re.compile(rf"^{re.escape(API + path)}/?(\?.*)?$")


EVENTS_URL = url("/event-bulk-create-jobs")
PROFILE_IMPORT_URL = url("/profile-import")
BULK_IMPORT_URL = url("/profile-bulk-import-jobs")
SUBSCRIBE_URL = url("/profile-subscription-bulk-create-jobs")
UNSUBSCRIBE_URL = url("/profile-subscription-bulk-delete-jobs")
DELETION_URL = url("/data-privacy-deletion-jobs")


def list_url(list_id: str) -> re.Pattern[str]:
    return url(f"/lists/{list_id}/relationships/profiles")


def make_event(
    *,
    email: str = "ada@example.com",
    metric: str = "Placed Order",
    unique_id: str | None = None,
    properties: dict[str, Any] | None = None,
    status: str = Status.PENDING,
    save: bool = True,
    **fields: Any,
) -> OutboxEvent:
    profile = {"email": email}
    row = OutboxEvent(
        kind=Kind.EVENT,
        payload={
            "metric": metric,
            "profile": profile,
            "properties": properties or {"OrderId": unique_id},
            "time": "2026-07-20T12:34:56+00:00",
            "value": 49.5,
            "value_currency": "USD",
        },
        metric=metric,
        unique_id=unique_id or uuid.uuid4().hex,
        profile_key=profile_key(profile),
        status=status,
        **fields,
    )
    if save:
        row.save()
    return row


def make_row(kind: str, payload: dict[str, Any], **fields: Any) -> OutboxEvent:
    return OutboxEvent.objects.create(
        kind=kind, payload=payload, profile_key=profile_key(payload.get("profile", {})), **fields
    )


def body(call: Any) -> dict[str, Any]:
    return json.loads(call.request.body)


def bulk_events(call: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(profile attributes, event attributes) for every event of a bulk-create request."""
    found = []
    for entry in body(call)["data"]["attributes"]["events-bulk-create"]["data"]:
        profile = entry["attributes"]["profile"]["data"]["attributes"]
        for event in entry["attributes"]["events"]["data"]:
            found.append((profile, event["attributes"]))
    return found


def calls_to(mocked: Any, pattern: re.Pattern[str]) -> list[Any]:
    return [c for c in mocked.calls if pattern.match(c.request.url)]


def error_body(status: int, code: str, detail: str, pointer: str | None = None) -> dict:
    item: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": "Invalid input.",
        "detail": detail,
    }
    if pointer:
        item["source"] = {"pointer": pointer}
    return {"errors": [item]}


# -------------------------------------------------------------------------------------
# Events


def test_every_event_is_delivered_once_with_its_unique_id(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    rows = [make_event(email="ada@example.com", unique_id=f"order-1-{i}") for i in range(3)]
    rows += [make_event(email="bob@example.com", unique_id="order-2-0", metric="Started Checkout")]

    report = flush(klaviyo_client, clock)

    (call,) = calls_to(mocked, EVENTS_URL)
    sent = bulk_events(call)
    assert sorted(e["unique_id"] for _, e in sent) == sorted(r.unique_id for r in rows)
    by_uid = {e["unique_id"]: (p, e) for p, e in sent}
    profile, event = by_uid["order-2-0"]
    assert profile["email"] == "bob@example.com"
    assert event["metric"]["data"]["attributes"]["name"] == "Started Checkout"
    assert event["value"] == 49.5
    assert event["value_currency"] == "USD"
    assert event["properties"] == {"OrderId": "order-2-0"}
    assert event["time"].startswith("2026-07-20T12:34:56")
    # Rows of one profile share one entry.
    entries = body(call)["data"]["attributes"]["events-bulk-create"]["data"]
    assert len(entries) == 2
    assert report.sent == 4 and report.requests == 1
    assert report.kinds["event"].sent == 4
    for row in OutboxEvent.objects.all():
        assert row.status == Status.SENT
        assert row.sent_at == clock.now
        assert row.attempts == 1
        assert row.locked_by == "" and row.locked_at is None


def test_ten_thousand_order_events_go_out_in_about_ten_requests(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    rows = []
    for order in range(2500):
        email = f"customer{order % 700}@example.com"
        rows.append(make_event(email=email, unique_id=f"o{order}", save=False))
        for line in range(3):
            rows.append(
                make_event(
                    email=email, metric="Ordered Product", unique_id=f"o{order}-{line}", save=False
                )
            )
    OutboxEvent.objects.bulk_create(rows, batch_size=500)

    report = flush(klaviyo_client, clock)

    calls = calls_to(mocked, EVENTS_URL)
    assert len(calls) <= 12
    uids = [e["unique_id"] for call in calls for _, e in bulk_events(call)]
    assert len(uids) == 10_000
    assert len(set(uids)) == 10_000
    assert report.sent == 10_000
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 10_000


def test_a_repeated_unique_id_waits_for_the_next_request(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    make_event(unique_id="same")
    make_event(unique_id="same")
    make_event(unique_id="other")

    flush(klaviyo_client, clock)

    calls = calls_to(mocked, EVENTS_URL)
    assert len(calls) == 2
    for call in calls:
        uids = [e["unique_id"] for _, e in bulk_events(call)]
        assert len(uids) == len(set(uids))
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 3


def test_a_400_pointing_at_one_event_dead_letters_only_that_row(klaviyo_client, clock, mocked):
    rows = [make_event(email=f"p{i}@example.com", unique_id=f"u{i}") for i in range(4)]
    detail = "The phone number provided either does not exist or is ineligible to receive SMS"

    def answer(request: Any) -> tuple[int, dict, str]:
        entries = json.loads(request.body)["data"]["attributes"]["events-bulk-create"]["data"]
        for n, entry in enumerate(entries):
            for m, event in enumerate(entry["attributes"]["events"]["data"]):
                if event["attributes"]["unique_id"] == "u2":
                    pointer = (
                        f"/data/attributes/events-bulk-create/data/{n}/attributes/events/data/{m}"
                        "/attributes/properties"
                    )
                    return 400, {}, json.dumps(error_body(400, "invalid", detail, pointer))
        return 202, {}, ""

    mocked.add_callback(responses.POST, EVENTS_URL, callback=answer)

    report = flush(klaviyo_client, clock)

    assert len(calls_to(mocked, EVENTS_URL)) == 2
    resent = [e["unique_id"] for _, e in bulk_events(calls_to(mocked, EVENTS_URL)[1])]
    assert sorted(resent) == ["u0", "u1", "u3"]
    bad = OutboxEvent.objects.get(pk=rows[2].pk)
    assert bad.status == Status.DEAD
    assert bad.last_error_status == 400
    assert bad.last_error_code == "invalid"
    assert detail in bad.last_error_detail
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 3
    assert report.kinds["event"].dead == 1 and report.kinds["event"].sent == 3


def make_order_row(
    order: str, *, email: str = "ada@example.com", lines: int = 2, **fields: Any
) -> OutboxEvent:
    """A Placed Order row carrying one expanded Ordered Product per line."""
    row = make_event(email=email, unique_id=f"{order}-placed", save=False, **fields)
    row.payload["expand"] = [
        {
            "metric": "Ordered Product",
            "unique_id": f"{order}-line-{n}",
            "properties": {"OrderId": order, "Line": n},
            "value": 10.0 + n,
        }
        for n in range(lines)
    ]
    row.save()
    return row


def test_expanded_events_are_delivered_once_each_in_the_rows_entry(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    order = make_order_row("o1", lines=2)
    single = make_event(unique_id="viewed-1", metric="Viewed Product")
    other = make_order_row("o2", email="bob@example.com", lines=1)

    report = flush(klaviyo_client, clock)

    (call,) = calls_to(mocked, EVENTS_URL)
    sent = bulk_events(call)
    assert sorted(e["unique_id"] for _, e in sent) == sorted(
        ["o1-placed", "o1-line-0", "o1-line-1", "viewed-1", "o2-placed", "o2-line-0"]
    )
    by_uid = {e["unique_id"]: (p, e) for p, e in sent}
    profile, line = by_uid["o1-line-1"]
    assert profile["email"] == "ada@example.com"
    assert line["metric"]["data"]["attributes"]["name"] == "Ordered Product"
    assert line["properties"] == {"OrderId": "o1", "Line": 1}
    assert line["value"] == 11.0
    # Profile, time and currency are the row's.
    assert line["value_currency"] == "USD"
    assert line["time"] == by_uid["o1-placed"][1]["time"]
    # One entry per profile: Ada's order and her other event share it.
    entries = body(call)["data"]["attributes"]["events-bulk-create"]["data"]
    assert len(entries) == 2
    assert report.sent == 3  # rows, not events
    for row in (order, single, other):
        assert OutboxEvent.objects.get(pk=row.pk).status == Status.SENT


def test_a_400_pointing_at_an_expanded_event_dead_letters_that_row_only(
    klaviyo_client, clock, mocked
):
    early = clock.now - timedelta(minutes=5)
    bad = make_order_row("o1", lines=3, next_attempt_at=early)
    good = make_order_row("o2", email="bob@example.com", lines=1)
    detail = "Invalid value for line."

    def answer(request: Any) -> tuple[int, dict, str]:
        entries = json.loads(request.body)["data"]["attributes"]["events-bulk-create"]["data"]
        for n, entry in enumerate(entries):
            for m, event in enumerate(entry["attributes"]["events"]["data"]):
                if event["attributes"]["unique_id"] == "o1-line-2":
                    pointer = (
                        f"/data/attributes/events-bulk-create/data/{n}/attributes/events/data/{m}"
                        "/attributes/value"
                    )
                    return 400, {}, json.dumps(error_body(400, "invalid", detail, pointer))
        return 202, {}, ""

    mocked.add_callback(responses.POST, EVENTS_URL, callback=answer)

    report = flush(klaviyo_client, clock)

    first, second = calls_to(mocked, EVENTS_URL)
    assert len(bulk_events(first)) == 6
    # The whole bad row left the request; the good row went out again, complete.
    assert sorted(e["unique_id"] for _, e in bulk_events(second)) == ["o2-line-0", "o2-placed"]
    bad.refresh_from_db()
    assert bad.status == Status.DEAD
    assert bad.last_error_status == 400
    assert detail in bad.last_error_detail and "events/data/3" in bad.last_error_detail
    assert OutboxEvent.objects.get(pk=good.pk).status == Status.SENT
    assert report.kinds["event"].dead == 1 and report.kinds["event"].sent == 1


def test_a_repeat_among_expanded_events_waits_for_the_next_request(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    make_order_row("o1", lines=2)
    again = make_event(unique_id="o1-line-1", metric="Ordered Product")  # same key as a line

    flush(klaviyo_client, clock)

    calls = calls_to(mocked, EVENTS_URL)
    assert len(calls) == 2
    for call in calls:
        keys = [
            (p["email"], e["metric"]["data"]["attributes"]["name"], e["unique_id"])
            for p, e in bulk_events(call)
        ]
        assert len(keys) == len(set(keys))
    assert OutboxEvent.objects.get(pk=again.pk).status == Status.SENT
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 2


def test_a_row_expanding_beyond_one_request_is_split_by_events_not_rows(
    klaviyo_client, clock, mocked
):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    for order in range(3):  # 3 rows of 400 events: at most 2 rows per request
        make_order_row(f"o{order}", email=f"p{order}@example.com", lines=399)

    flush(klaviyo_client, clock)

    calls = calls_to(mocked, EVENTS_URL)
    assert [len(bulk_events(c)) for c in calls] == [800, 400]
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 3


@pytest.mark.parametrize(
    ("expand", "reason"),
    [
        ("not a list", "must be a list"),
        ([["x"]], "must be a dict"),
        ([{"metric": "Ordered Product"}], "unique_id"),
        ([{"metric": "", "unique_id": "l1"}], "metric"),
        ([{"metric": "M", "unique_id": "l1", "value": "12"}], "number"),
        ([{"metric": "M", "unique_id": "l1", "properties": [1]}], "must be a dict"),
        ([{"metric": "M", "unique_id": "l1", "time": "2026-01-01T00:00:00Z"}], "unknown key"),
        ([{"metric": "M", "unique_id": "l1"}, {"metric": "M", "unique_id": "l1"}], "repeats"),
    ],
)
def test_malformed_expand_lists_dead_letter_the_row_without_a_request(
    klaviyo_client, clock, mocked, expand, reason
):
    row = make_event(unique_id="placed", save=False)
    row.payload["expand"] = expand
    row.save()

    flush(klaviyo_client, clock)

    row.refresh_from_db()
    assert row.status == Status.DEAD
    assert row.last_error_code == "invalid_payload"
    assert reason in row.last_error_detail
    assert len(mocked.calls) == 0


def test_a_400_without_a_pointer_is_split_to_find_the_bad_row(klaviyo_client, clock, mocked):
    rows = [make_event(email=f"p{i}@example.com", unique_id=f"u{i}") for i in range(8)]

    def answer(request: Any) -> tuple[int, dict, str]:
        raw = request.body.decode() if isinstance(request.body, bytes) else request.body
        if '"u5"' in raw:
            return 400, {}, json.dumps(error_body(400, "invalid", "Bad event."))
        return 202, {}, ""

    mocked.add_callback(responses.POST, EVENTS_URL, callback=answer)

    flush(klaviyo_client, clock)

    assert OutboxEvent.objects.get(pk=rows[5].pk).status == Status.DEAD
    assert OutboxEvent.objects.get(pk=rows[5].pk).last_error_detail == "Bad event."
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 7
    # 1 + halving 8 -> 4 -> 2 -> 1: far fewer requests than one per row.
    assert len(calls_to(mocked, EVENTS_URL)) <= 7


def test_a_429_reschedules_no_earlier_than_retry_after(klaviyo_client, clock, mocked):
    mocked.add(
        responses.POST,
        EVENTS_URL,
        status=429,
        headers={"Retry-After": "600"},
        json=error_body(429, "throttled", "Request was throttled. Expected available in 600s."),
    )
    row = make_event()
    start = clock.now

    report = flush(klaviyo_client, clock)

    row.refresh_from_db()
    assert row.status == Status.RETRYING
    assert row.next_attempt_at >= start + timedelta(seconds=600)
    assert row.attempts == 1
    assert row.last_error_status == 429
    assert row.last_error_code == "throttled"
    assert row.locked_by == ""
    assert report.retrying == 1 and report.sent == 0


@override_settings(
    KLAVIYO={**TEST_KLAVIYO, "MAX_ATTEMPTS": 3, "HTTP_MAX_ATTEMPTS": 1, "RETRY_MAX_SECONDS": 60}
)
def test_repeated_500s_dead_letter_the_row_after_max_attempts(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, EVENTS_URL, status=500, json=error_body(500, "error", "Oops."))
    row = make_event()

    for attempt in (1, 2):
        flush(klaviyo_client, clock)
        row.refresh_from_db()
        assert (row.status, row.attempts) == (Status.RETRYING, attempt)
        assert row.next_attempt_at > clock.now
        # Not due yet: a flush now leaves it alone.
        assert flush(klaviyo_client, clock).requests == 0
        clock.advance(61)

    flush(klaviyo_client, clock)
    row.refresh_from_db()
    assert row.status == Status.DEAD
    assert row.attempts == 3
    assert row.last_error_status == 500
    assert row.last_error_detail.startswith("Gave up after 3 attempts")


def test_backoff_doubles_per_attempt_up_to_the_cap(clock):
    flusher = Flusher(client=object(), clock=clock, jitter=lambda: 1.0)
    with override_settings(
        KLAVIYO={**TEST_KLAVIYO, "RETRY_BASE_SECONDS": 2, "RETRY_MAX_SECONDS": 30}
    ):
        assert [flusher.retry_delay(n) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 30, 30]
        assert flusher.retry_delay(1, retry_after=45) == 45


def test_a_rejected_key_stops_and_puts_rows_back_uncounted(klaviyo_client, clock, mocked):
    mocked.add(
        responses.POST,
        EVENTS_URL,
        status=401,
        json=error_body(401, "authentication_failed", "Incorrect authentication credentials."),
    )
    earlier = clock.now - timedelta(minutes=5)
    fresh = make_event()
    retried = make_event(status=Status.RETRYING, attempts=2, next_attempt_at=earlier)

    with pytest.raises(FlushAborted) as caught:
        flush(klaviyo_client, clock)

    assert caught.value.reason == "auth"
    assert "PRIVATE_API_KEY" in str(caught.value)
    assert TEST_KLAVIYO["PRIVATE_API_KEY"] not in str(caught.value)
    fresh.refresh_from_db()
    retried.refresh_from_db()
    assert (fresh.status, fresh.attempts) == (Status.PENDING, 0)
    assert (retried.status, retried.attempts) == (Status.RETRYING, 2)
    assert retried.next_attempt_at == earlier
    assert not OutboxEvent.objects.filter(status__in=[Status.SENT, Status.SENDING]).exists()
    assert len(mocked.calls) == 1


def test_rows_marked_sent_before_a_key_rejection_stay_sent(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, PROFILE_IMPORT_URL, status=201, json={"data": {"id": "01P"}})
    mocked.add(responses.POST, EVENTS_URL, status=401, json=error_body(401, "auth", "No."))
    upsert = make_row(Kind.PROFILE_UPSERT, {"profile": {"email": "ada@example.com"}})
    event = make_event()

    with pytest.raises(FlushAborted):
        flush(klaviyo_client, clock)

    assert OutboxEvent.objects.get(pk=upsert.pk).status == Status.SENT
    assert OutboxEvent.objects.get(pk=event.pk).status == Status.PENDING


def test_a_client_side_validation_error_dead_letters_the_row_without_a_request(
    klaviyo_client, clock, mocked
):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    bad = make_row(
        Kind.EVENT,
        {"metric": "Placed Order", "profile": {"phone_number": "555-0100"}, "properties": {}},
        unique_id="x",
    )
    good = make_event()

    report = flush(klaviyo_client, clock)

    bad.refresh_from_db()
    assert bad.status == Status.DEAD
    assert bad.last_error_code == "invalid_payload"
    assert "E.164" in bad.last_error_detail
    assert OutboxEvent.objects.get(pk=good.pk).status == Status.SENT
    assert [e["unique_id"] for _, e in bulk_events(mocked.calls[0])] == [good.unique_id]
    assert report.dead == 1


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "not a dict",
        {"metric": "", "profile": {"email": "a@example.com"}},
        {"metric": "M", "profile": {"email": "a@example.com"}, "properties": [1]},
        {"metric": "M", "profile": {"email": "a@example.com"}, "value": "12"},
        {"metric": "M"},
    ],
)
def test_malformed_event_payloads_are_dead_lettered_not_crashing(
    klaviyo_client, clock, mocked, payload
):
    row = OutboxEvent.objects.create(kind=Kind.EVENT, payload=payload, unique_id="u")

    flush(klaviyo_client, clock)

    row.refresh_from_db()
    assert row.status == Status.DEAD
    assert row.last_error_detail.startswith("Invalid event row")
    assert len(mocked.calls) == 0


# -------------------------------------------------------------------------------------
# Claiming and leases


@pytest.fixture(params=["update and read-back", "conditional update"])
def claim_path(request: Any, monkeypatch: Any) -> str:
    """SQLite claims with an UPDATE and a read-back of the owner's rows, other backends
    without row locks with a conditional UPDATE: both must behave the same.
    PostgreSQL always claims in its one statement."""
    if request.param == "conditional update":
        monkeypatch.setattr("django_klaviyo.flush.claim._sqlite_claim", lambda c: False)
    return request.param


def test_claim_leases_due_rows_in_order_and_skips_future_ones(clock, claim_path):
    later = make_event(next_attempt_at=clock.now - timedelta(seconds=1))
    first = make_event(next_attempt_at=clock.now - timedelta(minutes=1))
    make_event(next_attempt_at=clock.now + timedelta(minutes=1))
    make_event(status=Status.SENT)

    rows = claim_batch(owner="me", batch_size=10, now=clock.now)

    assert [r.pk for r in rows] == [first.pk, later.pk]
    for row in rows:
        assert row.status == Status.SENDING
        assert row.locked_by == "me" and row.locked_at == clock.now
        assert row.attempts == 1
        assert row.previous_status == Status.PENDING
    assert claim_batch(owner="other", batch_size=10, now=clock.now) == []


def test_claim_respects_batch_size_and_kinds(clock, claim_path):
    for _ in range(3):
        make_event()
    upsert = make_row(Kind.PROFILE_UPSERT, {"profile": {"email": "a@example.com"}})

    assert len(claim_batch(owner="a", batch_size=2, now=clock.now)) == 2
    claimed = claim_batch(owner="b", batch_size=10, kinds=["profile_upsert"], now=clock.now)
    assert [r.pk for r in claimed] == [upsert.pk]


def test_the_conditional_update_keeps_a_racing_claimer_off_taken_rows(clock, claim_path):
    """Without row locks (SQLite) two claimers may pick the same candidates; the second
    one's UPDATE ... WHERE status IN (due) must then take nothing. (On PostgreSQL the
    claim is one statement, "WITH ... UPDATE", and the rival simply claims first.)"""
    rows = [make_event() for _ in range(3)]
    raced = {"done": False}

    def rival_claims_first(execute, sql, params, many, context):
        if not raced["done"] and sql.lstrip().upper().startswith(("UPDATE", "WITH")):
            raced["done"] = True
            claim_batch(owner="rival", batch_size=10, now=clock.now)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(rival_claims_first):
        mine = claim_batch(owner="me", batch_size=10, now=clock.now)

    assert mine == []
    assert {r.locked_by for r in OutboxEvent.objects.all()} == {"rival"}
    assert all(r.attempts == 1 for r in OutboxEvent.objects.filter(pk__in=[r.pk for r in rows]))


def test_expired_leases_are_reclaimed_and_then_sent(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    stale = make_event(
        status=Status.SENDING,
        attempts=1,
        locked_by="dead-host:1:abc",
        locked_at=clock.now - timedelta(seconds=301),
    )
    live = make_event(
        status=Status.SENDING,
        attempts=1,
        locked_by="busy-host:2:def",
        locked_at=clock.now - timedelta(seconds=10),
    )

    assert reclaim_expired_leases(now=clock.now) == 1
    stale.refresh_from_db()
    assert stale.status == Status.RETRYING and stale.next_attempt_at == clock.now
    assert stale.locked_by == ""

    report = flush(klaviyo_client, clock)

    assert OutboxEvent.objects.get(pk=stale.pk).status == Status.SENT
    assert OutboxEvent.objects.get(pk=stale.pk).attempts == 2
    assert OutboxEvent.objects.get(pk=live.pk).status == Status.SENDING
    assert report.sent == 1


def test_a_database_failure_while_marking_stops_and_leaves_rows_leased(
    klaviyo_client, clock, mocked
):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    row = make_event()

    def database_gone(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("UPDATE") and "sent_at" in sql:
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(database_gone), pytest.raises(FlushAborted) as caught:
        flush(klaviyo_client, clock)

    assert caught.value.reason == "database"
    row.refresh_from_db()
    assert row.status == Status.SENDING
    assert row.locked_by != ""
    # After the lease, another flusher picks it up again.
    clock.advance(301)
    flush(klaviyo_client, clock)
    assert OutboxEvent.objects.get(pk=row.pk).status == Status.SENT


def test_stop_is_honoured_between_batches(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    for _ in range(5):
        make_event()
    batches: list[int] = []

    report = flush(
        klaviyo_client,
        clock,
        batch_size=2,
        stop=lambda: len(batches) >= 1,
        progress=lambda r: batches.append(r.batches),
    )

    assert report.ended == "stopped"
    assert report.sent == 2
    assert OutboxEvent.objects.filter(status=Status.PENDING).count() == 3


def test_loop_mode_polls_with_idle_sleep_until_stopped(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    make_event()

    arrived: list[OutboxEvent] = []

    def stop_after_two_idle_sleeps() -> bool:
        if len(clock.slept) == 1 and not arrived:
            arrived.append(make_event())  # arrives while the worker idles
        return len(clock.slept) >= 2

    report = flush(klaviyo_client, clock, loop=True, idle_sleep=7, stop=stop_after_two_idle_sleeps)

    assert clock.slept == [7, 7]
    assert report.sent == 2
    assert report.ended == "stopped"


def test_dry_run_claims_nothing_and_sends_nothing(klaviyo_client, clock, mocked):
    for i in range(3):
        make_event(unique_id=f"u{i}")
    make_row(Kind.PROFILE_UPSERT, {"profile": {"email": "ada@example.com"}})
    make_row(Kind.EVENT, {"metric": "M", "profile": {}})

    report = flush(klaviyo_client, clock, dry_run=True)

    assert report.dry_run
    assert report.planned == {"event": 3, "profile_upsert": 1}
    assert report.planned_requests == 2
    assert report.planned_invalid == 1
    assert len(mocked.calls) == 0
    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {Status.PENDING}
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {0}
    assert "would be sent in 2 request(s)" in report.summary_lines()[0]


def test_an_unknown_kind_filter_is_a_clear_error(clock):
    with pytest.raises(ValueError, match="Unknown outbox kind"):
        flush_outbox(kinds=["event", "bogus"], clock=clock)


# -------------------------------------------------------------------------------------
# Profiles


def test_profile_upsert_stores_the_klaviyo_id_on_the_link(klaviyo_client, clock, mocked):
    mocked.add(
        responses.POST,
        PROFILE_IMPORT_URL,
        status=201,
        json={"data": {"type": "profile", "id": "01PROFILE", "attributes": {}}},
    )
    link = KlaviyoProfileLink.objects.create(email="Ada@Example.com", external_id="42")
    row = make_row(
        Kind.PROFILE_UPSERT,
        {"profile": {"external_id": "42", "email": "ada@example.com", "first_name": "Ada"}},
    )

    flush(klaviyo_client, clock)

    sent = body(mocked.calls[0])["data"]["attributes"]
    assert sent["external_id"] == "42" and sent["first_name"] == "Ada"
    link.refresh_from_db()
    assert link.klaviyo_id == "01PROFILE"
    assert OutboxEvent.objects.get(pk=row.pk).status == Status.SENT


def duplicate_body(profile_id: str) -> dict[str, Any]:
    return {
        "errors": [
            {
                "id": "x",
                "status": 409,
                "code": "duplicate_profile",
                "title": "Conflict.",
                "detail": "A profile already exists with one of these identifiers.",
                "source": {"pointer": "/data/attributes"},
                "meta": {"duplicate_profile_id": profile_id},
            }
        ]
    }


def test_a_duplicate_profile_409_updates_the_profile_klaviyo_names(klaviyo_client, clock, mocked):
    """A user changes to an email an earlier guest profile holds: Klaviyo answers 409
    naming that profile, and the change goes to it (PATCH) instead of being dropped."""
    mocked.add(responses.POST, PROFILE_IMPORT_URL, status=409, json=duplicate_body("01GUEST"))
    mocked.add(
        responses.PATCH,
        url("/profiles/01GUEST"),
        status=200,
        json={"data": {"type": "profile", "id": "01GUEST", "attributes": {}}},
    )
    link = KlaviyoProfileLink.objects.create(email="a@example.com")
    row = make_row(
        Kind.PROFILE_UPSERT, {"profile": {"email": "a@example.com", "first_name": "Ada"}}
    )

    report = flush(klaviyo_client, clock)

    patch = calls_to(mocked, url("/profiles/01GUEST"))[0]
    assert body(patch)["data"]["id"] == "01GUEST"
    assert body(patch)["data"]["attributes"]["first_name"] == "Ada"
    row.refresh_from_db()
    assert row.status == Status.SENT
    assert report.sent == 1
    link.refresh_from_db()
    assert link.klaviyo_id == "01GUEST"


def test_a_duplicate_profile_that_cannot_be_updated_either_is_dead_with_the_reason(
    klaviyo_client, clock, mocked
):
    mocked.add(responses.POST, PROFILE_IMPORT_URL, status=409, json=duplicate_body("01GUEST"))
    mocked.add(
        responses.PATCH, url("/profiles/01GUEST"), status=409, json=duplicate_body("01OTHER")
    )
    row = make_row(
        Kind.PROFILE_UPSERT, {"profile": {"email": "a@example.com", "phone_number": "+14155550100"}}
    )

    flush(klaviyo_client, clock)

    row.refresh_from_db()
    assert row.status == Status.DEAD
    assert (row.last_error_status, row.last_error_code) == (409, "duplicate_profile")
    assert "01OTHER" in row.last_error_detail


def job(status: str) -> dict[str, Any]:
    return {
        "data": {"type": "profile-bulk-import-job", "id": "JOB1", "attributes": {"status": status}}
    }


def test_many_profile_upserts_are_sent_only_once_their_import_job_imported_them(
    klaviyo_client, clock, mocked
):
    """Accepted is not imported: the job is polled to its end and its import errors
    read; the profile Klaviyo failed is dead with Klaviyo's own error, the rest sent."""
    mocked.add(responses.POST, BULK_IMPORT_URL, status=202, json=job("queued"))
    job_url = url("/profile-bulk-import-jobs/JOB1")
    for status in ("queued", "processing", "complete"):
        mocked.add(responses.GET, job_url, status=200, json=job(status))
    mocked.add(
        responses.GET,
        url("/profile-bulk-import-jobs/JOB1/import-errors"),
        status=200,
        json={
            "data": [
                {
                    "type": "import-error",
                    "id": "E1",
                    "attributes": {
                        "code": "invalid",
                        "title": "Invalid input.",
                        "detail": "The email c7@example.com is suppressed for this account.",
                        "source": {"pointer": "/data/attributes/profiles/data/7"},
                        "original_payload": {"email": "c7@example.com"},
                    },
                }
            ],
            "links": {"next": None},
        },
    )
    rows = [
        make_row(Kind.PROFILE_UPSERT, {"profile": {"email": f"c{i}@example.com"}})
        for i in range(150)
    ]

    report = flush(klaviyo_client, clock)

    (post,) = calls_to(mocked, BULK_IMPORT_URL)
    profiles = body(post)["data"]["attributes"]["profiles"]["data"]
    assert {p["attributes"]["email"] for p in profiles} == {f"c{i}@example.com" for i in range(150)}
    assert len(calls_to(mocked, job_url)) == 3  # polled until complete
    failed = OutboxEvent.objects.get(pk=rows[7].pk)
    assert failed.status == Status.DEAD
    assert failed.last_error_code == "invalid"
    assert "suppressed" in failed.last_error_detail
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 149
    assert (report.kinds["profile_upsert"].sent, report.kinds["profile_upsert"].dead) == (149, 1)


def import_error(index: int, status: str, code: str, detail: str) -> dict[str, Any]:
    return {
        "type": "import-error",
        "id": f"E{index}",
        "attributes": {
            "status": status,
            "code": code,
            "detail": detail,
            "source": {"pointer": f"/data/attributes/profiles/data/{index}"},
        },
    }


def finished_import_job(mocked: Any, errors: list[dict[str, Any]]) -> None:
    mocked.add(responses.POST, BULK_IMPORT_URL, status=202, json=job("queued"))
    mocked.add(responses.GET, url("/profile-bulk-import-jobs/JOB1"), json=job("complete"))
    mocked.add(
        responses.GET,
        url("/profile-bulk-import-jobs/JOB1/import-errors"),
        json={"data": errors, "links": {"next": None}},
    )


def test_an_import_jobs_transient_refusal_retries_only_that_profile_with_klaviyos_reason(
    klaviyo_client, clock, mocked
):
    """One rule settles an accepted job's refusals: a transient one (5xx) is retried,
    recording Klaviyo's own status and code; any other is dead; the rest are sent."""
    finished_import_job(
        mocked,
        [
            import_error(3, "503", "service_unavailable", "Try again later."),
            import_error(5, "400", "invalid", "The email is suppressed."),
        ],
    )
    rows = [
        make_row(Kind.PROFILE_UPSERT, {"profile": {"email": f"c{i}@example.com"}})
        for i in range(101)
    ]

    report = flush(klaviyo_client, clock)

    transient = OutboxEvent.objects.get(pk=rows[3].pk)
    assert transient.status == Status.RETRYING
    assert (transient.last_error_status, transient.last_error_code) == (
        503,
        "service_unavailable",
    )
    refused = OutboxEvent.objects.get(pk=rows[5].pk)
    assert (refused.status, refused.last_error_code) == (Status.DEAD, "invalid")
    kind = report.kinds["profile_upsert"]
    assert (kind.sent, kind.retrying, kind.dead) == (99, 1, 1)


def test_list_add_settles_its_import_jobs_refusals_by_the_same_rule(klaviyo_client, clock, mocked):
    """list_add imports profiles it has no Klaviyo id for: a transient refusal of one of
    them retries its rows (not dead); a permanent one ends them."""
    finished_import_job(
        mocked,
        [
            import_error(0, "500", "server_error", "Something went wrong."),
            import_error(1, "400", "invalid", "The email is suppressed."),
        ],
    )
    mocked.add(
        responses.GET,
        url("/profiles"),
        json={
            "data": [{"type": "profile", "id": "ID2", "attributes": {"email": "p2@example.com"}}],
            "links": {"next": None},
        },
    )
    mocked.add(responses.POST, list_url("L1"), status=204)
    rows = [
        make_row(Kind.LIST_ADD, {"list_id": "L1", "profile": {"email": f"p{i}@example.com"}})
        for i in range(3)
    ]

    flush(klaviyo_client, clock)

    statuses = [OutboxEvent.objects.get(pk=r.pk).status for r in rows]
    assert statuses == [Status.RETRYING, Status.DEAD, Status.SENT]
    assert OutboxEvent.objects.get(pk=rows[0].pk).last_error_code == "server_error"


def test_a_cancelled_import_job_retries_its_rows(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, BULK_IMPORT_URL, status=202, json=job("queued"))
    mocked.add(responses.GET, url("/profile-bulk-import-jobs/JOB1"), json=job("cancelled"))
    for i in range(101):
        make_row(Kind.PROFILE_UPSERT, {"profile": {"email": f"c{i}@example.com"}})

    report = flush(klaviyo_client, clock)

    assert report.retrying == 101
    assert OutboxEvent.objects.filter(status=Status.RETRYING, attempts=1).count() == 101


# -------------------------------------------------------------------------------------
# Lists


def test_list_add_learns_the_profile_id_through_profile_import(klaviyo_client, clock, mocked):
    mocked.add(
        responses.POST,
        PROFILE_IMPORT_URL,
        status=201,
        json={"data": {"type": "profile", "id": "01NEWPROFILE", "attributes": {}}},
    )
    mocked.add(responses.POST, list_url("LIST1"), status=204)
    link = KlaviyoProfileLink.objects.create(email="ada@example.com")
    newsletter = KlaviyoList.objects.create(klaviyo_id="LIST1", name="Newsletter")
    membership = ListMembership.objects.create(klaviyo_list=newsletter, profile=link)
    row = make_row(Kind.LIST_ADD, {"list_id": "LIST1", "profile": {"email": "ada@example.com"}})

    report = flush(klaviyo_client, clock)

    imported = body(calls_to(mocked, PROFILE_IMPORT_URL)[0])["data"]["attributes"]
    assert imported["email"] == "ada@example.com"
    (add,) = calls_to(mocked, list_url("LIST1"))
    assert body(add)["data"] == [{"type": "profile", "id": "01NEWPROFILE"}]
    link.refresh_from_db()
    assert link.klaviyo_id == "01NEWPROFILE"
    membership.refresh_from_db()
    assert membership.synced_member is True and membership.synced_at == clock.now
    assert OutboxEvent.objects.get(pk=row.pk).status == Status.SENT
    assert report.requests == 2


def test_list_requests_use_known_ids_and_group_per_list(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, list_url("L1"), status=204)
    mocked.add(responses.DELETE, list_url("L2"), status=204)
    for i in range(3):
        KlaviyoProfileLink.objects.create(email=f"p{i}@example.com", klaviyo_id=f"ID{i}")
        make_row(Kind.LIST_ADD, {"list_id": "L1", "profile": {"email": f"P{i}@example.com"}})
    make_row(Kind.LIST_REMOVE, {"list_id": "L2", "profile": {"email": "p0@example.com"}})

    flush(klaviyo_client, clock)

    assert len(mocked.calls) == 2
    (add,) = calls_to(mocked, list_url("L1"))
    assert sorted(item["id"] for item in body(add)["data"]) == ["ID0", "ID1", "ID2"]
    (remove,) = calls_to(mocked, list_url("L2"))
    assert remove.request.method == "DELETE"
    assert body(remove)["data"] == [{"type": "profile", "id": "ID0"}]
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 4


# -------------------------------------------------------------------------------------
# Consent and deletion


def test_subscriptions_are_grouped_per_list_and_source(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, SUBSCRIBE_URL, status=202)
    for i in range(3):
        make_row(
            Kind.SUBSCRIBE,
            {
                "profile": {"email": f"s{i}@example.com"},
                "channels": ["email"],
                "list_id": "L1",
                "custom_source": "Checkout",
                "consented_at": None,
            },
        )
    make_row(
        Kind.SUBSCRIBE,
        {
            "profile": {"phone_number": "+14155550100"},
            "channels": ["sms"],
            "list_id": "L2",
            "custom_source": None,
            "consented_at": None,
        },
    )

    flush(klaviyo_client, clock)

    calls = calls_to(mocked, SUBSCRIBE_URL)
    assert len(calls) == 2
    sizes = sorted(len(body(c)["data"]["attributes"]["profiles"]["data"]) for c in calls)
    assert sizes == [1, 3]
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 4


def test_unsubscribe_marks_the_link_unsubscribed_when_accepted(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, UNSUBSCRIBE_URL, status=202)
    link = KlaviyoProfileLink.objects.create(
        email="ada@example.com", email_consent=Consent.SUBSCRIBED, sms_consent=Consent.SUPPRESSED
    )
    make_row(
        Kind.UNSUBSCRIBE,
        {"profile": {"email": "ada@example.com"}, "channels": ["email"], "list_id": None},
    )

    flush(klaviyo_client, clock)

    (call,) = mocked.calls
    (profile,) = body(call)["data"]["attributes"]["profiles"]["data"]
    assert profile["attributes"]["email"] == "ada@example.com"
    link.refresh_from_db()
    assert link.email_consent == Consent.UNSUBSCRIBED
    assert link.email_consent_at == clock.now
    assert link.sms_consent == Consent.SUPPRESSED


def test_profile_deletion_sends_one_job_per_row(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, DELETION_URL, status=202)
    make_row(Kind.PROFILE_DELETION, {"profile": {"email": "gone@example.com"}})
    make_row(Kind.PROFILE_DELETION, {"profile": {"id": "01GONE"}})
    bad = make_row(Kind.PROFILE_DELETION, {"profile": {"email": "x@example.com", "id": "01BOTH"}})

    flush(klaviyo_client, clock)

    sent = [
        body(c)["data"]["attributes"]["profile"]["data"] for c in calls_to(mocked, DELETION_URL)
    ]
    assert len(sent) == 2
    assert {"email": "gone@example.com"} in [s.get("attributes") for s in sent]
    assert any(s.get("id") == "01GONE" for s in sent)
    assert OutboxEvent.objects.get(pk=bad.pk).status == Status.DEAD


def test_requests_stay_under_five_megabytes(klaviyo_client, clock, mocked):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    # Strings of at most 100 KB each (Klaviyo's limit), 700 KB per event.
    blobs = {f"blob{n}": "x" * 100_000 for n in range(7)}
    for i in range(12):  # about 8.4 MB of properties in all
        make_event(email=f"p{i}@example.com", unique_id=f"u{i}", properties=blobs)

    flush(klaviyo_client, clock)

    calls = calls_to(mocked, EVENTS_URL)
    assert len(calls) == 2
    assert all(len(c.request.body) <= 5 * 1024 * 1024 for c in calls)
    assert sum(len(bulk_events(c)) for c in calls) == 12
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 12


def test_a_claimed_rows_id_read_from_sqlite_text_is_the_same_uuid():
    """The claim converts SQLite's 32 hex digits with a shortcut; the UUID is the one
    uuid.UUID makes (equal, same hash, text, version, pickles), and any other spelling
    is left to uuid.UUID, errors included."""
    import pickle

    from django_klaviyo.flush.claim import _uuid_of_hex

    for _ in range(200):
        expected = uuid.uuid4()
        found = _uuid_of_hex(expected.hex)
        assert (found, hash(found), str(found), found.version) == (
            expected,
            hash(expected),
            str(expected),
            expected.version,
        )
        assert found.is_safe == uuid.UUID(expected.hex).is_safe
        assert pickle.loads(pickle.dumps(found)) == expected
    assert _uuid_of_hex(str(uuid.UUID(int=5))) == uuid.UUID(int=5)
    for bad in ("z" * 32, "a" * 31, "-" * 32):
        with pytest.raises(ValueError):
            _uuid_of_hex(bad)


def test_webhook_items_are_looked_for_again_while_found_and_once_the_outbox_is_drained(
    klaviyo_client, clock, mocked, monkeypatch
):
    """An empty webhook queue is not queried after every outbox batch (only after
    WEBHOOK_RECHECK_SECONDS, here never); a queue that had items is looked at again after
    each batch, and the queue is always looked at before the run ends as drained."""
    from django_klaviyo.flush import loop
    from django_klaviyo.webhooks import dispatch

    monkeypatch.setattr(loop, "WEBHOOK_RECHECK_SECONDS", 1e9)
    mocked.add(responses.POST, EVENTS_URL, status=202)
    for i in range(6):
        make_event(unique_id=f"u{i}")
    found = [1, 0, 0]  # items handled by each look, in turn
    looks: list[int] = []

    def process_pending(**kwargs: Any) -> dispatch.ProcessResult:
        looks.append(OutboxEvent.objects.filter(status=Status.SENT).count())
        return dispatch.ProcessResult(processed=found[len(looks) - 1])

    monkeypatch.setattr(dispatch, "process_pending", process_pending)

    report = flush(klaviyo_client, clock, batch_size=2)

    assert report.sent == 6 and report.ended == "drained"
    # After batch 1 (an item); after batch 2, as the last look found one (none now); not
    # after batch 3; then once the outbox has nothing due.
    assert looks == [2, 4, 6]
