"""Leases that match the work.

A flusher renews the lease of the rows it still holds while it works on them, so a slow
batch is not reclaimed (and re-sent) by another flusher; it records outcomes only for rows
it still holds, and its report counts only those. Unknown profiles of list adds are
resolved in bulk, never one request per row.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import responses
from django.db import connection

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent
from django_klaviyo.testing.sandbox import SandboxServer
from tests.flush.test_flush import EVENTS_URL, make_event, make_row
from tests.klaviyo_fixtures import FakeClock

Status = OutboxEvent.Status
Kind = OutboxEvent.Kind

# Rate-limit windows live in the cache: every test starts with none.
pytestmark = pytest.mark.usefixtures("fresh_rate_limits")

# Each of the batch's requests is slow, so the batch outlives the lease unless renewed.
LATENCY = 0.4
LEASE_SECONDS = 2


@pytest.mark.django_db
def test_a_flusher_that_lost_its_lease_records_and_reports_nothing_for_those_rows() -> None:
    """While the request is out, the rows' lease passes to another flusher (this one was
    too slow): the answer must not overwrite that flusher's rows, nor count in the report."""
    from django_klaviyo.client import KlaviyoClient

    clock = FakeClock()
    rows = [make_event(unique_id=f"u{i}") for i in range(5)]

    def taken_over_meanwhile(request: Any) -> tuple[int, dict, str]:
        OutboxEvent.objects.update(locked_by="other-host:2:abc", locked_at=clock.now)
        return 202, {}, ""

    with responses.RequestsMock() as mocked:
        mocked.add_callback(responses.POST, EVENTS_URL, callback=taken_over_meanwhile)
        report = flush_outbox(
            client=KlaviyoClient(sleep=clock.sleep, clock=clock.monotonic),
            clock=clock,
            sleep=clock.sleep,
        )

    assert report.sent == 0
    assert report.lost_leases == 5
    assert "5 row(s) lost to another flusher" in report.summary_lines()[0]
    for row in rows:
        row.refresh_from_db()
        assert (row.status, row.locked_by) == (Status.SENDING, "other-host:2:abc")


def _added_ids(record: Path) -> Counter[str]:
    """How many times each profile id was sent to add_profiles_to_list."""
    added: Counter[str] = Counter()
    for line in record.read_text().splitlines():
        entry = json.loads(line)
        if entry["operation"] == "add_profiles_to_list":
            added.update(item["id"] for item in entry["body"]["data"])
    return added


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_flushers_with_a_short_lease_never_resend_what_the_other_still_holds(
    tmp_path: Path, settings: Any
) -> None:
    """The issue's livelock, scaled down: list adds for profiles Klaviyo does not know yet,
    a slow Klaviyo, a lease shorter than a batch, two flushers."""
    record = tmp_path / "sandbox.jsonl"
    with SandboxServer(latency=LATENCY, record_path=record) as sandbox:
        settings.KLAVIYO = {
            **settings.KLAVIYO,
            "API_URL": sandbox.url,
            "LEASE_SECONDS": LEASE_SECONDS,
        }
        list_id = sandbox.state.create_list("Newsletter")["id"]
        OutboxEvent.objects.bulk_create(
            [
                OutboxEvent(
                    kind=Kind.LIST_ADD,
                    payload={"list_id": list_id, "profile": {"email": f"new{i}@example.com"}},
                    profile_key=f"email:new{i}@example.com",
                )
                for i in range(200)
            ]
        )
        reports: list[Any] = []
        errors: list[BaseException] = []

        def flusher() -> None:
            try:
                reports.append(flush_outbox(batch_size=100, max_seconds=120))
            except BaseException as exc:  # surfaced below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=flusher) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        counts = sandbox.state.request_counts()
        members = sandbox.state.members(list_id)

    assert not errors
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 200
    assert sorted(r.sent for r in reports) == [100, 100]
    assert all(r.reclaimed == 0 and r.lost_leases == 0 for r in reports)
    added = _added_ids(record)
    assert len(added) == 200 and set(added.values()) == {1}  # no profile added twice
    assert len(members) == 200
    # In bulk: one import job per batch of 100, never one profile-import per row.
    assert sum(counts["bulk_import_profiles"].values()) == 2
    assert "create_or_update_profile" not in counts
    assert sum(counts["get_profiles"].values()) == 2  # one lookup of 100 emails per batch


@pytest.mark.django_db
def test_a_catalog_job_running_longer_than_the_lease_keeps_its_rows_out_of_reclaim(
    settings: Any,
) -> None:
    """A catalog job may run for minutes (CATALOG_JOB_TIMEOUT): its rows wait for the job
    (``awaiting_job``), out of every lease, so no flusher reclaims (and re-sends) them
    however long it runs; the job settles them."""
    from django_klaviyo.client import KlaviyoClient, UnlimitedRateLimiter
    from django_klaviyo.flush.claim import reclaim_expired_leases

    settings.KLAVIYO = {**settings.KLAVIYO, "CATALOG_JOB_TIMEOUT": 3600.0}
    clock = FakeClock()
    row = make_row(
        Kind.CATALOG_CATEGORY,
        {"op": "upsert", "external_id": "kitchen", "create": True, "attributes": {"name": "K"}},
    )
    url = "https://a.klaviyo.com/api/catalog-category-bulk-create-jobs"
    seen: list[tuple[str, int]] = []

    def job(status: str) -> dict[str, Any]:
        return {"data": {"type": "x", "id": "job-1", "attributes": {"status": status}}}

    def poll(request: Any) -> tuple[int, dict, str]:
        clock.sleep(float(klaviyo_settings.LEASE_SECONDS) + 1)  # each poll outlives a lease
        reclaimed = reclaim_expired_leases(now=clock())
        seen.append((OutboxEvent.objects.get(pk=row.pk).status, reclaimed))
        return 200, {}, json.dumps(job("processing" if len(seen) < 3 else "complete"))

    with responses.RequestsMock() as mocked:
        mocked.add(responses.POST, url, status=202, json=job("queued"))
        mocked.add_callback(responses.GET, f"{url}/job-1", callback=poll)
        flush_outbox(
            client=KlaviyoClient(
                rate_limiter=UnlimitedRateLimiter(), clock=clock.monotonic, sleep=clock.sleep
            ),
            clock=clock,
            sleep=clock.sleep,
        )

    assert seen == [(Status.AWAITING_JOB, 0)] * 3
    row.refresh_from_db()
    assert row.status == Status.SENT
    assert row.attempts == 1


@pytest.mark.django_db
def test_rows_left_leased_by_a_failed_batch_are_not_marked_sent_by_the_next_one() -> None:
    """The database went away mid-batch: its rows stay leased until the lease expires (they
    may or may not have reached Klaviyo). The same flusher goes on, as a looping worker
    does; its next batch, sent whole, must record only its own rows as sent."""
    from django.db import OperationalError

    from django_klaviyo.client import KlaviyoClient
    from django_klaviyo.flush import FlushAborted
    from django_klaviyo.flush.loop import Flusher

    clock = FakeClock()
    first = [make_event(unique_id=f"first{i}") for i in range(2)]
    clock.advance(1)
    second = [make_event(unique_id=f"second{i}") for i in range(2)]
    posted: list[str] = []

    def gone_once(request: Any) -> tuple[int, dict, str]:
        if not posted:
            posted.append("gone")
            raise OperationalError("server closed the connection unexpectedly")
        for entry in json.loads(request.body)["data"]["attributes"]["events-bulk-create"]["data"]:
            posted.extend(
                e["attributes"]["unique_id"] for e in entry["attributes"]["events"]["data"]
            )
        return 202, {}, ""

    flusher = Flusher(
        client=KlaviyoClient(sleep=clock.sleep, clock=clock.monotonic),
        clock=clock,
        sleep=clock.sleep,
        batch_size=2,
    )
    with responses.RequestsMock() as mocked:
        mocked.add_callback(responses.POST, EVENTS_URL, callback=gone_once)
        with pytest.raises(FlushAborted):
            flusher.run()
        report = flusher.run()

    assert posted[1:] == ["second0", "second1"]
    assert report.sent == 2
    for row in first:
        row.refresh_from_db()
        assert row.status == Status.SENDING  # sent again once the lease expires
    for row in second:
        row.refresh_from_db()
        assert row.status == Status.SENT
