"""The lease on a claimed batch: renewed while the flusher works, checked before it records.

A flusher owns its claimed rows for LEASE_SECONDS from its last renewal; after that any
flusher may reclaim them (``claim.reclaim_expired_leases``). So a flusher renews the lease
of the rows it still holds between requests (every quarter of the lease), stops working on
rows it no longer holds, and records outcomes, and counts them in its report, only for
rows it still holds when it writes them.

Each batch is leased under its own owner id (``Flusher``): the rows leased to it are
always rows of this batch, so renewing and confirming the lease need no list of ids; the
ids are read only when some rows were lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.db import connections
from django.db.models import QuerySet

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.flush.claim import ClaimedRow
from django_klaviyo.models import OutboxEvent

logger = logging.getLogger("django_klaviyo.flush")

Status = OutboxEvent.Status

# Renew when this share of the lease has passed since the claim or the last renewal.
RENEW_AFTER = 0.25


class Lease:
    """The rows of one batch that this flusher holds. ``owner`` must be this batch's own
    (no other rows are leased to it)."""

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
        renewed = self._mine().update(locked_at=self.clock())
        self.renewed_at = self.monotonic()
        if renewed != len(self.held):
            self._forget(self.still_held())

    def still_held(self, *, lock: bool = False) -> set[Any]:
        """The pks of this batch that are still leased to this flusher (a query). With
        ``lock`` (in a transaction) they stay so until it ends: no reclaim in between."""
        rows = self._mine().select_for_update() if lock else self._mine()
        return set(rows.values_list("pk", flat=True)) & self.held

    def confirm(self) -> set[Any]:
        """The rows whose outcomes may be recorded now (asked inside the recording
        transaction; the writes are conditional on the lease too). Always asked: clocks
        of other hosts may run ahead, so elapsed time alone proves nothing. The rows are
        counted (and locked); their ids are read only when some are missing."""
        if self._count_locked() != len(self.held):
            self._forget(self.still_held(lock=True))
        return self.held

    def _count_locked(self) -> int:
        """How many rows are still leased to this batch, locked until the transaction
        ends where the database locks rows."""
        connection = connections[self.using]
        if connection.vendor not in ("postgresql", "sqlite"):
            return len(self._mine().select_for_update().values_list("pk", flat=True))
        table = connection.ops.quote_name(OutboxEvent._meta.db_table)
        status = connection.ops.quote_name(OutboxEvent._meta.get_field("status").column)
        owner = connection.ops.quote_name(OutboxEvent._meta.get_field("locked_by").column)
        # Names come quoted from the model's meta; every value is a parameter. FOR UPDATE
        # is not allowed with an aggregate: the rows are locked in a subquery. SQLite has
        # one writer at a time and no row locks.
        lock = " FOR UPDATE" if connection.vendor == "postgresql" else ""
        sql = (
            f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {status} = %s "  # noqa: S608
            f"AND {owner} = %s{lock}) AS held"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [Status.SENDING, self.owner])
            return int(cursor.fetchone()[0])

    def holds_all(self, rows: Iterable[ClaimedRow]) -> bool:
        """Whether every one of ``rows`` (rows of this batch) is still held."""
        return not self.lost or all(row.pk in self.held for row in rows)

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
