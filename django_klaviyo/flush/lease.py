"""The lease on a claimed batch: renewed while the flusher works, checked before it records.

A flusher owns its claimed rows for LEASE_SECONDS from its last renewal; after that any
flusher may reclaim them (``claim.reclaim_expired_leases``). So a flusher renews the lease
of the rows it still holds between requests (every quarter of the lease), stops working on
rows it no longer holds, and records outcomes, and counts them in its report, only for
rows it still holds when it writes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.flush.claim import IN_CHUNK, ClaimedRow, chunks
from django_klaviyo.models import OutboxEvent

logger = logging.getLogger("django_klaviyo.flush")

Status = OutboxEvent.Status

# Renew when this share of the lease has passed since the claim or the last renewal.
RENEW_AFTER = 0.25


class Lease:
    """The rows of one batch that this flusher holds."""

    def __init__(
        self,
        rows: Iterable[ClaimedRow],
        *,
        owner: str,
        using: str,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.held: set[Any] = {row.pk for row in rows}
        self.lost: set[Any] = set()
        self.owner = owner
        self.using = using
        self.clock = clock
        self.monotonic = monotonic
        self.seconds = float(klaviyo_settings.LEASE_SECONDS)
        self.renewed_at = monotonic()

    def _mine(self) -> QuerySet[OutboxEvent]:
        return OutboxEvent.objects.using(self.using).filter(
            status=Status.SENDING, locked_by=self.owner
        )

    def keep(self) -> None:
        """Renew the lease if a quarter of it has passed (between requests)."""
        if self.monotonic() - self.renewed_at >= self.seconds * RENEW_AFTER:
            self.renew()

    def renew(self) -> None:
        """Move the lease of the rows still held forward; note the ones taken meanwhile."""
        if not self.held:
            return
        now = self.clock()
        renewed = 0
        for chunk in chunks(sorted(self.held, key=str), IN_CHUNK):
            renewed += self._mine().filter(pk__in=chunk).update(locked_at=now)
        self.renewed_at = self.monotonic()
        if renewed != len(self.held):
            self._forget(self.still_held())

    def still_held(self, *, lock: bool = False) -> set[Any]:
        """The pks of this batch that are still leased to this flusher (a query). With
        ``lock`` (in a transaction) they stay so until it ends: no reclaim in between."""
        found: set[Any] = set()
        rows = self._mine().select_for_update() if lock else self._mine()
        for chunk in chunks(sorted(self.held, key=str), IN_CHUNK):
            found.update(rows.filter(pk__in=chunk).values_list("pk", flat=True))
        return found

    def confirm(self) -> set[Any]:
        """The rows whose outcomes may be recorded now (asked inside the recording
        transaction; the writes are conditional on the lease too). Always asked: clocks
        of other hosts may run ahead, so elapsed time alone proves nothing."""
        self._forget(self.still_held(lock=True))
        return set(self.held)

    def _forget(self, held: set[Any]) -> None:
        lost = self.held - held
        if lost:
            logger.warning(
                "%d claimed outbox row(s) were reclaimed by another flusher after this one's "
                "lease ran out; their outcomes are left to that flusher.",
                len(lost),
            )
        self.lost |= lost
        self.held = held

    def holds(self, row: ClaimedRow) -> bool:
        return row.pk in self.held
