"""One rulebook: every limit checked once, at call time, the same at enqueue and at send.

Each test here pins a defect of the earlier pipeline, where enqueue, flush and client
each had their own checks and disagreed.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
import responses
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from shop import services

import django_klaviyo
from django_klaviyo import rules
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.rules.events import expansion_count
from django_klaviyo.rules.identifiers import profile_key
from tests.flush.test_flush import EVENTS_URL, bulk_events, calls_to
from tests.klaviyo_fixtures import flush

Status = OutboxEvent.Status
PROFILE = {"email": "ada@example.com"}

# Rate-limit windows live in the cache: every test starts with none.
pytestmark = pytest.mark.usefixtures("fresh_rate_limits")


def naive_noon() -> dt.datetime:
    """Noon (no time zone) on a day well inside Klaviyo's time window."""
    day = timezone.now().date() - dt.timedelta(days=30)
    return dt.datetime(day.year, day.month, day.day, 12, 0)


# --- an order of 1,000 lines is sendable ----------------------------------------------


@pytest.mark.django_db
def test_an_order_of_1000_lines_is_sent_in_several_requests(klaviyo_client, clock, mocked):
    """It was accepted at save time and dead at flush ("row carries 1001 events")."""
    mocked.add(responses.POST, EVENTS_URL, status=202)
    customer = get_user_model().objects.create_user("ada", email="ada@example.com")
    lines = [
        {"sku": f"SKU-{n}", "name": f"Item {n}", "quantity": 1, "unit_price": Decimal("1.00")}
        for n in range(1000)
    ]
    order = services.place_order(customer=customer, lines=lines)
    row = OutboxEvent.objects.get(kind="event", metric="Placed Order")
    assert expansion_count(row.payload) == 1000

    flush(klaviyo_client, clock)

    row.refresh_from_db()
    assert row.status == Status.SENT, row.last_error_detail
    calls = calls_to(mocked, EVENTS_URL)
    sizes = [len(bulk_events(c)) for c in calls]
    assert sizes == [1000, 1]
    unique_ids = [e["unique_id"] for c in calls for _, e in bulk_events(c)]
    assert len(unique_ids) == len(set(unique_ids)) == 1001
    assert order.number in str(row.payload["properties"])


@pytest.mark.django_db
def test_a_split_row_is_retried_whole_when_one_part_fails(klaviyo_client, clock, mocked):
    """Klaviyo keeps the first event per unique_id, so resending the accepted part is safe;
    marking the row sent after only one part would lose the other."""
    mocked.add(responses.POST, EVENTS_URL, status=202)
    mocked.add(responses.POST, EVENTS_URL, status=503)
    row = OutboxEvent.objects.get(
        pk=django_klaviyo.outbox.enqueue_many(
            [
                django_klaviyo.outbox.build_event(
                    metric="Placed Order",
                    profile=PROFILE,
                    unique_id="o-1",
                    expand=[
                        {"metric": "Ordered Product", "unique_id": f"o-1-{n}"} for n in range(1200)
                    ],
                )
            ]
        )[0].pk
    )

    flush(klaviyo_client, clock)

    row.refresh_from_db()
    assert row.status == Status.RETRYING
    assert len(calls_to(mocked, EVENTS_URL)) >= 2


# --- naive datetimes: one rule, at enqueue and at send --------------------------------


@pytest.mark.django_db
def test_a_naive_time_is_read_in_the_current_time_zone_at_enqueue_and_at_send(
    klaviyo_client, clock, mocked
):
    """A naive datetime passed track() and was rejected at flush and by the client."""
    mocked.add(responses.POST, EVENTS_URL, status=202)
    mocked.add(responses.POST, "https://a.klaviyo.com/api/events", status=202)
    noon = naive_noon()
    expected = timezone.make_aware(noon, timezone.get_fixed_timezone(-240))
    expected_utc = expected.astimezone(dt.timezone.utc).isoformat()

    with timezone.override(timezone.get_fixed_timezone(-240)):
        tracked = django_klaviyo.track("Viewed", PROFILE, time=noon, unique_id="tracked")
        # A row written before rule versions, with a time without offset.
        old = OutboxEvent.objects.create(
            kind="event",
            payload={"metric": "Viewed", "profile": PROFILE, "time": noon.isoformat()},
            metric="Viewed",
            unique_id="old",
            profile_key=profile_key(PROFILE),
        )
        flush(klaviyo_client, clock)
        klaviyo_client.create_event(metric="Viewed", profile=PROFILE, time=noon, unique_id="direct")

    assert tracked.payload["time"] == expected_utc
    old.refresh_from_db()
    assert old.status == Status.SENT, old.last_error_detail
    sent = {
        e["unique_id"]: e["time"] for c in calls_to(mocked, EVENTS_URL) for _, e in bulk_events(c)
    }
    assert sent == {"tracked": expected_utc, "old": expected_utc}
    direct = mocked.calls[-1].request
    assert f'"time":"{expected_utc}"' in direct.body.decode()


# --- sizes are refused at call time ---------------------------------------------------


@pytest.mark.django_db
def test_a_6_mb_event_is_refused_when_tracked():
    """It was accepted by track() and dead later, though every call validates."""
    properties = {f"part{n}": "x" * 100_000 for n in range(60)}  # 6 MB, each string legal
    with pytest.raises(KlaviyoValidationError) as info:
        django_klaviyo.track("Viewed", PROFILE, properties=properties)
    assert info.value.field == "properties"
    assert "bytes" in str(info.value)
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_a_150_kb_profile_is_refused_when_upserted():
    profile = {**PROFILE, "properties": {f"p{n}": "x" * 50_000 for n in range(3)}}
    with pytest.raises(KlaviyoValidationError) as info:
        django_klaviyo.upsert_profile(profile)
    assert info.value.field == "profile"
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_a_string_over_100_kb_is_refused_naming_its_path():
    with pytest.raises(KlaviyoValidationError) as info:
        django_klaviyo.track("Viewed", PROFILE, properties={"Notes": {"long": "x" * 102_401}})
    assert info.value.field == "properties.Notes.long"


# --- text PostgreSQL cannot store never reaches the database --------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: django_klaviyo.track("Viewed", PROFILE, properties={"note": "a\x00b"}), None),
        (lambda: django_klaviyo.track("Viewed", PROFILE, properties={"note": "a\ud800"}), None),
        (lambda: django_klaviyo.track("Viewed", PROFILE, properties={"k\x00": 1}), None),
        (lambda: django_klaviyo.track("View\x00ed", PROFILE), "metric"),
        (lambda: django_klaviyo.track("View\udfffed", PROFILE), "metric"),
        (lambda: django_klaviyo.track("Viewed", {**PROFILE, "first_name": "A\x00"}), None),
    ],
)
def test_unstorable_text_is_refused_and_the_callers_transaction_goes_on(call, field):
    """On PostgreSQL a NUL or a lone surrogate raised DataError at INSERT, which aborted
    the store's transaction: the order failed because of a marketing property."""
    with transaction.atomic():
        user = get_user_model().objects.create_user("bob", email="bob@example.com")
        with pytest.raises(KlaviyoValidationError) as info:
            call()
        if field is not None:
            assert info.value.field == field
        # The transaction is still usable, and commits the store's own write.
        user.first_name = "Bob"
        user.save()
    assert get_user_model().objects.get(pk=user.pk).first_name == "Bob"
    assert not OutboxEvent.objects.filter(kind="event").exists()


@pytest.mark.django_db
def test_an_old_row_that_fails_the_rules_is_dead_with_the_reason_and_the_batch_goes_on(
    klaviyo_client, clock, mocked
):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    good = django_klaviyo.track("Viewed", PROFILE, unique_id="good")
    bad = OutboxEvent.objects.create(
        kind="event",
        # Accepted by older rules, refused by these: Klaviyo takes no event before 1990.
        payload={"metric": "Viewed", "profile": PROFILE, "time": "1985-01-01T00:00:00+00:00"},
        metric="Viewed",
        unique_id="bad",
        profile_key=profile_key(PROFILE),
        rules_version=0,
    )

    flush(klaviyo_client, clock)

    bad.refresh_from_db()
    good.refresh_from_db()
    assert (good.status, good.rules_version) == (Status.SENT, rules.RULES_VERSION)
    assert bad.status == Status.DEAD
    assert bad.last_error_code == "invalid_payload"
    assert "time must be after 1990" in bad.last_error_detail


def old_event_row(unique_id: str) -> OutboxEvent:
    """A row written under older rules: cleaning it now changes it (the metric name and
    the email lose their surrounding spaces)."""
    return OutboxEvent.objects.create(
        kind="event",
        payload={"metric": " Viewed ", "profile": {"email": " ada@example.com "}},
        metric=" Viewed ",
        unique_id=unique_id,
        profile_key=profile_key(PROFILE),
        rules_version=0,
    )


@pytest.mark.django_db
def test_an_old_row_cleaned_at_flush_is_saved_back_so_its_retries_take_it_as_it_is(
    klaviyo_client, clock, mocked
):
    mocked.add(responses.POST, EVENTS_URL, status=503)
    row = old_event_row("old")

    flush(klaviyo_client, clock)

    row.refresh_from_db()
    assert row.status == Status.RETRYING
    assert row.rules_version == rules.RULES_VERSION
    assert row.payload["metric"] == row.metric == "Viewed"
    assert row.payload["profile"] == PROFILE


@pytest.mark.django_db
def test_an_old_row_another_flusher_took_over_is_not_saved_back(klaviyo_client, clock, mocked):
    """The cleaned payload is written with the outcomes, only for rows still held."""
    row = old_event_row("taken")

    def taken_over_meanwhile(request: Any) -> tuple[int, dict, str]:
        OutboxEvent.objects.update(locked_by="other-host:2:abc", locked_at=clock.now)
        return 503, {}, ""

    mocked.add_callback(responses.POST, EVENTS_URL, callback=taken_over_meanwhile)

    flush(klaviyo_client, clock)

    row.refresh_from_db()
    assert (row.status, row.locked_by) == (Status.SENDING, "other-host:2:abc")
    assert (row.rules_version, row.metric) == (0, " Viewed ")


# --- a retired revision warns, and stops nothing --------------------------------------


@pytest.mark.django_db
def test_a_retired_revision_does_not_stop_checks_or_the_flusher():
    """E004 was an Error: on the default revision's second birthday, migrate and
    klaviyo_flush would have refused to start."""
    retired = (timezone.now().date() - dt.timedelta(days=800)).isoformat()
    with override_settings(KLAVIYO={**settings.KLAVIYO, "REVISION": retired}):
        call_command("check")  # raises SystemCheckError on any Error
        call_command("klaviyo_flush", "--dry-run", verbosity=0)


# --- dedupe returns the saved row -----------------------------------------------------


@pytest.mark.django_db
def test_track_twice_with_a_dedupe_key_returns_the_saved_row():
    first = django_klaviyo.track("Viewed", PROFILE, dedupe_key="view:1")
    again = django_klaviyo.track("Viewed", PROFILE, dedupe_key="view:1", properties={"x": 1})

    assert again.pk == first.pk
    assert OutboxEvent.objects.filter(pk=again.pk).exists()
    assert again.payload == first.payload  # the row that stands, not the refused one
    assert not again._state.adding
    assert OutboxEvent.objects.count() == 1


# --- using= works end to end ----------------------------------------------------------


@pytest.mark.django_db(databases=["default", "other"])
def test_rows_written_on_another_database_are_claimed_and_flushed_from_it(
    klaviyo_client, clock, mocked
):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    row = django_klaviyo.track("Viewed", PROFILE, unique_id="elsewhere", using="other")
    assert not OutboxEvent.objects.using("default").exists()
    assert row._state.db == "other"

    idle = flush(klaviyo_client, clock)  # the default database's outbox is empty
    assert idle.claimed == 0

    report = flush(klaviyo_client, clock, using="other")

    assert report.sent == 1
    assert OutboxEvent.objects.using("other").get(pk=row.pk).status == Status.SENT
    (call,) = calls_to(mocked, EVENTS_URL)
    assert [e["unique_id"] for _, e in bulk_events(call)] == ["elsewhere"]


@pytest.mark.django_db(databases=["default", "other"])
def test_klaviyo_flush_takes_the_database_alias(klaviyo_client, mocked, monkeypatch):
    mocked.add(responses.POST, EVENTS_URL, status=202)
    monkeypatch.setattr("django_klaviyo.flush.loop.get_client", lambda: klaviyo_client)
    row = django_klaviyo.track("Viewed", PROFILE, using="other")

    call_command("klaviyo_flush", "--database", "other", verbosity=0)

    assert OutboxEvent.objects.using("other").get(pk=row.pk).status == Status.SENT


# --- the client's public methods use the same rules -----------------------------------


def test_the_client_refuses_what_the_outbox_refuses_before_sending(klaviyo_client, mocked):
    with pytest.raises(KlaviyoValidationError) as info:
        klaviyo_client.create_event(metric="Viewed", profile=PROFILE, properties={"note": "a\x00"})
    assert info.value.field == "event.properties.note"
    with pytest.raises(KlaviyoValidationError) as info:
        klaviyo_client.upsert_profile({**PROFILE, "first_name": "A\ud800"})
    assert info.value.field == "profile.first_name"
    big = {**PROFILE, "properties": {f"p{n}": "x" * 50_000 for n in range(3)}}
    with pytest.raises(KlaviyoValidationError, match="bytes"):
        klaviyo_client.upsert_profile(big)
    assert len(mocked.calls) == 0


def test_a_mapper_spec_without_a_metric_or_with_an_unknown_key_names_the_field():
    from django_klaviyo import outbox

    with pytest.raises(KlaviyoValidationError) as info:
        outbox.build_events([{"profile": PROFILE}])
    assert info.value.field == "metric"
    with pytest.raises(KlaviyoValidationError) as info:
        outbox.build_events([{"metric": "Viewed", "profile": PROFILE, "colour": "red"}])
    assert info.value.field == "colour"
