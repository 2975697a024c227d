"""The run loop: claim a batch, hand each kind to its sender, deliver, write outcomes."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import (
    DEFAULT_DB_ALIAS,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
)
from django.utils import timezone

from django_klaviyo.client import KlaviyoClient
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import (
    KlaviyoAuthError,
    KlaviyoError,
    KlaviyoPermissionError,
    KlaviyoTransportError,
    KlaviyoValidationError,
)
from django_klaviyo.flush.claim import (
    ClaimedRow,
    claim_batch,
    make_owner,
    reclaim_expired_leases,
)
from django_klaviyo.flush.lease import Lease
from django_klaviyo.flush.outages import Outage, Unreachable, missing_scope_info
from django_klaviyo.flush.outcomes import ErrorInfo, Outcomes, error_info, is_retryable, splittable
from django_klaviyo.flush.plan import plan_due
from django_klaviyo.flush.record import record_outcomes
from django_klaviyo.flush.report import FlushAborted, FlushReport, StopSignal
from django_klaviyo.flush.senders import Request, Sender, make_senders, prepare_rows
from django_klaviyo.models import OutboxEvent

logger = logging.getLogger("django_klaviyo.flush")

Kind = OutboxEvent.Kind
Status = OutboxEvent.Status

# Extra requests one rejected request may cost while isolating its bad rows.
SPLIT_BUDGET = 64
# The longest the flusher's client waits for the local rate limit before it hands the
# request back (rescheduled, uncounted): short, so a stop request is honoured promptly.
CLIENT_MAX_WAIT = 5.0
# Rows of a kind whose endpoint the key may not use wait this long before they try again.
MISSING_SCOPE_HOLD_SECONDS = 300.0

# Upserts go first so later kinds find the Klaviyo ids they learn; deletions go last
# so nothing in the same batch re-creates a profile that is being erased.
KIND_ORDER = (
    Kind.PROFILE_UPSERT,
    Kind.LIST_ADD,
    Kind.LIST_REMOVE,
    Kind.SUBSCRIBE,
    Kind.UNSUBSCRIBE,
    # The catalog before the subscriptions naming its variants.
    Kind.CATALOG_CATEGORY,
    Kind.CATALOG_ITEM,
    Kind.CATALOG_VARIANT,
    Kind.BACK_IN_STOCK,
    # A coupon before its codes.
    Kind.COUPON,
    Kind.COUPON_CODE,
    Kind.EVENT,
    Kind.PROFILE_DELETION,
)


def get_client() -> KlaviyoClient:
    """A client for one flusher, from settings: one HTTP attempt per call (the flusher
    retries, by rescheduling rows) and a short local rate-limit wait."""
    return KlaviyoClient(max_attempts=1, max_wait=CLIENT_MAX_WAIT)


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
        self._client = client
        self.clock = clock or timezone.now
        self.sleep = sleep
        # A factor in [0.5, 1]: spreads retries of many rows without exceeding the cap.
        self.jitter = jitter or (lambda: random.uniform(0.5, 1.0))
        self.owner = owner or make_owner()
        self.senders = make_senders(self.using)
        for sender in self.senders.values():
            sender.flusher = self
        self.report = FlushReport()
        self._stop: Any = None
        self.lease: Lease | None = None
        self.unreachable = Unreachable()

    @property
    def client(self) -> Any:
        """The flusher's own client. It makes one HTTP attempt per call: retries are the
        flusher's (one policy, in one place: the outbox row's back-off and MAX_ATTEMPTS)."""
        if self._client is None:
            self._client = get_client()
        return self._client

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

    def retry_at(self, attempts: int, retry_after: float | None = None) -> datetime:
        return self.clock() + timedelta(seconds=self.retry_delay(attempts, retry_after))

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
                claimed += self.process_webhook_items()
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
            if not loop:
                self.report.ended = "drained"
                break
            self._idle(idle_sleep, stop, max_seconds, started)
        return self.report

    def process_webhook_items(self) -> int:
        """One batch of pending webhook items (large deliveries are acknowledged first and
        handled here); returns how many were handled. Skipped when flushing some kinds."""
        if self.kinds is not None:
            return 0
        from django_klaviyo.webhooks.dispatch import process_pending

        try:
            return process_pending(using=self.using).handled
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
        """Claim, send and mark one batch; returns the number of rows claimed."""
        try:
            self.report.reclaimed += reclaim_expired_leases(now=self.clock(), using=self.using)
            rows = claim_batch(
                owner=self.owner,
                batch_size=self.batch_size,
                kinds=self.kinds,
                now=self.clock(),
                using=self.using,
            )
        except (OperationalError, InterfaceError) as exc:
            raise FlushAborted(
                f"The database is unavailable ({type(exc).__name__}); flushing stopped.",
                reason="database",
            ) from exc
        if not rows:
            return 0
        self.report.batches += 1
        self.report.claimed += len(rows)
        self.lease = Lease(rows, owner=self.owner, using=self.using, clock=self.clock)
        outcomes = Outcomes()
        try:
            self._send(rows, outcomes)
        except KlaviyoAuthError as err:
            # Nothing unsent counts as an attempt: the key is the problem, not the rows.
            outcomes.mark_release(rows)
            self._persist(outcomes)
            raise FlushAborted(
                f"Klaviyo rejected the API key (HTTP {err.status}"
                + (f", {err.code}" if err.code else "")
                + "). Check KLAVIYO['PRIVATE_API_KEY']; flushing stopped and "
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
            self._persist(outcomes)
            raise
        # Rows not attempted because a stop was asked for go back as they were.
        outcomes.mark_release(rows)
        self._persist(outcomes, claimed=len(rows))
        return len(rows)

    def _send(self, rows: list[ClaimedRow], outcomes: Outcomes) -> None:
        by_kind: dict[str, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            by_kind[row.kind].append(row)
        for kind in KIND_ORDER:
            if kind not in by_kind:
                continue
            kind_rows = by_kind.pop(kind)
            if self.stopping():
                continue  # released by flush_batch, uncounted
            sender = self.senders[kind]
            ready, invalid = prepare_rows(sender, kind_rows)
            for row, info in invalid:
                outcomes.mark_dead([row], info)
            try:
                ready = sender.resolve(self, ready, outcomes)
                self._deliver(sender, sender.plan(ready), outcomes)
            except KlaviyoPermissionError as err:
                # The key lacks a scope this kind's endpoint needs: only this kind waits.
                until = self.clock() + timedelta(seconds=MISSING_SCOPE_HOLD_SECONDS)
                outcomes.mark_hold(kind_rows, until, missing_scope_info(err))
        for kind, leftover in by_kind.items():  # a kind this version does not know
            outcomes.mark_dead(leftover, ErrorInfo(None, "unknown_kind", f"Unknown kind {kind!r}."))

    def _still_held(self, sender: Sender, request: Request) -> list[Request]:
        """``request``, or its rows this flusher still holds re-planned (none: [])."""
        lease = self.lease
        if lease is None:
            return [request]
        lease.keep()
        if all(lease.holds(r) for r in request.rows):
            return [request]
        if request.parts is not None:
            return []
        return sender.plan([r for r in request.rows if lease.holds(r)])

    def _deliver(self, sender: Sender, requests: list[Request], outcomes: Outcomes) -> None:
        queue = deque(requests)
        budget = SPLIT_BUDGET
        while queue:
            if self.stopping():
                return  # the rest is released uncounted (flush_batch)
            request = queue.popleft()
            if request.parts is not None and request.rows[0].pk in outcomes.decided:
                continue  # an earlier part of this row failed: the row is retried whole
            held = self._still_held(sender, request)
            if len(held) != 1 or held[0] is not request:
                queue.extendleft(reversed(held))
                continue
            self.report.requests += 1
            try:
                result = sender.send(self.client, request)
            except KlaviyoAuthError:
                raise
            except KlaviyoError as err:
                if _not_attempted(err):
                    # Nothing reached Klaviyo (local rate limit, network down): the rows
                    # wait, uncounted, and so does the rest of this kind.
                    failures = self.unreachable.failed(err)
                    until = self.retry_at(failures, getattr(err, "retry_after", None))
                    outcomes.mark_release(request.rows, until)
                    for rest in queue:
                        outcomes.mark_release(rest.rows, until)
                    return
                if is_retryable(err):
                    outcomes.mark_retry(request.rows, err)
                    # The endpoint is throttled or failing: the rest waits, uncounted.
                    until = self.retry_at(1, getattr(err, "retry_after", None))
                    for rest in queue:
                        outcomes.mark_release(rest.rows, until)
                    return
                located = sender.locate(err, request)
                if located:
                    for row, info in located.values():
                        outcomes.mark_dead([row], info)
                    remaining = [r for r in request.rows if r.pk not in located]
                    if remaining and budget > 0:
                        budget -= 1
                        queue.extendleft(reversed(sender.plan(remaining)))
                    elif remaining:
                        outcomes.mark_retry(remaining, err)
                    continue
                if splittable(err) and len(request.rows) > 1:
                    budget = self._split(sender, request, err, queue, outcomes, budget)
                    continue
                outcomes.mark_dead(request.rows, error_info(err))
            except (OperationalError, InterfaceError):
                raise
            except Exception as exc:
                # Not Klaviyo's answer: building or encoding the request failed (a payload
                # the rules never saw, a bug). Isolate the row(s) and dead-letter them.
                logger.warning("Building a %s request failed: %r", sender.kind, exc)
                if len(request.rows) > 1:
                    budget = self._split(sender, request, exc, queue, outcomes, budget)
                    continue
                outcomes.mark_dead(request.rows, _unexpected(exc))
            else:
                self.unreachable.ended()
                if request.parts is not None:
                    request.parts.remaining -= 1
                    if request.parts.remaining:
                        continue  # sent once every part is accepted
                accepted = self._settle(sender, request, result, outcomes)
                # A catalog job's per-item errors name their rows directly.
                refused = (sender.rejected(request, result) or {}).values()
                for row, info in refused:
                    outcomes.mark_dead([row], info)
                refused_pks = {row.pk for row, _ in refused}
                outcomes.mark_sent([r for r in accepted if r.pk not in refused_pks])
                try:
                    sender.succeeded(request, result, self.clock())
                except (OperationalError, InterfaceError):
                    raise
                except Exception:
                    logger.exception(
                        "Updating the local mirror after a %s request failed.", sender.kind
                    )

    def _split(
        self,
        sender: Sender,
        request: Request,
        err: BaseException,
        queue: deque[Request],
        outcomes: Outcomes,
        budget: int,
    ) -> int:
        if budget >= 2:
            half = len(request.rows) // 2
            halves = sender.plan(request.rows[:half]) + sender.plan(request.rows[half:])
            queue.extendleft(reversed(halves))
            return budget - 2
        # Could not isolate the bad rows in this run; try again later.
        if isinstance(err, KlaviyoError):
            outcomes.mark_retry(request.rows, err)
        else:
            outcomes.mark_retry(request.rows, KlaviyoValidationError(str(_unexpected(err).detail)))
        return budget

    def _settle(
        self, sender: Sender, request: Request, result: Any, outcomes: Outcomes
    ) -> list[ClaimedRow]:
        """The rows of an accepted request that Klaviyo really took; the others (an
        import job's per-profile errors) are dead, or retried when the error is."""
        failures = sender.failures(request, result)
        if not failures:
            return request.rows
        failed: set[Any] = set()
        for rows, info in zip(request.index, failures, strict=False):
            if info is None:
                continue
            failed.update(r.pk for r in rows)
            if info.status is not None and (info.status == 429 or info.status >= 500):
                outcomes.mark_retry(rows, KlaviyoValidationError(info.detail))
            else:
                outcomes.mark_dead(rows, info)
        return [r for r in request.rows if r.pk not in failed]

    # -- marking -------------------------------------------------------------------------

    def _persist(self, outcomes: Outcomes, claimed: int | None = None) -> None:
        """Write every outcome of a batch (see ``record``); ``claimed``: the batch size,
        when every claimed row has been decided."""
        record_outcomes(self, outcomes, claimed)
        self.lease = None

    # -- dry run -------------------------------------------------------------------------

    def plan_due(self) -> FlushReport:
        """Count what a flush would send now, claiming nothing (see ``plan``)."""
        self.report = plan_due(self)
        return self.report


def _not_attempted(err: KlaviyoError) -> bool:
    """Nothing reached Klaviyo: the local rate limit said wait, or no connection."""
    if isinstance(err, KlaviyoTransportError):
        return err.nothing_sent
    return getattr(err, "code", None) == "client_rate_limited"


def _unexpected(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(
        None,
        "invalid_payload",
        f"The request could not be built: {type(exc).__name__}: {exc}"[:2000],
    )


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
) -> FlushReport:
    """Send due outbox rows to Klaviyo until none are due (or forever with ``loop``).

    ``stop`` (a callable or ``threading.Event``) is checked between requests: rows not yet
    sent go back uncounted. Raises ``FlushAborted`` when the API key is rejected (401), or
    when the database goes away (with ``loop``: only after ``max_outage`` seconds of it);
    everything else is recorded on the rows. ``using``: the database
    alias to drain (default ``default``).
    """
    flusher = Flusher(
        client=client,
        batch_size=batch_size,
        kinds=kinds,
        clock=clock,
        sleep=sleep,
        jitter=jitter,
        using=using,
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
