"""What a sender may use of the run sending it: ``SendContext``, one per claimed batch.

The ``Flusher`` (``loop``) builds it and hands it to ``deliver``, ``record`` and each
sender's ``resolve`` and ``send``; none of them sees the ``Flusher`` itself. It carries the
batch's database alias, lease and lease owner, the account being sent, the client for it,
the clock, the report where requests are counted, the back-off, and the way to wait or
to notice a stop request between requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django_klaviyo.flush.claim import ClaimedRow
from django_klaviyo.flush.lease import Lease
from django_klaviyo.flush.report import FlushReport
from django_klaviyo.models import OutboxEvent


@dataclass(frozen=True)
class SendContext:
    """One batch's run, as senders see it (built by the ``Flusher`` per batch)."""

    # The database alias of the rows (local mirrors are updated there too).
    using: str
    # The batch's lease: its rows are leased to ``lease.owner`` (``OutboxEvent.locked_by``).
    lease: Lease
    # The ``OutboxEvent.account`` of the rows ("": the default account).
    account: str
    report: FlushReport
    clock: Callable[[], datetime]
    # The account's client, made on first use (a batch of invalid rows never makes one).
    make_client: Callable[[], Any]
    # Seconds to wait before attempt ``attempts + 1`` (at least ``retry_after``).
    retry_delay: Callable[[int, float | None], float]
    # Wait ``seconds`` keeping the lease; False when the run should stop instead.
    pause: Callable[[float], bool]
    # Whether a stop was asked for (checked between requests).
    stopping: Callable[[], bool]

    @property
    def owner(self) -> str:
        return self.lease.owner

    @property
    def client(self) -> Any:
        return self.make_client()

    def keep_lease(self) -> None:
        """Renew the batch's lease if it is due (between requests, between polls)."""
        self.lease.keep()

    def retry_at(self, attempts: int, retry_after: float | None = None) -> datetime:
        return self.clock() + timedelta(seconds=self.retry_delay(attempts, retry_after))

    def request_made(self) -> None:
        """Count one request to Klaviyo in the report."""
        self.report.requests += 1

    def note_rows(self, rows: Sequence[ClaimedRow], note: str) -> None:
        """Write ``note`` (``outcome_note``, shown in the admin) now, on ``rows`` this batch
        still holds; their outcome is written with the batch and keeps it."""
        OutboxEvent.objects.using(self.using).filter(
            pk__in=[r.pk for r in rows],
            status=OutboxEvent.Status.SENDING,
            locked_by=self.owner,
        ).update(outcome_note=note[:255])
