"""The run loop: claim a batch, send it (``deliver``), write its outcomes (``record``);
idle, stop, ride out outages and keep the lease in between."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.db import (
    DEFAULT_DB_ALIAS,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
)
from django.utils import timezone

from django_klaviyo.client import KlaviyoClient, account_client
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoAuthError, KlaviyoValidationError
from django_klaviyo.flush.claim import make_owner, reclaim_expired_leases
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.deliver import send_batch
from django_klaviyo.flush.fairness import FairClaim
from django_klaviyo.flush.jobs import next_look_in, settle_due_jobs
from django_klaviyo.flush.lease import Lease
from django_klaviyo.flush.outages import Outage, Unreachable
from django_klaviyo.flush.outcomes import Outcomes
from django_klaviyo.flush.plan import plan_due
from django_klaviyo.flush.record import record_outcomes
from django_klaviyo.flush.report import FlushAborted, FlushReport, StopSignal
from django_klaviyo.flush.rotation import AccountRotation, auth_hint, dead_letter_unknown
from django_klaviyo.flush.senders import Sender
from django_klaviyo.models import OutboxEvent

logger = logging.getLogger("django_klaviyo.flush")

Kind = OutboxEvent.Kind

# The longest the flusher's client waits for the local rate limit before it hands the
# request back (rescheduled, uncounted): short, so a stop request is honoured promptly.
CLIENT_MAX_WAIT = 5.0

# While outbox batches keep coming, the flusher looks for pending webhook items again at
# most this often once it found none (a query and a transaction per batch otherwise);
# every loop while some are pending, and whenever the outbox has nothing due.
WEBHOOK_RECHECK_SECONDS = 1.0


def get_client(account: str | None = None) -> KlaviyoClient:
    """A client for one flusher, from settings: one HTTP attempt per call (the flusher
    retries, by rescheduling rows) and a short local rate-limit wait. ``account``: a name
    of ``KLAVIYO["ACCOUNTS"]`` (None: the default account)."""
    if account is None:
        return KlaviyoClient(max_attempts=1, max_wait=CLIENT_MAX_WAIT)
    return account_client(account, max_attempts=1, max_wait=CLIENT_MAX_WAIT)


def validate_kinds(kinds: Iterable[str] | None) -> list[str] | None:
    if kinds is None:
        return None
    chosen = [str(k).strip() for k in kinds if str(k).strip()]
    unknown = sorted(set(chosen) - set(Kind.values))
    if unknown:
        raise KlaviyoValidationError(
            f"Unknown outbox kind(s): {', '.join(unknown)}. Choose from {', '.join(Kind.values)}.",
            field="kinds",
        )
    return chosen or None


class Flusher:
    """One flushing worker: its lease owner id, client, clock and back-off randomness."""

    def __init__(
        self,
        *,
        client: Any = None,
        batch_size: int | None = None,
        kinds: Iterable[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
        jitter: Callable[[], float] | None = None,
        owner: str | None = None,
        using: str | None = None,
        account: str | None = None,
    ) -> None:
        size = batch_size if batch_size is not None else klaviyo_settings.BATCH_SIZE
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise KlaviyoValidationError(
                f"batch size must be a positive whole number, not {size!r}.", field="batch_size"
            )
        self.batch_size = size
        self.kinds = validate_kinds(kinds)
        # The database alias whose outbox this flusher drains (rows are written to the
        # alias of the store's transaction; see outbox.enqueue_many).
        self.using = using or DEFAULT_DB_ALIAS
        # The accounts this flusher sends for (``account``: one; None: all, in turn).
        self.accounts = AccountRotation(account, client=client)
        self.clock = clock or timezone.now
        self.sleep = sleep
        # A factor in [0.5, 1]: spreads retries of many rows without exceeding the cap.
        self.jitter = jitter or (lambda: random.uniform(0.5, 1.0))
        self.owner = owner or make_owner()
        # Batches leased so far. Each batch is leased under its own owner id (``owner``
        # and the batch's number): rows an aborted batch left leased (until their lease
        # expires) are never taken for the current batch's when it records its outcomes.
        self.leased_batches = 0
        self.claim = FairClaim()
        self.report = FlushReport()
        self._stop: Any = None
        self.lease: Lease | None = None
        self.unreachable = Unreachable()
        # When the last look for pending webhook items found none (monotonic seconds).
        self._no_webhook_items_at: float | None = None

    @property
    def client(self) -> Any:
        """The flusher's own client for the account being sent. It makes one HTTP attempt
        per call: retries are the flusher's (one policy, in one place: the outbox row's
        back-off and MAX_ATTEMPTS)."""
        return self.accounts.client(lambda name: get_client() if name is None else get_client(name))

    @property
    def senders(self) -> dict[str, Sender]:
        return self.accounts.senders(self.using)

    def _context(self, lease: Lease) -> SendContext:
        """What the senders of the current account may use while sending a batch."""
        return SendContext(
            using=self.using,
            lease=lease,
            account=self.accounts.current.stored,
            report=self.report,
            clock=self.clock,
            make_client=lambda: self.client,
            retry_delay=self.retry_delay,
            pause=self.pause,
            stopping=self.stopping,
        )

    # -- between requests ----------------------------------------------------------------

    def stopping(self) -> bool:
        stop = self._stop
        if stop is None:
            return False
        return stop.is_set() if hasattr(stop, "is_set") else bool(stop())

    def pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (waking at once on a stop request), keeping the lease; False
        when the flusher should stop instead."""
        if self.stopping():
            return False
        if self.sleep is not None:
            self.sleep(seconds)
        elif isinstance(self._stop, threading.Event):
            self._stop.wait(seconds)
        else:
            time.sleep(seconds)
        self.lease_keep()
        return not self.stopping()

    def lease_keep(self) -> None:
        if self.lease is not None:
            self.lease.keep()

    # -- back-off ------------------------------------------------------------------------

    def retry_delay(self, attempts: int, retry_after: float | None = None) -> float:
        base = float(klaviyo_settings.RETRY_BASE_SECONDS)
        cap = float(klaviyo_settings.RETRY_MAX_SECONDS)
        backoff = min(cap, base * 2 ** max(attempts - 1, 0)) * self.jitter()
        return max(float(retry_after or 0.0), backoff)

    # -- running -------------------------------------------------------------------------

    def run(
        self,
        *,
        dry_run: bool = False,
        stop: StopSignal | Callable[[], bool] | None = None,
        max_seconds: float | None = None,
        loop: bool = False,
        idle_sleep: float = 5.0,
        progress: Callable[[FlushReport], None] | None = None,
        max_outage: float | None = None,
    ) -> FlushReport:
        """Flush until drained (or, with ``loop``, until stopped). A looping flusher rides
        out database outages: it reconnects with back-off and logs a line a minute, and
        raises ``FlushAborted(reason="outage")`` only once an outage outlasts
        ``max_outage`` seconds (if given)."""
        if dry_run:
            return self.plan_due()
        _ = self.client  # fail on configuration before any row is claimed
        self._stop = stop
        started = time.monotonic()
        outage = Outage(self.using, max_outage)

        while True:
            if self.stopping():
                self.report.ended = "stopped"
                break
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                self.report.ended = "max_seconds"
                break
            try:
                if loop and not connections[self.using].in_atomic_block:
                    close_old_connections()  # a long-running worker drops stale connections
                claimed = self.flush_batch()
                claimed += self.process_webhook_items(outbox_busy=claimed > 0)
            except FlushAborted as exc:
                if not loop or exc.reason != "database":
                    raise
                self._idle(outage.failed(exc), stop, max_seconds, started)
                continue
            outage.ended()
            if claimed and progress is not None:
                progress(self.report)
            if claimed:
                continue
            # Jobs still running: a drain waits for them (their rows are due to end);
            # a loop looks again when the first is due, if that is sooner than idling.
            wait = self._next_job_look()
            if not loop:
                if wait is None:
                    self.report.ended = "drained"
                    break
                self._idle(max(wait, 0.05), stop, max_seconds, started)
                continue
            self._idle(
                idle_sleep if wait is None else min(idle_sleep, max(wait, 0.05)),
                stop,
                max_seconds,
                started,
            )
        self.accounts.raise_stopped(self.report)  # a rejected key ends the run non-zero
        return self.report

    def process_webhook_items(self, *, outbox_busy: bool = False) -> int:
        """One batch of pending webhook items (large deliveries are acknowledged first and
        handled here); returns how many were handled. Skipped when flushing some kinds,
        and (``outbox_busy``: the outbox just gave a batch) for WEBHOOK_RECHECK_SECONDS
        after a look that found none."""
        if self.kinds is not None:
            return 0
        now = time.monotonic()
        idle_since = self._no_webhook_items_at
        if outbox_busy and idle_since is not None and now - idle_since < WEBHOOK_RECHECK_SECONDS:
            return 0
        from django_klaviyo.webhooks.dispatch import process_pending

        try:
            handled = process_pending(using=self.using).handled
            self._no_webhook_items_at = None if handled else now
            return handled
        except (OperationalError, InterfaceError) as exc:
            raise FlushAborted(
                f"The database is unavailable ({type(exc).__name__}); flushing stopped.",
                reason="database",
            ) from exc

    def _idle(self, seconds: float, stop: Any, max_seconds: float | None, started: float) -> None:
        if max_seconds is not None:
            seconds = max(0.0, min(seconds, max_seconds - (time.monotonic() - started)))
        if self.sleep is not None:
            self.sleep(seconds)
        elif isinstance(stop, threading.Event):
            stop.wait(seconds)  # wakes at once when asked to stop
        else:
            time.sleep(seconds)

    def flush_batch(self) -> int:
        """Claim, send and mark one batch of each account's rows in turn; returns the
        number of rows claimed. A rejected key stops only its own account."""
        claimed = 0
        for state in self.accounts.active():
            self.accounts.current = state
            try:
                claimed += self._flush_account_batch(state.stored)
            except FlushAborted as exc:
                if exc.reason != "auth":
                    raise
                self.accounts.stop(state, exc)
        return claimed

    def _next_job_look(self) -> float | None:
        """Seconds until one of this flusher's open Klaviyo jobs is due for a look."""
        accounts = None if self.accounts.every_account else [self.accounts.current.stored]
        try:
            return next_look_in(
                using=self.using, accounts=accounts, kinds=self.kinds, now=self.clock()
            )
        except (OperationalError, InterfaceError):
            return None  # the next pass meets the outage and rides it out

    def _settle_jobs(self, account: str) -> int:
        """Look at this account's Klaviyo jobs due for a look; returns how many ended."""
        try:
            return settle_due_jobs(
                using=self.using,
                account=account,
                owner=self.owner,
                client=self.client,
                senders=self.senders,
                clock=self.clock,
                retry_delay=self.retry_delay,
                report=self.report,
                kinds=self.kinds,
            )
        except KlaviyoAuthError as err:
            raise FlushAborted(
                f"Klaviyo rejected the API key (HTTP {err.status}"
                + (f", {err.code}" if err.code else "")
                + f"). Check {auth_hint(self.accounts.current.name)}; flushing stopped.",
                reason="auth",
            ) from err

    def _flush_account_batch(self, account: str) -> int:
        try:
            settled = self._settle_jobs(account)
            self.report.reclaimed += reclaim_expired_leases(now=self.clock(), using=self.using)
            if self.accounts.sweep_once() and self.kinds is None:
                dead_letter_unknown(now=self.clock(), using=self.using)
            lease_owner = f"{self.owner}/{self.leased_batches + 1}"
            rows = self.claim(
                owner=lease_owner,
                batch_size=self.batch_size,
                kinds=self.kinds,
                now=self.clock(),
                using=self.using,
                account=account,
            )
        except (OperationalError, InterfaceError) as exc:
            raise FlushAborted(
                f"The database is unavailable ({type(exc).__name__}); flushing stopped.",
                reason="database",
            ) from exc
        if not rows:
            return settled
        self.leased_batches += 1
        self.report.batches += 1
        self.report.claimed += len(rows)
        self.lease = Lease(rows, owner=lease_owner, using=self.using, clock=self.clock)
        ctx = self._context(self.lease)
        outcomes = Outcomes()
        try:
            send_batch(ctx, self.senders, rows, outcomes, self.unreachable)
        except KlaviyoAuthError as err:
            # Nothing unsent counts as an attempt: the key is the problem, not the rows.
            outcomes.mark_release(rows)
            self._persist(ctx, outcomes)
            raise FlushAborted(
                f"Klaviyo rejected the API key (HTTP {err.status}"
                + (f", {err.code}" if err.code else "")
                + f"). Check {auth_hint(self.accounts.current.name)}; flushing stopped and "
                "the claimed rows were put back.",
                reason="auth",
            ) from err
        except (OperationalError, InterfaceError) as exc:
            raise FlushAborted(
                f"The database went away mid-flush ({type(exc).__name__}); the claimed rows stay "
                "'sending' and are retried once their lease expires.",
                reason="database",
            ) from exc
        except BaseException:
            # An unexpected bug: keep what was decided; the rest is reclaimed after the lease.
            self._persist(ctx, outcomes)
            raise
        # Rows not attempted because a stop was asked for go back as they were.
        if len(outcomes.decided) < len(rows):
            outcomes.mark_release(rows)
        self._persist(ctx, outcomes, claimed=len(rows))
        return len(rows) + settled

    # -- marking -------------------------------------------------------------------------

    def _persist(self, ctx: SendContext, outcomes: Outcomes, claimed: int | None = None) -> None:
        """Write every outcome of a batch (see ``record``); ``claimed``: the batch size,
        when every claimed row has been decided."""
        record_outcomes(ctx, self.senders, outcomes, claimed)
        self.lease = None

    # -- dry run -------------------------------------------------------------------------

    def plan_due(self) -> FlushReport:
        """Count what a flush would send now, claiming nothing (see ``plan``)."""
        self.report = plan_due(
            self.senders,
            now=self.clock(),
            kinds=self.kinds,
            using=self.using,
            account=None if self.accounts.every_account else self.accounts.current.stored,
            batch_size=self.batch_size,
        )
        return self.report


def flush_outbox(
    *,
    batch_size: int | None = None,
    kinds: Iterable[str] | None = None,
    dry_run: bool = False,
    client: Any = None,
    stop: StopSignal | Callable[[], bool] | None = None,
    max_seconds: float | None = None,
    loop: bool = False,
    idle_sleep: float = 5.0,
    progress: Callable[[FlushReport], None] | None = None,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] | None = None,
    jitter: Callable[[], float] | None = None,
    using: str | None = None,
    max_outage: float | None = None,
    account: str | None = None,
) -> FlushReport:
    """Send due outbox rows to Klaviyo until none are due (or forever with ``loop``).

    ``stop`` (a callable or ``threading.Event``) is checked between requests: rows not yet
    sent go back uncounted. Raises ``FlushAborted`` when the API key is rejected (401), or
    when the database goes away (with ``loop``: only after ``max_outage`` seconds of it);
    everything else is recorded on the rows. ``using``: the database
    alias to drain (default ``default``). ``account``: send only this Klaviyo account's
    rows (default: every configured account in turn; see ``flush.accounts``).
    """
    flusher = Flusher(
        client=client,
        batch_size=batch_size,
        kinds=kinds,
        clock=clock,
        sleep=sleep,
        jitter=jitter,
        using=using,
        account=account,
    )
    return flusher.run(
        dry_run=dry_run,
        stop=stop,
        max_seconds=max_seconds,
        loop=loop,
        idle_sleep=idle_sleep,
        progress=progress,
        max_outage=max_outage,
    )
