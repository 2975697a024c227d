"""A fair share across kinds (``flush/fairness.py``): a full batch of one lane is topped up
with the other lanes' due rows, and while such a look finds none, the next waits a second
instead of walking the backlog once per batch."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django_klaviyo.flush.fairness import FairClaim
from django_klaviyo.models import OutboxEvent
from tests.flush.test_flush import make_event
from tests.flush.test_flush_jobs import category

pytestmark = pytest.mark.django_db

Kind = OutboxEvent.Kind


class Seconds:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def backlog_of_events(count: int) -> None:
    long_ago = timezone.now() - timedelta(hours=1)
    for n in range(count):
        row = make_event(unique_id=f"old-{n}")
        OutboxEvent.objects.filter(pk=row.pk).update(next_attempt_at=long_ago)


def test_a_full_batch_of_one_lane_is_topped_up_with_the_others() -> None:
    backlog_of_events(10)
    category()  # younger than every event: oldest first alone would leave it behind

    rows = FairClaim()(owner="worker-a", batch_size=4)

    kinds = [row.kind for row in rows]
    assert kinds.count(Kind.EVENT) == 4 and kinds.count(Kind.CATALOG_CATEGORY) == 1


def test_after_a_top_up_that_found_none_the_next_look_waits_a_second() -> None:
    backlog_of_events(12)
    seconds = Seconds()
    claim = FairClaim(monotonic=seconds)

    assert {row.kind for row in claim(owner="a/1", batch_size=4)} == {Kind.EVENT}
    category()  # arrives during the backlog, after a look found no other lane

    assert {row.kind for row in claim(owner="a/2", batch_size=4)} == {Kind.EVENT}
    seconds.now += FairClaim.RECHECK_SECONDS
    assert Kind.CATALOG_CATEGORY in {row.kind for row in claim(owner="a/3", batch_size=4)}
