"""Two flushers at once on PostgreSQL: row locks keep their claims disjoint."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import pytest
import responses
from django.db import connection

from django_klaviyo.flush import flush_outbox
from django_klaviyo.flush.claim import claim_batch
from django_klaviyo.models import OutboxEvent
from tests.flush.test_flush import EVENTS_URL, make_event
from tests.klaviyo_fixtures import FakeClock

Status = OutboxEvent.Status

# Rate-limit windows live in the cache: every test starts with none.
pytestmark = pytest.mark.usefixtures("fresh_rate_limits")


def _in_thread(target: Any, barrier: threading.Barrier, results: list[Any], errors: list[Any]):
    def run() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(target())
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)
        finally:
            connection.close()  # each thread has its own connection

    return threading.Thread(target=run)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_claimers_never_take_the_same_row() -> None:
    clock = FakeClock()
    rows = OutboxEvent.objects.bulk_create(
        [make_event(unique_id=f"u{i}", save=False) for i in range(300)]
    )
    claims: list[list[Any]] = []
    errors: list[Any] = []
    barrier = threading.Barrier(2)
    started = threading.Barrier(2)

    def claim_until_empty(owner: str) -> Any:
        def claim() -> list[Any]:
            taken = [r.pk for r in claim_batch(owner=owner, batch_size=7, now=clock.now)]
            started.wait(timeout=10)  # both hold a claim before either drains the rest
            while batch := claim_batch(owner=owner, batch_size=7, now=clock.now):
                taken.extend(r.pk for r in batch)
            return taken

        return claim

    threads = [_in_thread(claim_until_empty(o), barrier, claims, errors) for o in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not errors
    first, second = (set(c) for c in claims)
    assert not first & second
    assert first | second == {r.pk for r in rows}
    assert first and second  # both really took part
    assert Counter(OutboxEvent.objects.values_list("locked_by", flat=True)).keys() == {"a", "b"}
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {1}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_flushers_send_every_row_exactly_once() -> None:
    from django_klaviyo.client import KlaviyoClient

    clock = FakeClock()
    OutboxEvent.objects.bulk_create(
        [
            make_event(email=f"c{i % 37}@example.com", unique_id=f"u{i}", save=False)
            for i in range(400)
        ]
    )
    sent_uids: list[str] = []
    lock = threading.Lock()

    def accept(request: Any) -> tuple[int, dict, str]:
        document = json.loads(request.body)
        with lock:
            for entry in document["data"]["attributes"]["events-bulk-create"]["data"]:
                for event in entry["attributes"]["events"]["data"]:
                    sent_uids.append(event["attributes"]["unique_id"])
        return 202, {}, ""

    reports: list[Any] = []
    errors: list[Any] = []
    barrier = threading.Barrier(2)

    started = threading.Barrier(2)

    def first_batch_done(report: Any) -> None:
        if report.batches == 1:
            started.wait(timeout=10)  # both flushers take part before either drains the rest

    def flusher() -> Any:
        client = KlaviyoClient(sleep=clock.sleep, clock=clock.monotonic)
        return flush_outbox(
            client=client,
            batch_size=25,
            clock=clock,
            sleep=clock.sleep,
            progress=first_batch_done,
        )

    with responses.RequestsMock() as mocked:
        mocked.add_callback(responses.POST, EVENTS_URL, callback=accept)
        threads = [_in_thread(flusher, barrier, reports, errors) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    assert not errors
    assert len(sent_uids) == 400
    assert sorted(sent_uids) == sorted(f"u{i}" for i in range(400))
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 400
    assert sum(r.sent for r in reports) == 400
    assert all(r.sent for r in reports)  # both flushers did part of the work
