"""Coupon-code bulk jobs followed without blocking the flush (issue 23): the job is started,
its code rows wait in ``awaiting_job``, and a later pass of any worker settles them, the
mirror codes taking Klaviyo's status (or ``failed`` with its reason) in that transaction."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
import responses
from django.core.management import call_command

from django_klaviyo import coupons
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.flush.loop import Flusher
from django_klaviyo.models import KlaviyoCoupon, KlaviyoCouponCode, KlaviyoJob, OutboxEvent
from tests.coupons.test_coupons import API, code_row, job, statuses
from tests.flush.test_flush import EVENTS_URL, make_event
from tests.klaviyo_fixtures import FakeClock, fast_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_rate_limits")]

Code = KlaviyoCouponCode.Status
Row = OutboxEvent.Status
JOBS = f"{API}/coupon-code-bulk-create-jobs"


def queued_codes(*codes: str) -> KlaviyoCoupon:
    """A coupon Klaviyo has, with ``codes`` queued (no ``coupon`` row to wait for)."""
    coupon = KlaviyoCoupon.objects.create(external_id="FALL", klaviyo_id="FALL")
    coupons.add_codes(coupon, list(codes))
    coupons.enqueue_codes(coupon)
    return coupon


def flusher(clock: FakeClock, owner: str = "worker-a") -> Flusher:
    return Flusher(client=fast_client(), clock=clock, sleep=clock.sleep, owner=owner)


def answers(*bodies: dict[str, Any]) -> Any:
    """A GET callback answering the job with ``bodies`` in turn (the last one repeats)."""
    seen: list[str] = []

    def poll(request: Any) -> tuple[int, dict[str, str], str]:
        body = bodies[min(len(seen), len(bodies) - 1)]
        seen.append(body["data"]["attributes"]["status"])
        return 200, {}, json.dumps(body)

    poll.seen = seen  # type: ignore[attr-defined]
    return poll


def test_a_coupon_code_job_processing_across_passes_does_not_hold_an_order_event_back() -> None:
    clock = FakeClock()
    queued_codes("FALL-1", "FALL-2")
    processing = job("J1", "processing")
    poll = answers(processing, processing, job("J1", "complete", codes=["FALL-1", "FALL-2"]))
    with responses.RequestsMock() as mocked:
        started = mocked.add(responses.POST, JOBS, status=202, json=job("J1", "queued"))
        mocked.add_callback(responses.GET, f"{JOBS}/J1", callback=poll)
        events = mocked.add(responses.POST, EVENTS_URL, status=202)
        worker = flusher(clock)
        passes = []
        for n in range(4):
            order = make_event(unique_id=f"order-{n}")
            worker.flush_batch()  # at most one look at the job; the new order goes now
            order.refresh_from_db()
            passes.append((order.status, code_row("FALL-1").status, len(poll.seen)))
            clock.advance(2.0)

    # The job is started in the first pass and looked at once in each later pass, while
    # every pass's order event is sent in that pass.
    assert passes == [
        (Row.SENT, Row.AWAITING_JOB, 0),
        (Row.SENT, Row.AWAITING_JOB, 1),
        (Row.SENT, Row.AWAITING_JOB, 2),
        (Row.SENT, Row.SENT, 3),
    ]
    assert started.call_count == 1 and events.call_count == 4
    assert clock.slept == []  # nobody waited for the job
    assert statuses("FALL") == {Code.UNASSIGNED: 2}
    assert KlaviyoCouponCode.objects.get(code="FALL-1").klaviyo_id == "FALL-FALL-1"
    done = KlaviyoJob.objects.get()
    assert (done.kind, done.job_id, done.status) == (
        OutboxEvent.Kind.COUPON_CODE,
        "J1",
        KlaviyoJob.Status.COMPLETE,
    )


def test_a_refused_code_in_a_settled_job_turns_its_mirror_code_failed_with_the_reason() -> None:
    clock = FakeClock()
    queued_codes("FALL-1", "FALL-2")
    done = job("J1", "complete", codes=["FALL-1"])
    done["data"]["attributes"].update(failed_count=1)
    done["data"]["attributes"]["errors"] = [
        {
            "id": "e",
            "code": "duplicate",
            "title": "Conflict.",
            "detail": "The coupon code FALL-2 already exists for coupon FALL.",
            "source": {"pointer": "/data/attributes/coupon-codes/data/1"},
        }
    ]
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS, status=202, json=job("J1", "queued"))
        mocked.add_callback(
            responses.GET, f"{JOBS}/J1", callback=answers(job("J1", "processing"), done)
        )
        worker = flusher(clock)
        worker.flush_batch()
        clock.advance(1.0)
        worker.flush_batch()  # still processing: the codes stay as they were
        assert statuses("FALL") == {Code.QUEUED: 2}
        clock.advance(1.0)
        worker.flush_batch()  # complete, one code refused

    dead = code_row("FALL-2")
    assert (dead.status, dead.last_error_code) == (Row.DEAD, "duplicate")
    assert "already exists for coupon FALL" in dead.last_error_detail
    assert "/coupon-codes/data/1" in dead.last_error_detail
    failed = KlaviyoCouponCode.objects.get(code="FALL-2")
    assert failed.status == Code.FAILED
    assert (failed.error_code, failed.error_detail) == (
        dead.last_error_code,
        dead.last_error_detail,
    )
    assert code_row("FALL-1").status == Row.SENT
    assert KlaviyoCouponCode.objects.get(code="FALL-1").status == Code.UNASSIGNED
    assert worker.report.counts(OutboxEvent.Kind.COUPON_CODE).dead == 1


def test_a_cancelled_coupon_code_job_retries_its_codes() -> None:
    clock = FakeClock()
    queued_codes("FALL-1")
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS, status=202, json=job("J1", "queued"))
        mocked.add(responses.GET, f"{JOBS}/J1", json=job("J1", "cancelled"))
        worker = flusher(clock)
        worker.flush_batch()
        clock.advance(1.0)
        worker.flush_batch()

    row = code_row("FALL-1")
    assert (row.status, row.last_error_code) == (Row.RETRYING, "job_cancelled")
    assert statuses("FALL") == {Code.QUEUED: 1}


def test_a_worker_killed_while_looking_at_a_coupon_code_job_leaves_it_to_another() -> None:
    clock = FakeClock()
    queued_codes("FALL-1")
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS, status=202, json=job("J1", "queued"))
        polls = mocked.add(
            responses.GET, f"{JOBS}/J1", json=job("J1", "complete", codes=["FALL-1"])
        )
        flusher(clock, "worker-a").flush_batch()
        # Worker A took the job for a look and was killed before it recorded anything.
        KlaviyoJob.objects.update(locked_by="worker-a/dead", locked_at=clock())

        other = flusher(clock, "worker-b")
        other.flush_batch()
        assert polls.call_count == 0  # A's lease on the job still runs
        clock.advance(float(klaviyo_settings.LEASE_SECONDS) + 1)
        other.flush_batch()

    assert polls.call_count == 1
    assert code_row("FALL-1").status == Row.SENT
    assert statuses("FALL") == {Code.UNASSIGNED: 1}
    assert other.report.counts(OutboxEvent.Kind.COUPON_CODE).sent == 1


def test_codes_waiting_for_their_job_count_as_unsent() -> None:
    coupon = queued_codes("FALL-1", "FALL-2")
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS, status=202, json=job("J1", "queued"))
        flusher(FakeClock()).flush_batch()

    assert code_row("FALL-1").status == Row.AWAITING_JOB
    assert coupons.open_rows(coupon) == 2
    out = StringIO()
    call_command("klaviyo_coupons", "status", "FALL", stdout=out)
    assert "unsent outbox rows: 2" in out.getvalue()


def test_two_workers_never_settle_one_coupon_code_job_twice() -> None:
    """Worker A outlives its lease on the job while its GET is slow; worker B takes the
    job over and settles it (rows and mirror); A's late answer then changes nothing."""
    clock = FakeClock()
    queued_codes("FALL-1")
    worker_a, worker_b = flusher(clock, "worker-a"), flusher(clock, "worker-b")
    refused = job("J1", "complete")
    refused["data"]["attributes"].update(failed_count=1)
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS, status=202, json=job("J1", "queued"))
        worker_a.flush_batch()
        nested: list[int] = []

        def slow(request: Any) -> tuple[int, dict[str, str], str]:
            if nested:  # B's look: the code was created
                return 200, {}, json.dumps(job("J1", "complete", codes=["FALL-1"]))
            nested.append(1)
            clock.advance(float(klaviyo_settings.LEASE_SECONDS) + 1)
            worker_b.flush_batch()  # B's look happens while A's GET hangs
            return 200, {}, json.dumps(refused)  # A's late answer says otherwise

        mocked.add_callback(responses.GET, f"{JOBS}/J1", callback=slow)
        clock.advance(1.0)
        worker_a.flush_batch()

    assert code_row("FALL-1").status == Row.SENT
    assert statuses("FALL") == {Code.UNASSIGNED: 1}
    assert worker_b.report.counts(OutboxEvent.Kind.COUPON_CODE).sent == 1
    assert worker_a.report.counts(OutboxEvent.Kind.COUPON_CODE).dead == 0


def test_a_mirror_that_cannot_follow_a_settled_job_is_said_on_the_rows(monkeypatch) -> None:
    from django_klaviyo.flush.senders.coupons import CouponCodeSender

    def broken(self: Any, *args: Any) -> None:
        raise RuntimeError("mirror down")

    monkeypatch.setattr(CouponCodeSender, "job_settled", broken)
    clock = FakeClock()
    queued_codes("FALL-1")
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS, status=202, json=job("J1", "queued"))
        mocked.add(responses.GET, f"{JOBS}/J1", json=job("J1", "complete", codes=["FALL-1"]))
        worker = flusher(clock)
        worker.flush_batch()
        clock.advance(1.0)
        worker.flush_batch()

    row = code_row("FALL-1")
    assert row.status == Row.SENT  # Klaviyo has it: the row is settled all the same
    assert "the local mirror was not updated" in row.outcome_note
    assert "mirror down" in row.outcome_note
