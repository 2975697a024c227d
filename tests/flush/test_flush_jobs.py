"""Klaviyo's bulk jobs followed without blocking the flush (issue 23): a job Klaviyo has not
finished is recorded (``KlaviyoJob``), its rows wait in ``awaiting_job``, and later passes
of any worker settle it, while the other kinds go on."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest
import responses

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.flush import flush_outbox
from django_klaviyo.flush.loop import Flusher
from django_klaviyo.models import KlaviyoJob, OutboxEvent
from tests.flush.test_flush import EVENTS_URL, make_event, make_row
from tests.klaviyo_fixtures import FakeClock, fast_client

pytestmark = pytest.mark.django_db

Kind = OutboxEvent.Kind
Status = OutboxEvent.Status
JOBS_URL = "https://a.klaviyo.com/api/catalog-category-bulk-create-jobs"


def category(external_id: str = "kitchen") -> OutboxEvent:
    return make_row(
        Kind.CATALOG_CATEGORY,
        {"op": "upsert", "external_id": external_id, "create": True, "attributes": {"name": "K"}},
    )


def job(status: str, job_id: str = "job-1", **attributes: Any) -> dict[str, Any]:
    return {
        "data": {
            "type": "catalog-category-bulk-create-job",
            "id": job_id,
            "attributes": {"status": status, "total_count": 1, **attributes},
        }
    }


def flusher(clock: FakeClock, owner: str = "worker-a") -> Flusher:
    return Flusher(client=fast_client(), clock=clock, sleep=clock.sleep, owner=owner)


def answers(*statuses: str) -> Any:
    """A GET callback answering the job with ``statuses`` in turn (the last one repeats)."""
    seen: list[str] = []

    def poll(request: Any) -> tuple[int, dict[str, str], str]:
        status = statuses[min(len(seen), len(statuses) - 1)]
        seen.append(status)
        return 200, {}, json.dumps(job(status))

    poll.seen = seen  # type: ignore[attr-defined]
    return poll


def test_events_flow_while_a_catalog_job_processes_across_many_passes() -> None:
    clock = FakeClock()
    kitchen = category()
    poll = answers("processing", "processing", "processing", "complete")
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS_URL, status=202, json=job("queued"))
        mocked.add_callback(responses.GET, f"{JOBS_URL}/job-1", callback=poll)
        events = mocked.add(responses.POST, EVENTS_URL, status=202)
        worker = flusher(clock)

        worker.flush_batch()  # the job is started, not waited for
        kitchen.refresh_from_db()
        assert kitchen.status == Status.AWAITING_JOB
        assert kitchen.outcome_note.startswith("Waiting for Klaviyo job job-1 since ")
        sent_while_processing = []
        for n in range(4):
            order = make_event(unique_id=f"order-{n}")
            clock.advance(2.0)
            worker.flush_batch()  # one look at the job, and the new order event sent
            order.refresh_from_db()
            kitchen.refresh_from_db()
            sent_while_processing.append((order.status, kitchen.status))

    assert sent_while_processing == [(Status.SENT, Status.AWAITING_JOB)] * 3 + [
        (Status.SENT, Status.SENT)
    ]
    assert events.call_count == 4
    assert poll.seen == ["processing", "processing", "processing", "complete"]
    done = KlaviyoJob.objects.get()
    assert (done.status, done.polls, done.job_id) == (KlaviyoJob.Status.COMPLETE, 4, "job-1")
    assert kitchen.attempts == 1 and kitchen.outcome_note == ""


def test_a_job_cancelled_after_some_looks_retries_its_rows() -> None:
    clock = FakeClock()
    kitchen = category()
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS_URL, status=202, json=job("queued"))
        mocked.add_callback(
            responses.GET, f"{JOBS_URL}/job-1", callback=answers("processing", "cancelled")
        )
        worker = flusher(clock)
        for _ in range(3):
            worker.flush_batch()
            clock.advance(1.0)

    kitchen.refresh_from_db()
    assert kitchen.status == Status.RETRYING
    assert kitchen.last_error_code == "job_cancelled"
    assert "Klaviyo cancelled" in kitchen.last_error_detail
    assert kitchen.locked_by == ""
    assert KlaviyoJob.objects.get().status == KlaviyoJob.Status.CANCELLED


def test_a_job_still_running_after_its_lifetime_expires_and_its_rows_are_retried(
    settings: Any,
) -> None:
    settings.KLAVIYO = {**settings.KLAVIYO, "CATALOG_JOB_TIMEOUT": 60.0}
    clock = FakeClock()
    kitchen = category()
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS_URL, status=202, json=job("queued"))
        mocked.add_callback(responses.GET, f"{JOBS_URL}/job-1", callback=answers("processing"))
        worker = flusher(clock)
        worker.flush_batch()
        clock.advance(30)
        worker.flush_batch()
        kitchen.refresh_from_db()
        assert kitchen.status == Status.AWAITING_JOB
        clock.advance(31)
        worker.flush_batch()

    kitchen.refresh_from_db()
    assert kitchen.status == Status.RETRYING
    assert kitchen.last_error_code == "job_expired"
    assert "still 'processing' after 60s" in kitchen.last_error_detail
    assert KlaviyoJob.objects.get().status == KlaviyoJob.Status.EXPIRED


def test_a_job_answer_without_an_id_is_an_error_at_once_naming_its_shape() -> None:
    kitchen = category()
    with responses.RequestsMock() as mocked:
        # No GET registered: polling ``.../None`` would fail the test.
        mocked.add(
            responses.POST,
            JOBS_URL,
            status=202,
            json={"data": {"type": "catalog-category-bulk-create-job", "attributes": {}}},
        )
        flush_outbox(client=fast_client(), sleep=lambda seconds: None)

    kitchen.refresh_from_db()
    assert kitchen.status == Status.RETRYING
    assert "no job id" in kitchen.last_error_detail
    assert "'type': str" in kitchen.last_error_detail
    assert not KlaviyoJob.objects.exists()


def test_a_worker_killed_while_looking_at_a_job_leaves_it_to_another() -> None:
    clock = FakeClock()
    kitchen = category()
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS_URL, status=202, json=job("queued"))
        polls = mocked.add(responses.GET, f"{JOBS_URL}/job-1", json=job("complete"))
        flusher(clock, "worker-a").flush_batch()
        # Worker A took the job for a look and was killed before it recorded anything.
        KlaviyoJob.objects.update(locked_by="worker-a/dead", locked_at=clock())

        other = flusher(clock, "worker-b")
        other.flush_batch()
        assert polls.call_count == 0  # A's lease on the job still runs
        clock.advance(float(klaviyo_settings.LEASE_SECONDS) + 1)
        other.flush_batch()

    kitchen.refresh_from_db()
    assert polls.call_count == 1
    assert kitchen.status == Status.SENT
    assert other.report.counts(Kind.CATALOG_CATEGORY).sent == 1


def test_a_stop_with_a_job_pending_leaves_it_for_the_next_worker() -> None:
    clock = FakeClock()
    kitchen = category()
    stop = threading.Event()
    with responses.RequestsMock() as mocked:

        def accepted(request: Any) -> tuple[int, dict[str, str], str]:
            stop.set()  # SIGTERM arrives while Klaviyo takes the job
            return 202, {}, json.dumps(job("queued"))

        mocked.add_callback(responses.POST, JOBS_URL, callback=accepted)
        report = flush_outbox(client=fast_client(), clock=clock, sleep=clock.sleep, stop=stop)
        kitchen.refresh_from_db()
        assert report.ended == "stopped"
        assert kitchen.status == Status.AWAITING_JOB
        assert KlaviyoJob.objects.get().status == KlaviyoJob.Status.OPEN

        mocked.add(responses.GET, f"{JOBS_URL}/job-1", json=job("complete"))
        report = flush_outbox(client=fast_client(), clock=clock, sleep=clock.sleep)

    kitchen.refresh_from_db()
    assert report.ended == "drained"
    assert kitchen.status == Status.SENT
    assert kitchen.attempts == 1


def test_two_workers_never_settle_one_job_twice() -> None:
    """Worker A outlives its lease on the job while its GET is slow; worker B takes the
    job over and settles it; A's late answer then changes nothing."""
    clock = FakeClock()
    kitchen = category()
    worker_a, worker_b = flusher(clock, "worker-a"), flusher(clock, "worker-b")
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS_URL, status=202, json=job("queued"))
        worker_a.flush_batch()
        nested: list[int] = []

        def slow(request: Any) -> tuple[int, dict[str, str], str]:
            if not nested:
                nested.append(1)
                clock.advance(float(klaviyo_settings.LEASE_SECONDS) + 1)
                worker_b.flush_batch()  # B's look happens while A's GET hangs
            return 200, {}, json.dumps(job("complete", failed_count=0))

        mocked.add_callback(responses.GET, f"{JOBS_URL}/job-1", callback=slow)
        clock.advance(1.0)
        worker_a.flush_batch()

    kitchen.refresh_from_db()
    assert kitchen.status == Status.SENT
    assert worker_b.report.counts(Kind.CATALOG_CATEGORY).sent == 1
    assert worker_a.report.counts(Kind.CATALOG_CATEGORY).sent == 0
    done = KlaviyoJob.objects.get()
    assert done.status == KlaviyoJob.Status.COMPLETE and done.locked_by == ""


def test_an_item_waits_for_its_categorys_job_and_goes_when_it_ends() -> None:
    clock = FakeClock()
    kitchen = category()
    item = make_row(
        Kind.CATALOG_ITEM,
        {
            "op": "upsert",
            "external_id": "MUG-1",
            "create": True,
            "categories": ["kitchen"],
            "attributes": {"title": "Mug", "url": "https://shop.example/mug"},
        },
    )
    items_url = "https://a.klaviyo.com/api/catalog-item-bulk-create-jobs"
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS_URL, status=202, json=job("queued"))
        mocked.add_callback(
            responses.GET, f"{JOBS_URL}/job-1", callback=answers("processing", "complete")
        )
        items = mocked.add(responses.POST, items_url, status=202, json=job("queued", "job-2"))
        worker = flusher(clock)
        worker.flush_batch()
        clock.advance(1.0)
        worker.flush_batch()  # still processing: the item keeps waiting, unsent
        assert items.call_count == 0
        item.refresh_from_db()
        assert item.status == Status.PENDING and item.attempts == 0
        clock.advance(1.0)
        worker.flush_batch()  # complete: the item is due at once and sent
        assert items.call_count == 1

    kitchen.refresh_from_db()
    item.refresh_from_db()
    assert kitchen.status == Status.SENT
    assert item.status == Status.AWAITING_JOB


def test_a_flush_report_counts_rows_handed_to_jobs() -> None:
    clock = FakeClock()
    category()
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS_URL, status=202, json=job("queued"))
        worker = flusher(clock)
        worker.flush_batch()

    assert worker.report.counts(Kind.CATALOG_CATEGORY).awaiting == 1
    assert "handed to Klaviyo jobs 1" in "\n".join(worker.report.summary_lines())
    assert KlaviyoJob.objects.get().next_poll_at <= clock() + timedelta(seconds=0)


def test_order_events_never_wait_for_a_profile_import_job() -> None:
    from tests.flush.test_flush import BULK_IMPORT_URL, import_error, url
    from tests.flush.test_flush import job as import_job

    clock = FakeClock()
    profiles = [
        make_row(Kind.PROFILE_UPSERT, {"profile": {"email": f"c{i}@example.com"}})
        for i in range(101)
    ]
    order = make_event(unique_id="order-1")
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, BULK_IMPORT_URL, status=202, json=import_job("queued"))
        events = mocked.add(responses.POST, EVENTS_URL, status=202)
        worker = Flusher(client=fast_client(), clock=clock, sleep=clock.sleep, batch_size=200)
        worker.flush_batch()  # the import is started; the order goes in the same pass
        order.refresh_from_db()
        assert order.status == Status.SENT and events.call_count == 1
        assert {p.status for p in OutboxEvent.objects.filter(kind=Kind.PROFILE_UPSERT)} == {
            Status.AWAITING_JOB
        }
        assert clock.slept == []  # nobody waited for the job

        mocked.add(
            responses.GET, url("/profile-bulk-import-jobs/JOB1"), json=import_job("complete")
        )
        mocked.add(
            responses.GET,
            url("/profile-bulk-import-jobs/JOB1/import-errors"),
            json={
                "data": [import_error(7, "400", "invalid", "The email is suppressed.")],
                "links": {"next": None},
            },
        )
        clock.advance(1.0)
        worker.flush_batch()

    refused = OutboxEvent.objects.get(pk=profiles[7].pk)
    assert (refused.status, refused.last_error_code) == (Status.DEAD, "invalid")
    assert "The email is suppressed." in refused.last_error_detail
    assert OutboxEvent.objects.filter(kind=Kind.PROFILE_UPSERT, status=Status.SENT).count() == 100


def test_klaviyo_status_counts_rows_waiting_on_jobs_and_the_oldest_job() -> None:
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone

    now = timezone.now()
    for job_id, age, rows in (("J-old", 90, 3), ("J-new", 5, 2)):
        started = now - timedelta(seconds=age)
        KlaviyoJob.objects.create(
            kind=Kind.CATALOG_ITEM,
            op="create",
            job_id=job_id,
            rows=[str(n) for n in range(rows)],
            started_at=started,
            next_poll_at=started,
            expires_at=started + timedelta(seconds=300),
        )
    KlaviyoJob.objects.create(
        kind=Kind.CATALOG_ITEM,
        op="create",
        job_id="J-done",
        rows=["x"],
        status=KlaviyoJob.Status.COMPLETE,
        started_at=now - timedelta(hours=1),
        next_poll_at=now,
        expires_at=now,
    )
    out = StringIO()
    call_command("klaviyo_status", stdout=out)
    text = out.getvalue()
    assert "rows waiting on Klaviyo jobs: 5 in 2 job(s)" in text
    assert "oldest Klaviyo job: J-old, started 9" in text  # 90s, or 91s on a slow run

    out = StringIO()
    call_command("klaviyo_status", "--json", stdout=out)
    figures = json.loads(out.getvalue())
    assert (figures["open_jobs"], figures["rows_awaiting_jobs"]) == (2, 5)
    assert figures["oldest_job_id"] == "J-old"


def test_the_outbox_admin_shows_which_job_a_row_waits_for_and_since_when(admin_client) -> None:
    clock = FakeClock()
    category()
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS_URL, status=202, json=job("queued", "job-77"))
        flusher(clock).flush_batch()

    page = admin_client.get("/admin/django_klaviyo/outboxevent/").content.decode()
    assert f"Waiting for Klaviyo job job-77 since {clock():%Y-%m-%d %H:%M:%S} UTC" in page
    assert "Awaiting Klaviyo job" in page


def test_a_catalog_backlog_does_not_hold_an_order_event_back() -> None:
    """30 catalog rows older than the order, batches of 10: the order goes in the first
    batch (fair share across lanes), not after the whole catalog."""
    from django.utils import timezone

    clock = FakeClock()
    long_ago = timezone.now() - timedelta(hours=1)
    for n in range(30):
        row = category(f"cat-{n}")
        OutboxEvent.objects.filter(pk=row.pk).update(next_attempt_at=long_ago)
    order = make_event(unique_id="order-1")
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS_URL, status=202, json=job("queued"))
        events = mocked.add(responses.POST, EVENTS_URL, status=202)
        worker = Flusher(client=fast_client(), clock=clock, sleep=clock.sleep, batch_size=10)
        worker.flush_batch()

    order.refresh_from_db()
    assert order.status == Status.SENT and events.call_count == 1
    assert OutboxEvent.objects.filter(status=Status.AWAITING_JOB).count() == 10
    assert (
        OutboxEvent.objects.filter(kind=Kind.CATALOG_CATEGORY, status=Status.PENDING).count() == 20
    )


def test_a_catalog_object_klaviyo_has_is_updated_whatever_the_row_says() -> None:
    """Create vs update comes from what the jobs that ended wrote, not from Klaviyo's
    error wording: a product re-created locally (the row says create) is an update."""
    clock = FakeClock()
    category()
    updates_url = "https://a.klaviyo.com/api/catalog-category-bulk-update-jobs"
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS_URL, status=202, json=job("queued"))
        mocked.add(responses.GET, f"{JOBS_URL}/job-1", json=job("complete"))
        worker = flusher(clock)
        worker.flush_batch()
        clock.advance(1.0)
        worker.flush_batch()  # the create job ended: Klaviyo has "kitchen"

        again = category()  # re-created locally: the row says create
        # Only the update endpoint is registered: a create would fail the test.
        mocked.add(responses.POST, updates_url, status=202, json=job("queued", "job-2"))
        clock.advance(1.0)
        worker.flush_batch()

    again.refresh_from_db()
    assert again.status == Status.AWAITING_JOB
    assert KlaviyoJob.objects.get(job_id="job-2").op == "update"


def test_a_dead_catalog_row_says_whether_it_was_a_create_or_an_update() -> None:
    clock = FakeClock()
    kitchen = category()
    refused = job(
        "complete",
        failed_count=1,
        errors=[
            {
                "code": "invalid",
                "detail": "Name too long.",
                "source": {"pointer": "/data/attributes/categories/data/0"},
            }
        ],
    )
    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, JOBS_URL, status=202, json=job("queued"))
        mocked.add(responses.GET, f"{JOBS_URL}/job-1", json=refused)
        worker = flusher(clock)
        worker.flush_batch()
        clock.advance(1.0)
        worker.flush_batch()

    kitchen.refresh_from_db()
    assert kitchen.status == Status.DEAD
    assert "Name too long." in kitchen.last_error_detail
    assert "[catalog category create]" in kitchen.last_error_detail
