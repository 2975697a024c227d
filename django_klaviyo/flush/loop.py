"""The run loop: claim a batch, hand each kind to its sender, deliver, write outcomes."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import (
    DEFAULT_DB_ALIAS,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connections,
    transaction,
)
from django.db.models import F
from django.utils import timezone

from django_klaviyo.client import get_client
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoAuthError, KlaviyoError, KlaviyoValidationError
from django_klaviyo.flush.claim import (
    CLAIMED_COLUMNS,
    IN_CHUNK,
    ClaimedRow,
    chunks,
    claim_batch,
    claimed_rows,
    due_rows,
    make_owner,
    reclaim_expired_leases,
)
from django_klaviyo.flush.outcomes import ErrorInfo, Outcomes, error_info, is_retryable, splittable
from django_klaviyo.flush.report import FlushAborted, FlushReport, StopSignal
from django_klaviyo.flush.senders import ListItem, Request, Sender, make_senders, prepare_rows
from django_klaviyo.models import OutboxEvent

logger = logging.getLogger("django_klaviyo.flush")

Kind = OutboxEvent.Kind
Status = OutboxEvent.Status

# Extra requests one rejected request may cost while isolating its bad rows.
SPLIT_BUDGET = 64

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
    Kind.EVENT,
    Kind.PROFILE_DELETION,
)


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
        self.report = FlushReport()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = get_client()
        return self._client

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
    ) -> FlushReport:
        if dry_run:
            return self.plan_due()
        _ = self.client  # fail on configuration before any row is claimed
        started = time.monotonic()

        def should_stop() -> bool:
            if stop is None:
                return False
            return stop.is_set() if hasattr(stop, "is_set") else bool(stop())

        while True:
            if should_stop():
                self.report.ended = "stopped"
                break
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                self.report.ended = "max_seconds"
                break
            if loop and not connections[self.using].in_atomic_block:
                close_old_connections()  # a long-running worker drops stale connections
            claimed = self.flush_batch()
            claimed += self.process_webhook_items()
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
                + "). Check KLAVIYO['PRIVATE_API_KEY'] and its scopes; flushing stopped and "
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
        self._persist(outcomes, claimed=len(rows))
        return len(rows)

    def _send(self, rows: list[ClaimedRow], outcomes: Outcomes) -> None:
        by_kind: dict[str, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            by_kind[row.kind].append(row)
        for kind in KIND_ORDER:
            if kind not in by_kind:
                continue
            sender = self.senders[kind]
            ready, invalid = prepare_rows(sender, by_kind.pop(kind))
            for row, info in invalid:
                outcomes.mark_dead([row], info)
            ready = sender.resolve(self, ready, outcomes)
            self._deliver(sender, sender.plan(ready), outcomes)
        for kind, leftover in by_kind.items():  # a kind this version does not know
            outcomes.mark_dead(leftover, ErrorInfo(None, "unknown_kind", f"Unknown kind {kind!r}."))

    def _deliver(self, sender: Sender, requests: list[Request], outcomes: Outcomes) -> None:
        queue = deque(requests)
        budget = SPLIT_BUDGET
        while queue:
            request = queue.popleft()
            if request.parts is not None and request.rows[0].pk in outcomes.decided:
                continue  # an earlier part of this row failed: the row is retried whole
            self.report.requests += 1
            try:
                result = sender.send(self.client, request)
            except KlaviyoAuthError:
                raise
            except KlaviyoError as err:
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
                    if budget >= 2:
                        budget -= 2
                        half = len(request.rows) // 2
                        halves = sender.plan(request.rows[:half]) + sender.plan(request.rows[half:])
                        queue.extendleft(reversed(halves))
                    else:
                        # Could not isolate the bad rows in this run; try again later.
                        outcomes.mark_retry(request.rows, err)
                    continue
                outcomes.mark_dead(request.rows, error_info(err))
            else:
                if request.parts is not None:
                    request.parts.remaining -= 1
                    if request.parts.remaining:
                        continue  # sent once every part is accepted
                for row, info in (sender.rejected(request, result) or {}).values():
                    outcomes.mark_dead([row], info)
                outcomes.mark_sent(request.rows)
                sender.succeeded(request, result, self.clock())

    # -- marking -------------------------------------------------------------------------

    def _persist(self, outcomes: Outcomes, claimed: int | None = None) -> None:
        """Write every outcome of a batch, one UPDATE per outcome group.

        ``claimed``: the batch size, when every claimed row has been decided."""
        now = self.clock()
        max_attempts = int(klaviyo_settings.MAX_ATTEMPTS)
        mine = OutboxEvent.objects.using(self.using).filter(
            status=Status.SENDING, locked_by=self.owner
        )
        lease_cleared = {"locked_at": None, "locked_by": "", "updated_at": now}

        def update(rows: Sequence[ClaimedRow], **values: Any) -> int:
            done = 0
            for chunk in chunks([r.pk for r in rows], IN_CHUNK):
                done += mine.filter(pk__in=chunk).update(**values)
            return done

        dead: dict[ErrorInfo, list[ClaimedRow]] = defaultdict(list)
        for row, info in outcomes.dead:
            dead[info].append(row)
        retrying: dict[tuple[int, float, ErrorInfo], list[ClaimedRow]] = defaultdict(list)
        for retry in outcomes.retry:
            for row in retry.rows:
                if row.attempts >= max_attempts:
                    info = ErrorInfo(
                        retry.info.status,
                        retry.info.code,
                        f"Gave up after {row.attempts} attempts: {retry.info.detail}",
                    )
                    dead[info].append(row)
                else:
                    retrying[(row.attempts, retry.retry_after, retry.info)].append(row)
        released: dict[tuple[str, datetime | None], list[ClaimedRow]] = defaultdict(list)
        for row, until in outcomes.release:
            released[(row.previous_status, until)].append(row)

        # When every claimed row has an outcome, the sent ones are whatever is still
        # leased once the other groups are written: one UPDATE without a long IN list.
        sent_are_the_rest = claimed is not None and len(outcomes.decided) == claimed
        try:
            with transaction.atomic(using=self.using):
                if outcomes.sent and not sent_are_the_rest:
                    update(outcomes.sent, status=Status.SENT, sent_at=now, **lease_cleared)
                for info, rows in dead.items():
                    update(
                        rows,
                        status=Status.DEAD,
                        last_error_status=info.status,
                        last_error_code=info.code,
                        last_error_detail=info.detail,
                        **lease_cleared,
                    )
                for (attempts, retry_after, info), rows in retrying.items():
                    delay = timedelta(seconds=self.retry_delay(attempts, retry_after))
                    update(
                        rows,
                        status=Status.RETRYING,
                        next_attempt_at=now + delay,
                        last_error_status=info.status,
                        last_error_code=info.code,
                        last_error_detail=info.detail,
                        **lease_cleared,
                    )
                for (previous, until), rows in released.items():
                    values: dict[str, Any] = {"status": previous, "attempts": F("attempts") - 1}
                    if until is not None:
                        values["next_attempt_at"] = until
                    update(rows, **values, **lease_cleared)
                if outcomes.sent and sent_are_the_rest:
                    mine.update(status=Status.SENT, sent_at=now, **lease_cleared)
        except (OperationalError, InterfaceError) as exc:
            raise FlushAborted(
                f"The database went away while recording outcomes ({type(exc).__name__}); the "
                "claimed rows stay 'sending' and are retried once their lease expires.",
                reason="database",
            ) from exc

        for kind, n in Counter(row.kind for row in outcomes.sent).items():
            self.report.counts(kind).sent += n
        for kind, n in Counter(row.kind for rows in dead.values() for row in rows).items():
            self.report.counts(kind).dead += n
        for kind, n in Counter(row.kind for rows in retrying.values() for row in rows).items():
            self.report.counts(kind).retrying += n
        for kind, n in Counter(row.kind for row, _until in outcomes.release).items():
            self.report.counts(kind).released += n
        if dead:
            logger.warning("Dead-lettered %d outbox row(s).", sum(len(r) for r in dead.values()))

    # -- dry run -------------------------------------------------------------------------

    def plan_due(self) -> FlushReport:
        """Count what a flush would send now, claiming nothing."""
        report = FlushReport(dry_run=True)
        due = due_rows(self.clock(), self.kinds, self.using).order_by("next_attempt_at", "pk")
        batch: list[Sequence[Any]] = []
        for record in due.values_list(*CLAIMED_COLUMNS).iterator(chunk_size=self.batch_size):
            batch.append(record)
            if len(batch) >= self.batch_size:
                self._plan_batch(claimed_rows(batch, owner="", now=None), report)
                batch = []
        if batch:
            self._plan_batch(claimed_rows(batch, owner="", now=None), report)
        self.report = report
        return report

    def _plan_batch(self, rows: list[ClaimedRow], report: FlushReport) -> None:
        by_kind: dict[str, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            by_kind[row.kind].append(row)
        for kind, kind_rows in by_kind.items():
            sender = self.senders.get(kind)
            if sender is None:
                report.planned_invalid += len(kind_rows)
                continue
            ready, invalid = prepare_rows(sender, kind_rows)
            report.planned_invalid += len(invalid)
            report.planned[kind] = report.planned.get(kind, 0) + len(ready)
            report.planned_requests += sender.lookups_needed(ready)
            for row in ready:
                if isinstance(row.flush_item, ListItem) and not row.flush_item.profile_id:
                    row.flush_item.profile_id = f"?{row.flush_item.profile_key}"
            report.planned_requests += len(sender.plan(ready))


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
) -> FlushReport:
    """Send due outbox rows to Klaviyo until none are due (or forever with ``loop``).

    ``stop`` (a callable or ``threading.Event``) is checked between batches, so the batch
    in hand always finishes. Raises ``FlushAborted`` when the API key is rejected or the
    database goes away; everything else is recorded on the rows. ``using``: the database
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
    )
