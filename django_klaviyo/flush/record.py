"""Recording a batch's outcomes: one UPDATE per outcome group, in one transaction, only
for the rows the flusher still holds (the lease is confirmed, with the rows locked, first),
and the report's counts for those rows alone.

In order, in that transaction: confirm the lease (``_confirm_lease``), save back the rows
cleaned again under the current rules (``_save_recleaned``), group the outcomes by the
values they write (``_group``), write each group (``_update``), tell the senders of their
dead rows (``_tell_mirrors``); then count them (``_count``)."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.flush.claim import IN_CHUNK, ClaimedRow, chunks
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.outcomes import AcceptedJob, ErrorInfo, Outcomes
from django_klaviyo.flush.report import FlushAborted
from django_klaviyo.flush.senders import Sender
from django_klaviyo.models import KlaviyoJob, OutboxEvent
from django_klaviyo.rules.identifiers import profile_key

logger = logging.getLogger("django_klaviyo.flush")

Kind = OutboxEvent.Kind
Status = OutboxEvent.Status


def record_outcomes(
    ctx: SendContext,
    senders: Mapping[str, Sender],
    outcomes: Outcomes,
    claimed: int | None = None,
) -> None:
    """Write every outcome of a batch, one UPDATE per outcome group; ``senders`` hear of
    their rows recorded dead.

    ``claimed``: the batch size, when every claimed row has been decided."""
    now = ctx.clock()
    try:
        with transaction.atomic(using=ctx.using):
            _write(ctx, senders, outcomes, now, claimed)
    except (OperationalError, InterfaceError) as exc:
        raise FlushAborted(
            f"The database went away while recording outcomes ({type(exc).__name__}); the "
            "claimed rows stay 'sending' and are retried once their lease expires.",
            reason="database",
        ) from exc


def _write(
    ctx: SendContext,
    senders: Mapping[str, Sender],
    outcomes: Outcomes,
    now: datetime,
    claimed: int | None,
) -> None:
    """The outcome UPDATEs (in the caller's transaction), then the report's counts:
    both only for rows this flusher still holds."""
    if _confirm_lease(ctx, outcomes):
        claimed = None  # "the sent ones are the rest" no longer holds
    mine = OutboxEvent.objects.using(ctx.using).filter(status=Status.SENDING, locked_by=ctx.owner)
    _save_recleaned(mine, outcomes)
    groups = _group(outcomes, int(klaviyo_settings.MAX_ATTEMPTS))
    # When every claimed row has an outcome, the sent ones are whatever is still
    # leased once the other groups are written: one UPDATE without a long IN list.
    sent_are_the_rest = claimed is not None and len(outcomes.decided) == claimed
    _update(
        ctx,
        mine,
        outcomes.sent,
        groups,
        now,
        sent_are_the_rest=sent_are_the_rest,
        awaiting=outcomes.awaiting,
    )
    _tell_mirrors(ctx, senders, groups.dead, now)
    _count(ctx, outcomes, groups)


def _confirm_lease(ctx: SendContext, outcomes: Outcomes) -> int:
    """Keep only the outcomes of rows this flusher still holds, locked until the
    transaction ends; returns how many were lost to another flusher (and reports them)."""
    decided = len(outcomes.decided)
    held = ctx.lease.confirm()
    if ctx.lease.lost:  # else every row of the batch is still held
        outcomes.only(held)
    lost = decided - (
        len(outcomes.sent)
        + len(outcomes.dead)
        + sum(len(r.rows) for r in outcomes.retry)
        + len(outcomes.release)
        + len(outcomes.hold)
        + len(outcomes.awaiting)
    )
    ctx.report.lost_leases += lost
    return lost


def _save_recleaned(mine: Any, outcomes: Outcomes) -> None:
    """A row cleaned under the current rules this time, and going back to the queue, is
    saved so that its next attempt does not clean it again (sent and dead rows never
    have one: they are not written again)."""
    if not outcomes.recleaned:
        return
    finished = {row.pk for row in outcomes.sent} | {row.pk for row, _ in outcomes.dead}
    for row in outcomes.recleaned:
        if row.pk in finished:
            continue
        profile = row.payload.get("profile")
        mine.filter(pk=row.pk).update(
            payload=row.payload,
            metric=row.payload.get("metric", "") if row.kind == Kind.EVENT else "",
            profile_key=(profile_key(profile) if isinstance(profile, Mapping) else "")[:320],
            rules_version=row.rules_version,
        )


@dataclass
class _Groups:
    """A batch's unsent outcomes, grouped by the values their rows are written with: one
    UPDATE per group."""

    # By error (retries past MAX_ATTEMPTS included).
    dead: dict[ErrorInfo, list[ClaimedRow]] = field(default_factory=lambda: defaultdict(list))
    # By (attempts, Retry-After, error): the attempts give the back-off.
    retrying: dict[tuple[int, float, ErrorInfo], list[ClaimedRow]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # By (previous status, next attempt or None to keep it).
    released: dict[tuple[str, datetime | None], list[ClaimedRow]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # By (previous status, next attempt, why).
    held: dict[tuple[str, datetime, ErrorInfo], list[ClaimedRow]] = field(
        default_factory=lambda: defaultdict(list)
    )


def _group(outcomes: Outcomes, max_attempts: int) -> _Groups:
    groups = _Groups()
    for row, info in outcomes.dead:
        groups.dead[info].append(row)
    for retry in outcomes.retry:
        for row in retry.rows:
            if row.attempts >= max_attempts:
                info = ErrorInfo(
                    retry.info.status,
                    retry.info.code,
                    f"Gave up after {row.attempts} attempts: {retry.info.detail}",
                )
                groups.dead[info].append(row)
            else:
                groups.retrying[(row.attempts, retry.retry_after, retry.info)].append(row)
    for row, until in outcomes.release:
        groups.released[(row.previous_status, until)].append(row)
    for row, until, info in outcomes.hold:
        groups.held[(row.previous_status, until, info)].append(row)
    return groups


def _update(
    ctx: SendContext,
    mine: Any,
    sent: list[ClaimedRow],
    groups: _Groups,
    now: datetime,
    *,
    sent_are_the_rest: bool,
    awaiting: Sequence[tuple[ClaimedRow, AcceptedJob]] = (),
) -> None:
    """One UPDATE per group of rows (per chunk of a long one), each only of rows this
    batch still holds; the sent ones last, all at once, when they are the rest."""
    lease_cleared = {"locked_at": None, "locked_by": "", "updated_at": now}

    def update(rows: Sequence[ClaimedRow], **values: Any) -> int:
        done = 0
        for chunk in chunks([r.pk for r in rows], IN_CHUNK):
            done += mine.filter(pk__in=chunk).update(**values)
        return done

    if sent and not sent_are_the_rest:
        update(sent, status=Status.SENT, sent_at=now, **lease_cleared)
    for info, rows in groups.dead.items():
        update(
            rows,
            status=Status.DEAD,
            last_error_status=info.status,
            last_error_code=info.code,
            last_error_detail=info.detail,
            **lease_cleared,
        )
    for (attempts, retry_after, info), rows in groups.retrying.items():
        delay = timedelta(seconds=ctx.retry_delay(attempts, retry_after))
        update(
            rows,
            status=Status.RETRYING,
            next_attempt_at=now + delay,
            last_error_status=info.status,
            last_error_code=info.code,
            last_error_detail=info.detail,
            **lease_cleared,
        )
    for (previous, until), rows in groups.released.items():
        values: dict[str, Any] = {"status": previous, "attempts": F("attempts") - 1}
        if until is not None:
            values["next_attempt_at"] = until
        update(rows, **values, **lease_cleared)
    for (previous, until, info), rows in groups.held.items():
        update(
            rows,
            status=previous,
            attempts=F("attempts") - 1,
            next_attempt_at=until,
            last_error_status=info.status,
            last_error_code=info.code,
            last_error_detail=info.detail,
            **lease_cleared,
        )
    _await_jobs(ctx, mine, awaiting, now)
    if sent and sent_are_the_rest:
        mine.update(status=Status.SENT, sent_at=now, **lease_cleared)


def waiting_note(job_id: str, since: datetime) -> str:
    """The row's note while it waits for a Klaviyo job (shown in the admin)."""
    return f"Waiting for Klaviyo job {job_id} since {since:%Y-%m-%d %H:%M:%S %Z}"[:255]


def _await_jobs(
    ctx: SendContext,
    mine: Any,
    awaiting: Sequence[tuple[ClaimedRow, AcceptedJob]],
    now: datetime,
) -> None:
    """Record each Klaviyo job still running (``KlaviyoJob``) and hand its rows to it:
    ``awaiting_job``, ``locked_by`` naming the job, out of every lease and claim."""
    by_job: dict[AcceptedJob, list[ClaimedRow]] = defaultdict(list)
    for row, job in awaiting:
        by_job[job].append(row)
    for accepted, rows in by_job.items():
        job = KlaviyoJob.objects.using(ctx.using).create(
            account=ctx.account,
            kind=accepted.kind,
            op=accepted.op,
            job_id=accepted.job_id[:255],
            fallback=accepted.fallback,
            rows=[str(pk) for pk in accepted.rows],
            started_at=now,
            next_poll_at=now,  # Klaviyo often finishes small jobs at once: look next pass
            expires_at=now + timedelta(seconds=accepted.lifetime),
        )
        for chunk in chunks([r.pk for r in rows], IN_CHUNK):
            mine.filter(pk__in=chunk).update(
                status=Status.AWAITING_JOB,
                locked_by=job.marker,
                locked_at=now,
                outcome_note=waiting_note(accepted.job_id, now),
                updated_at=now,
            )


def _tell_mirrors(
    ctx: SendContext,
    senders: Mapping[str, Sender],
    dead: dict[ErrorInfo, list[ClaimedRow]],
    now: datetime,
) -> None:
    """Each kind's sender hears of its rows recorded dead, in the same transaction, so a
    local mirror (coupon codes) shows the failure with the row's reason."""
    by_kind: dict[str, list[tuple[ClaimedRow, ErrorInfo]]] = defaultdict(list)
    for info, rows in dead.items():
        for row in rows:
            by_kind[row.kind].append((row, info))
    for kind, items in by_kind.items():
        sender = senders.get(kind)
        if sender is None:
            continue
        try:
            with transaction.atomic(using=ctx.using):  # a failed mirror update undone alone
                sender.dead_lettered(items, now)
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            # The rows are still recorded dead with their reason (the outbox admin shows it).
            logger.exception("Updating the local mirror of dead %s rows failed.", kind)


def _count(ctx: SendContext, outcomes: Outcomes, groups: _Groups) -> None:
    """The report's counts per kind and outcome, of the rows just written."""
    report = ctx.report
    for kind, n in Counter(row.kind for row in outcomes.sent).items():
        report.counts(kind).sent += n
    for kind, n in Counter(row.kind for rows in groups.dead.values() for row in rows).items():
        report.counts(kind).dead += n
    for kind, n in Counter(row.kind for rows in groups.retrying.values() for row in rows).items():
        report.counts(kind).retrying += n
    for kind, n in Counter(row.kind for row, _until in outcomes.release).items():
        report.counts(kind).released += n
    for kind, n in Counter(row.kind for row, _until, _info in outcomes.hold).items():
        report.counts(kind).held += n
    for kind, n in Counter(row.kind for row, _job in outcomes.awaiting).items():
        report.counts(kind).awaiting += n
    if groups.dead:
        logger.warning("Dead-lettered %d outbox row(s).", sum(len(r) for r in groups.dead.values()))
