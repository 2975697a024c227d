"""Following Klaviyo's bulk jobs without waiting for them in line.

A catalog job, coupon-code job or profile bulk import Klaviyo accepted but has not
finished is recorded (``KlaviyoJob``, written with the batch's outcomes by ``record``) and
its rows wait in ``awaiting_job``; the flusher goes on with the other rows. Each pass (of
any worker) first looks at the jobs due for a look (``settle_due_jobs``): one GET per job,
then either a later look (growing pauses up to ``CATALOG_JOB_POLL_SECONDS``) or the job's
rows settled in one transaction:

- complete: each row sent, or dead with Klaviyo's reason for it; a create Klaviyo says
  already exists (or an update of what it does not have) goes once as the other
  operation, in a new job the rows then wait for; a sender with a local mirror
  (``job_settled``: coupon codes take Klaviyo's status, or ``failed`` with the reason)
  follows in the same transaction;
- cancelled, or still running after its lifetime (``CATALOG_JOB_TIMEOUT``; imports
  ``JOB_WAIT_SECONDS``), or unreadable: the rows are retried (back-off,
  ``MAX_ATTEMPTS``) with the reason.

Rows held for a parent in a job (``PARENT_JOB_NOTE``) are due again when it ends, and
what a catalog job wrote is recorded (``record_objects``) for create vs update.

One worker looks at a job at a time: it leases the job with a conditional UPDATE (free,
or its lease older than ``LEASE_SECONDS``: a killed worker's job is taken over), and
settles it only if it still holds it, in the same transaction as the rows' outcomes: two
workers never settle one job twice.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import InterfaceError, OperationalError, connections, transaction
from django.db.models import Min, Q

from django_klaviyo.client.catalog import job_status
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoAuthError, KlaviyoError
from django_klaviyo.flush.claim import CLAIMED_COLUMNS, IN_CHUNK, ClaimedRow, chunks, claimed_rows
from django_klaviyo.flush.outcomes import ErrorInfo, error_info, is_retryable
from django_klaviyo.flush.record import waiting_note
from django_klaviyo.flush.report import FlushReport
from django_klaviyo.flush.senders import Sender
from django_klaviyo.flush.senders.catalog import NOUNS, PARENT_JOB_NOTE, PARENTS, record_objects
from django_klaviyo.models import KlaviyoJob, OutboxEvent

logger = logging.getLogger("django_klaviyo.flush")

Status = OutboxEvent.Status
JobStatus = KlaviyoJob.Status

CATALOG_KINDS = frozenset(NOUNS)
# Jobs looked at per pass and account: a pass stays short whatever the number of jobs.
JOBS_PER_PASS = 20
# The first pause between looks at a running job, doubling up to CATALOG_JOB_POLL_SECONDS.
FIRST_POLL_SECONDS = 0.25


@dataclass
class _Settlement:
    """What a job's end does to its rows (by pk) and the job that follows it, if any."""

    status: str
    outcome: str
    sent: list[Any] = field(default_factory=list)
    dead: dict[Any, ErrorInfo] = field(default_factory=dict)
    retry: dict[Any, ErrorInfo] = field(default_factory=dict)
    # A fallback job its rows now wait for: (Klaviyo's job id, op, rows in body order).
    follow: tuple[str, str, list[Any]] | None = None
    # Catalog objects the job wrote (their external ids), for ``record_objects``.
    written: list[str] = field(default_factory=list)
    # Klaviyo's answer for a complete job (a mirror's ``job_settled`` reads it).
    answer: Mapping[str, Any] | None = None


def poll_delay(polls: int) -> float:
    cap = float(klaviyo_settings.CATALOG_JOB_POLL_SECONDS)
    return min(cap, FIRST_POLL_SECONDS * 2 ** max(polls, 0))


def open_jobs(using: str, accounts: Sequence[str] | None, kinds: Sequence[str] | None) -> Any:
    jobs = KlaviyoJob.objects.using(using).filter(status=JobStatus.OPEN)
    if accounts is not None:
        jobs = jobs.filter(account__in=list(accounts))
    if kinds:
        jobs = jobs.filter(kind__in=list(kinds))
    return jobs


def next_look_in(
    *, using: str, accounts: Sequence[str] | None, kinds: Sequence[str] | None, now: datetime
) -> float | None:
    """Seconds until an open job is due for a look (0: now); None when none is open."""
    first = open_jobs(using, accounts, kinds).aggregate(first=Min("next_poll_at"))["first"]
    if first is None:
        return None
    return max(0.0, (first - now).total_seconds())


def settle_due_jobs(
    *,
    using: str,
    account: str,
    owner: str,
    client: Any,
    senders: Mapping[str, Sender],
    clock: Callable[[], datetime],
    retry_delay: Callable[[int, float | None], float],
    report: FlushReport,
    kinds: Sequence[str] | None = None,
    limit: int = JOBS_PER_PASS,
) -> int:
    """Look at the jobs of ``account`` due for a look (at most ``limit``); returns how
    many were settled. Raises ``KlaviyoAuthError`` (the job is left for later)."""
    now = clock()
    if not _any_due(using, now):
        return 0
    lease = float(klaviyo_settings.LEASE_SECONDS)
    free = Q(locked_by="") | Q(locked_at__lt=now - timedelta(seconds=lease))
    due = (
        open_jobs(using, [account], kinds)
        .filter(next_poll_at__lte=now)
        .filter(free)
        .order_by("next_poll_at")
        .values_list("pk", flat=True)[:limit]
    )
    settled = 0
    for pk in list(due):
        # Taken only if still open, due and free: two workers never look at once.
        taken = (
            KlaviyoJob.objects.using(using)
            .filter(pk=pk, status=JobStatus.OPEN, next_poll_at__lte=now)
            .filter(free)
            .update(locked_by=owner, locked_at=now)
        )
        if not taken:
            continue
        job = KlaviyoJob.objects.using(using).get(pk=pk)
        sender = senders.get(job.kind)
        settled += _follow(job, sender, client, using, owner, clock, retry_delay, report)
    return settled


def _any_due(using: str, now: datetime) -> bool:
    """Whether any open job (of any account or kind) is due for a look: asked before
    every batch, and nearly always no. One small statement on the due index (through
    the ORM, building the full query cost more than running it: about 1 µs per event
    of a 1,000-row batch)."""
    connection = connections[using]
    table = connection.ops.quote_name(KlaviyoJob._meta.db_table)
    status = connection.ops.quote_name(KlaviyoJob._meta.get_field("status").column)
    due_at = connection.ops.quote_name(KlaviyoJob._meta.get_field("next_poll_at").column)
    # Names come quoted from the model's meta; the status is a literal so the partial
    # index's predicate matches; the time is a parameter.
    sql = (
        f"SELECT 1 FROM {table} WHERE {status} = '{JobStatus.OPEN}' "  # noqa: S608
        f"AND {due_at} <= %s {connection.ops.limit_offset_sql(0, 1)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [connection.ops.adapt_datetimefield_value(now)])
        return cursor.fetchone() is not None


def _follow(
    job: KlaviyoJob,
    sender: Sender | None,
    client: Any,
    using: str,
    owner: str,
    clock: Callable[[], datetime],
    retry_delay: Callable[[int, float | None], float],
    report: FlushReport,
) -> int:
    what = f"Klaviyo {job.kind.replace('_', ' ')} {job.op} job {job.job_id}"
    if not callable(getattr(sender, "poll", None)):
        end = _Settlement(JobStatus.FAILED, f"No sender follows {job.kind} jobs.")
        return _settle(job, end, sender, using, owner, clock, retry_delay, report, every_row=True)
    report.requests += 1
    try:
        answer = sender.poll(client, job.op, job.job_id)  # type: ignore[union-attr]
    except KlaviyoAuthError:
        _release(job, using, owner)
        raise
    except KlaviyoError as err:
        if is_retryable(err):  # throttled, failing, unreachable: look again later
            _later(job, using, owner, clock(), job.klaviyo_status)
            return 0
        end = _Settlement(JobStatus.FAILED, f"{what} could not be read: {error_info(err).detail}")
        end.outcome = end.outcome[:255]
        info = error_info(err)
        end.retry = dict.fromkeys(job_rows(job), ErrorInfo(info.status, info.code, end.outcome))
        return _settle(job, end, sender, using, owner, clock, retry_delay, report)
    status = job_status(answer)
    now = clock()
    if status == "cancelled":
        reason = f"Klaviyo cancelled {what}; the rows are retried."
        end = _Settlement(JobStatus.CANCELLED, reason)
        end.retry = dict.fromkeys(job_rows(job), ErrorInfo(None, "job_cancelled", reason))
        return _settle(job, end, sender, using, owner, clock, retry_delay, report)
    if status != "complete":
        if now >= job.expires_at:
            lifetime = (job.expires_at - job.started_at).total_seconds()
            reason = f"{what} was still {status!r} after {lifetime:.0f}s; the rows are retried."
            end = _Settlement(JobStatus.EXPIRED, reason)
            end.retry = dict.fromkeys(job_rows(job), ErrorInfo(None, "job_expired", reason))
            return _settle(job, end, sender, using, owner, clock, retry_delay, report)
        _later(job, using, owner, now, status)
        return 0
    try:
        return _complete(job, answer, sender, client, using, owner, clock, retry_delay, report)
    except KlaviyoAuthError:
        _release(job, using, owner)
        raise
    except KlaviyoError as err:
        if is_retryable(err):  # its errors could not be read now: look again later
            _later(job, using, owner, clock(), status)
            return 0
        info = error_info(err)
        end = _Settlement(JobStatus.FAILED, f"{what}'s outcome could not be read: {info.detail}")
        end.retry = dict.fromkeys(job_rows(job), ErrorInfo(info.status, info.code, end.outcome))
        return _settle(job, end, sender, using, owner, clock, retry_delay, report)


def job_rows(job: KlaviyoJob) -> list[uuid.UUID]:
    """The job's row pks in the body's order."""
    return [uuid.UUID(str(pk)) for pk in job.rows]


def _waiting_rows(job: KlaviyoJob, using: str) -> list[ClaimedRow | None]:
    """The job's rows still waiting for it, in the body's order (None: no longer)."""
    records = (
        OutboxEvent.objects.using(using)
        .filter(status=Status.AWAITING_JOB, locked_by=job.marker)
        .values_list(*CLAIMED_COLUMNS)
    )
    found = {row.pk: row for row in claimed_rows(list(records), owner="", now=None)}
    return [found.get(pk) for pk in job_rows(job)]


def _complete(
    job: KlaviyoJob,
    answer: Mapping[str, Any],
    sender: Any,
    client: Any,
    using: str,
    owner: str,
    clock: Callable[[], datetime],
    retry_delay: Callable[[int, float | None], float],
    report: FlushReport,
) -> int:
    rows = _waiting_rows(job, using)
    outcome = sender.finished(client, answer, rows, job)
    refused = len(outcome.failed) + len(outcome.retry)
    end = _Settlement(JobStatus.COMPLETE, f"complete; {refused} refused", answer=answer)
    end.dead = dict(outcome.failed)
    end.retry = dict(outcome.retry)
    moving = {row.pk for row in outcome.fallback}
    end.sent = [
        row.pk
        for row in rows
        if row is not None
        and row.pk not in end.dead
        and row.pk not in end.retry
        and row.pk not in moving
    ]
    if job.kind in CATALOG_KINDS:
        sent = set(end.sent)
        end.written = [r.payload["external_id"] for r in rows if r is not None and r.pk in sent]
    if outcome.fallback:
        for row in outcome.fallback:
            row.flush_item = sender.prepare(row)
        op = outcome.fallback_op
        report.requests += 1
        try:
            job_id, _ = sender.start(client, op, sender.body(op, outcome.fallback))
        except KlaviyoAuthError:
            _release(job, using, owner)
            raise
        except KlaviyoError as err:
            info = error_info(err)
            target = end.retry if is_retryable(err) else end.dead
            target.update(dict.fromkeys(moving, info))
        else:
            end.follow = (job_id, op, [row.pk for row in outcome.fallback])
    return _settle(job, end, sender, using, owner, clock, retry_delay, report)


def _later(job: KlaviyoJob, using: str, owner: str, now: datetime, status: str) -> None:
    """Not finished: look again after a pause (and let any worker take it then)."""
    KlaviyoJob.objects.using(using).filter(
        pk=job.pk, status=JobStatus.OPEN, locked_by=owner
    ).update(
        polls=job.polls + 1,
        klaviyo_status=status[:32],
        next_poll_at=now + timedelta(seconds=poll_delay(job.polls)),
        locked_by="",
        locked_at=None,
    )


def _release(job: KlaviyoJob, using: str, owner: str) -> None:
    KlaviyoJob.objects.using(using).filter(
        pk=job.pk, status=JobStatus.OPEN, locked_by=owner
    ).update(locked_by="", locked_at=None)


def _wake_children(job: KlaviyoJob, using: str, now: datetime) -> None:
    """Rows held for a parent in this job (``PARENT_JOB_NOTE``) are due again: sent now
    if the parent made it, held again (or for its retry) if not."""
    children = [kind for kind, (parent, _) in PARENTS.items() if parent == job.kind]
    if not children:
        return
    OutboxEvent.objects.using(using).filter(
        kind__in=children,
        account=job.account,
        status__in=OutboxEvent.DUE_STATUSES,
        outcome_note=PARENT_JOB_NOTE,
    ).update(next_attempt_at=now, outcome_note="", updated_at=now)


def _tell_mirror(
    job: KlaviyoJob,
    end: _Settlement,
    dead: Mapping[ErrorInfo, Sequence[Any]],
    sender: Sender | None,
    using: str,
    now: datetime,
) -> str:
    """A sender with a local mirror (coupon codes: ``job_settled``) hears of the job's
    rows sent and dead, in the settling transaction and before their outcomes are
    written (it may read what their earlier attempts left). Returns the rows' note when
    the mirror could not follow: the rows are settled all the same."""
    hook = getattr(sender, "job_settled", None)
    if not callable(hook) or not getattr(sender, "mirrored", False):
        return ""
    rows = _waiting_rows(job, using)
    waiting = {row.pk for row in rows if row is not None}
    sent = waiting.intersection(end.sent)
    died = {pk: info for info, pks in dead.items() for pk in pks if pk in waiting}
    if not sent and not died:
        return ""
    try:
        with transaction.atomic(using=using):  # a failed mirror update undone alone
            hook(rows, end.answer, sent, died, now)
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:
        logger.exception("Updating the local mirror after %s failed.", job)
        return f"Settled; the local mirror was not updated: {exc!r}"[:255]
    return ""


def _settle(
    job: KlaviyoJob,
    end: _Settlement,
    sender: Sender | None,
    using: str,
    owner: str,
    clock: Callable[[], datetime],
    retry_delay: Callable[[int, float | None], float],
    report: FlushReport,
    *,
    every_row: bool = False,
) -> int:
    """End ``job`` and write its rows' outcomes, in one transaction, only while this
    worker still holds the job; returns 1 when it did, else 0."""
    now = clock()
    max_attempts = int(klaviyo_settings.MAX_ATTEMPTS)
    with transaction.atomic(using=using):
        ended = (
            KlaviyoJob.objects.using(using)
            .filter(pk=job.pk, status=JobStatus.OPEN, locked_by=owner)
            .update(
                status=end.status,
                outcome=end.outcome[:255],
                settled_at=now,
                polls=job.polls + 1,
                locked_by="",
                locked_at=None,
            )
        )
        if not ended:
            return 0  # another worker took it over (this one outlived its lease)
        waiting = OutboxEvent.objects.using(using).filter(
            status=Status.AWAITING_JOB, locked_by=job.marker
        )
        if every_row:
            reason = ErrorInfo(None, "job_unknown", end.outcome[:2000])
            end.retry = {pk: reason for pk in waiting.values_list("pk", flat=True)}
        cleared = {"locked_by": "", "locked_at": None, "outcome_note": "", "updated_at": now}
        counts: Counter[str] = Counter()

        def update(pks: Sequence[Any], **values: Any) -> None:
            for chunk in chunks(list(pks), IN_CHUNK):
                waiting.filter(pk__in=chunk).update(**values)

        by_info: dict[ErrorInfo, list[Any]] = defaultdict(list)
        for pk, info in end.dead.items():
            by_info[info].append(pk)
        attempts: dict[Any, int] = {}
        for chunk in chunks(list(end.retry), IN_CHUNK):
            attempts.update(waiting.filter(pk__in=chunk).values_list("pk", "attempts"))
        retrying: dict[tuple[int, ErrorInfo], list[Any]] = defaultdict(list)
        for pk, info in end.retry.items():
            if pk not in attempts:
                continue  # no longer waiting for this job
            tries = attempts[pk]
            if tries >= max_attempts:
                gave_up = ErrorInfo(
                    info.status, info.code, f"Gave up after {tries} attempts: {info.detail}"
                )
                by_info[gave_up].append(pk)
            else:
                retrying[(tries, info)].append(pk)
        note = _tell_mirror(job, end, by_info, sender, using, now)
        if note:
            cleared["outcome_note"] = note
        update(end.sent, status=Status.SENT, sent_at=now, **cleared)
        counts["sent"] += len(end.sent)
        for info, pks in by_info.items():
            update(
                pks,
                status=Status.DEAD,
                last_error_status=info.status,
                last_error_code=info.code,
                last_error_detail=info.detail,
                **cleared,
            )
            counts["dead"] += len(pks)
        for (tries, info), pks in retrying.items():
            update(
                pks,
                status=Status.RETRYING,
                next_attempt_at=now + timedelta(seconds=retry_delay(tries, None)),
                last_error_status=info.status,
                last_error_code=info.code,
                last_error_detail=info.detail,
                **cleared,
            )
            counts["retrying"] += len(pks)
        if end.written and job.kind in CATALOG_KINDS:
            record_objects(using, job.account, job.kind, job.op, end.written, job.job_id)
        _wake_children(job, using, now)
        if end.follow is not None:
            job_id, op, pks = end.follow
            follow = KlaviyoJob.objects.using(using).create(
                account=job.account,
                kind=job.kind,
                op=op,
                job_id=job_id[:255],
                fallback=True,
                rows=[str(pk) for pk in pks],
                started_at=now,
                next_poll_at=now,
                expires_at=now + (job.expires_at - job.started_at),
            )
            update(
                pks,
                locked_by=follow.marker,
                locked_at=now,
                outcome_note=waiting_note(job_id, now),
                updated_at=now,
            )
    kind_counts = report.counts(job.kind)
    kind_counts.sent += counts["sent"]
    kind_counts.dead += counts["dead"]
    kind_counts.retrying += counts["retrying"]
    if counts["dead"]:
        logger.warning("Dead-lettered %d outbox row(s) of %s.", counts["dead"], job)
    return 1
