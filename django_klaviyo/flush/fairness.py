"""A fair share across kinds: no backlog of one kind holds the others back.

``FairClaim`` is the flusher's claim: ``claim.claim_batch``, oldest first, topped up with
the other lanes' due rows when a full batch is all of one lane (issue 23; docs/workers.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime

from django.utils import timezone

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.flush.claim import ClaimedRow, claim_batch
from django_klaviyo.models import OutboxEvent

# Kinds that come in large backlogs of their own (a catalog sync, coupon codes): a batch
# that is all of one lane is topped up with rows of the others (``FairClaim``).
_LANES = {
    OutboxEvent.Kind.CATALOG_CATEGORY: "catalog",
    OutboxEvent.Kind.CATALOG_ITEM: "catalog",
    OutboxEvent.Kind.CATALOG_VARIANT: "catalog",
    OutboxEvent.Kind.BACK_IN_STOCK: "catalog",
    OutboxEvent.Kind.COUPON: "coupons",
    OutboxEvent.Kind.COUPON_CODE: "coupons",
    OutboxEvent.Kind.EVENT: "events",
}


def lane(kind: str) -> str:
    """The share a kind's rows compete in: catalog, coupons, events, or profiles (the rest)."""
    return _LANES.get(kind, "profiles")


class FairClaim:
    """A flusher's claim: ``claim_batch``, oldest first, with a fair share across lanes.

    When a batch is full and all of one lane (a 100,000-row catalog sync, a backfill of
    events), up to a batch more of the other lanes' due rows is claimed with it (an equal
    share: each lane's requests go to its own endpoints, within their own limits), so
    no backlog of one kind holds the others back. Looking for the other lanes walks the
    due rows past the backlog, so while such a look finds none the next one waits
    ``RECHECK_SECONDS``: a row of another lane that arrives during a backlog waits at most
    that long, and a drain of the backlog does not walk it once per batch. One query
    unless a backlog fills the batch."""

    RECHECK_SECONDS = 1.0

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._others_quiet_until = float("-inf")

    def __call__(
        self,
        *,
        owner: str,
        batch_size: int | None = None,
        kinds: Sequence[str] | None = None,
        now: datetime | None = None,
        using: str | None = None,
        account: str | None = None,
    ) -> list[ClaimedRow]:
        now = now or timezone.now()
        limit = batch_size or klaviyo_settings.BATCH_SIZE
        rows = claim_batch(
            owner=owner, batch_size=limit, kinds=kinds, now=now, using=using, account=account
        )
        if len(rows) < limit or limit < 2:
            return rows
        lanes = {lane(row.kind) for row in rows}
        if len(lanes) != 1 or self._monotonic() < self._others_quiet_until:
            return rows
        (full,) = lanes
        others = [k for k in (kinds or OutboxEvent.Kind.values) if lane(k) != full]
        if not others:
            return rows
        more = claim_batch(
            owner=owner, batch_size=limit, kinds=others, now=now, using=using, account=account
        )
        if not more:
            self._others_quiet_until = self._monotonic() + self.RECHECK_SECONDS
        return rows + more
