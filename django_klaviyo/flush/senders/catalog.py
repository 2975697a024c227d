"""catalog_item / catalog_variant / catalog_category: Klaviyo's catalog bulk jobs.

Rows of one batch are coalesced per external id (the latest row wins; earlier ones
are superseded and marked sent), grouped by job (create, update, delete; at most 100
resources a job). Create or update comes from what Klaviyo is known to have
(``KlaviyoCatalogObject``, written when a job ends): a known object is updated, an
unknown one sent as its row says. A job Klaviyo has not finished is not waited for: its
rows wait for it (``awaiting_job``) and ``flush.jobs`` settles them on a later pass. The
job's per-resource errors dead-letter only their rows, with Klaviyo's code, detail and
the operation tried. Two answers remain, as the last resort, a sign the row guessed the
wrong job: "already exists" on create is retried once as an update, "does not exist" on
update once as a create; and deleting what Klaviyo does not have is done already.

back_in_stock: one ``POST /api/back-in-stock-subscriptions`` per row (there is no bulk
endpoint); Klaviyo's refusal (unknown variant, bad identifier) dead-letters the row.

Rows were cleaned by the rulebook when written (``prepare_rows`` cleans rows of an older
rules version once): bodies are only assembled here, with the client's builders, and
sent with its ``send_...`` methods, which check nothing again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from django_klaviyo.client.bodies.back_in_stock import back_in_stock_body
from django_klaviyo.client.bodies.catalog import catalog_resource, related
from django_klaviyo.client.catalog import JOB_DONE, job_status
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoAuthError, KlaviyoError
from django_klaviyo.flush.claim import IN_CHUNK, ClaimedRow, chunks
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.outcomes import (
    AWAIT,
    AcceptedJob,
    ErrorInfo,
    Located,
    Outcomes,
    RowOutcome,
    error_info,
    is_retryable,
    locate_rows,
    per_row,
)
from django_klaviyo.flush.senders.base import (
    JobOutcome,
    JobStarted,
    MalformedAnswer,
    Request,
    Sender,
    accepted_job_id,
    shape_of,
)
from django_klaviyo.models import KlaviyoCatalogObject, OutboxEvent
from django_klaviyo.rules import limits

Kind = OutboxEvent.Kind

NOUNS = {
    Kind.CATALOG_ITEM: "item",
    Kind.CATALOG_VARIANT: "variant",
    Kind.CATALOG_CATEGORY: "category",
}
_POINTER = re.compile(r"/(?:items|variants|categories)/data/(\d+)")
_FIELD = re.compile(r"^(?:items|variants|categories)\[(\d+)\]")
_FALLBACK = {("create", "duplicate"): "update", ("update", "not_found"): "create"}
_ALREADY_EXISTS = re.compile(r"already exists", re.IGNORECASE)
_DOES_NOT_EXIST = re.compile(r"does not exist|not found", re.IGNORECASE)


class CatalogJobCancelled(KlaviyoError):
    """Klaviyo cancelled the job: nothing of it is known to be done, so it is retried."""

    retryable = True


def _error_kind(error: Mapping[str, Any]) -> str:
    code = str(error.get("code") or "")
    text = f"{error.get('title') or ''} {error.get('detail') or ''}"
    if code in ("duplicate", "conflict") or _ALREADY_EXISTS.search(text):
        return "duplicate"
    if code == "not_found" or _DOES_NOT_EXIST.search(text):
        return "not_found"
    return code


def _resource(noun: str, op: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    relationships: dict[str, Any] = {}
    if op != "delete" and noun == "item" and payload.get("categories"):
        relationships["categories"] = related("category", payload["categories"])
    if op == "create" and noun == "variant":
        item = related("item", [payload["item"]])["data"][0]
        relationships["item"] = {"data": item}
    return catalog_resource(
        noun, op, payload["external_id"], payload.get("attributes"), relationships or None
    )


# What a row names that Klaviyo must have first: (the parent's kind, the parents' ids).
PARENTS: dict[str, tuple[str, Callable[[Mapping[str, Any]], list[str]]]] = {
    Kind.CATALOG_ITEM: (Kind.CATALOG_CATEGORY, lambda p: list(p.get("categories") or [])),
    Kind.CATALOG_VARIANT: (Kind.CATALOG_ITEM, lambda p: [p["item"]] if p.get("item") else []),
    Kind.BACK_IN_STOCK: (Kind.CATALOG_VARIANT, lambda p: [p["variant"]]),
    Kind.COUPON_CODE: (Kind.COUPON, lambda p: [p["coupon"]]),
}
# The note of a row waiting for its parent's Klaviyo job (cleared when the job ends).
PARENT_JOB_NOTE = "Waiting for its parent's Klaviyo job to finish"
_WAITS_FOR_JOB = "_waits_for_job"
_OPEN = (
    OutboxEvent.Status.PENDING,
    OutboxEvent.Status.RETRYING,
    OutboxEvent.Status.SENDING,
    # Sent as part of a Klaviyo job still running: not in Klaviyo yet.
    OutboxEvent.Status.AWAITING_JOB,
)


def hold_for_parents(
    ctx: SendContext, rows: list[ClaimedRow], outcomes: Outcomes, kind: str
) -> list[ClaimedRow]:
    """Rows whose parent (a variant's item, an item's category, a subscription's variant,
    a coupon code's coupon) still has an unsent row wait for it, uncounted: sent now,
    Klaviyo would refuse them for a parent it does not have yet. Returns the rows that
    may go now."""
    if kind not in PARENTS:
        return rows  # categories name nothing
    parent_kind, parents_of = PARENTS[kind]
    wanted = {
        parent
        for row in rows
        if row.payload.get("op") != "delete"
        for parent in parents_of(row.payload)
    }
    if not wanted:
        return rows
    waiting: dict[str, datetime | None] = {}
    # Parents claimed in this batch that did not go out (throttled, failing).
    for retry in outcomes.retry:
        waiting.update(
            {r.payload["external_id"]: None for r in retry.rows if r.kind == parent_kind}
        )
    in_job: set[str] = set()
    for row, _until in outcomes.release:
        if row.kind == parent_kind:
            if isinstance(row.flush_item, dict) and row.flush_item.get(_WAITS_FOR_JOB):
                in_job.add(row.payload["external_id"])  # it waits for its own parent's job
            else:
                waiting[row.payload["external_id"]] = None
    # Parents whose Klaviyo job is still running: their children wait until it ends
    # (``flush.jobs`` wakes them, ``PARENT_JOB_NOTE``), at most the job's lifetime.
    for row, _job in outcomes.awaiting:
        if row.kind == parent_kind:
            in_job.add(row.payload["external_id"])
    # Parents waiting in the outbox (not in this batch).
    open_rows = (
        OutboxEvent.objects.using(ctx.using)
        .filter(kind=parent_kind, status__in=_OPEN, account=ctx.account)
        .exclude(locked_by=ctx.owner)
    )
    for chunk in chunks(sorted(wanted), IN_CHUNK):
        found = open_rows.filter(payload__external_id__in=chunk).values_list(
            "payload__external_id", "next_attempt_at", "status", "outcome_note"
        )
        for external_id, next_attempt_at, status, note in found:
            if status == OutboxEvent.Status.AWAITING_JOB or note == PARENT_JOB_NOTE:
                in_job.add(external_id)
                continue
            known = waiting.get(external_id)
            waiting[external_id] = max(filter(None, (known, next_attempt_at)), default=None)
    if not waiting and not in_job:
        return rows
    ready, wait_for_job = [], []
    soon = ctx.retry_at(1)
    job_end = ctx.clock() + timedelta(seconds=float(klaviyo_settings.CATALOG_JOB_TIMEOUT))
    for row in rows:
        parents = parents_of(row.payload)
        blocking = [waiting[p] for p in parents if p in waiting]
        if any(p in in_job for p in parents):
            blocking.append(job_end)
        if blocking and row.payload.get("op") != "delete":
            if any(p in in_job for p in parents):
                wait_for_job.append(row)
                if isinstance(row.flush_item, dict):
                    row.flush_item[_WAITS_FOR_JOB] = True
            outcomes.mark_release([row], max([soon, *filter(None, blocking)]))
        else:
            ready.append(row)
    if wait_for_job:
        ctx.note_rows(wait_for_job, PARENT_JOB_NOTE)
    return ready


def known_objects(using: str, account: str, kind: str, external_ids: list[str]) -> set[str]:
    """Which of ``external_ids`` Klaviyo is known to have (``KlaviyoCatalogObject``)."""
    known: set[str] = set()
    objects = KlaviyoCatalogObject.objects.using(using).filter(account=account, kind=kind)
    for chunk in chunks(sorted(set(external_ids)), IN_CHUNK):
        known.update(objects.filter(external_id__in=chunk).values_list("external_id", flat=True))
    return known


def record_objects(
    using: str, account: str, kind: str, op: str, external_ids: list[str], job_id: str
) -> None:
    """What a job that ended did to Klaviyo's catalog: created or updated ``external_ids``
    (now known), or deleted them (no longer)."""
    if not external_ids:
        return
    objects = KlaviyoCatalogObject.objects.using(using)
    if op == "delete":
        for chunk in chunks(sorted(set(external_ids)), IN_CHUNK):
            objects.filter(account=account, kind=kind, external_id__in=chunk).delete()
        return
    now = timezone.now()
    objects.bulk_create(
        [
            KlaviyoCatalogObject(
                account=account, kind=kind, external_id=i, job_id=job_id[:255], updated_at=now
            )
            for i in sorted(set(external_ids))
        ],
        ignore_conflicts=True,
    )


class CatalogSender(Sender):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.noun = NOUNS[kind]

    def prepare(self, row: ClaimedRow) -> dict[str, Any]:
        payload = row.payload
        if payload["op"] == "delete":
            return {"op": "delete", "external_id": payload["external_id"]}
        return {**payload, "op": "create" if payload["create"] else "update"}

    def resolve(
        self, ctx: SendContext, rows: list[ClaimedRow], outcomes: Outcomes
    ) -> list[ClaimedRow]:
        latest: dict[str, ClaimedRow] = {}
        superseded: dict[str, list[ClaimedRow]] = {}
        for row in rows:  # claimed in the order they were written
            external_id = row.payload["external_id"]
            earlier = latest.get(external_id)
            if earlier is not None:
                superseded.setdefault(external_id, []).append(earlier)
                # An object created since the last flush is still new to Klaviyo.
                if earlier.flush_item["op"] == "create" and row.flush_item["op"] == "update":
                    row.flush_item["op"] = "create"
            latest[external_id] = row
        # Create or update from what Klaviyo is known to have (the jobs that ended), not
        # from its error wording: a known object is updated, an unknown one sent as the
        # row says (an upsert of an object the app did not create locally is an update).
        upserts = [r for r in latest.values() if r.flush_item["op"] != "delete"]
        known = known_objects(
            ctx.using, ctx.account, self.kind, [r.payload["external_id"] for r in upserts]
        )
        for row in upserts:
            if row.payload["external_id"] in known:
                row.flush_item["op"] = "update"
        ready = hold_for_parents(ctx, list(latest.values()), outcomes, self.kind)
        for row in ready:
            # Superseded by a later change that goes now; one that waits keeps them
            # waiting too (the create among them is not in Klaviyo yet).
            outcomes.mark_sent(superseded.pop(row.payload["external_id"], []))
        until = {row.pk: when for row, when in outcomes.release}
        for external_id, waiting in superseded.items():
            held = latest[external_id]
            outcomes.mark_release(waiting, until.get(held.pk))
            if held.flush_item.get(_WAITS_FOR_JOB):
                ctx.note_rows(waiting, PARENT_JOB_NOTE)
        return ready

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        requests = []
        for op in ("create", "update", "delete"):
            mine = [r for r in rows if r.flush_item["op"] == op]
            for chunk in chunks(mine, limits.CATALOG_RESOURCES_PER_JOB):
                body = [_resource(self.noun, op, r.flush_item) for r in chunk]
                requests.append(Request(self.kind, op, list(chunk), body, [[r] for r in chunk]))
        return requests

    def body(self, op: str, rows: list[ClaimedRow]) -> list[dict[str, Any]]:
        return [_resource(self.noun, op, r.flush_item) for r in rows]

    def start(self, client: Any, op: str, body: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        """Start a job (one POST): Klaviyo's job id and the job as it answered."""
        job = client._start_catalog_job(self.noun, op, body)
        return accepted_job_id(job, f"the catalog {self.noun} {op} job"), job

    def poll(self, client: Any, op: str, job_id: str) -> dict[str, Any]:
        """The job as Klaviyo sees it now (one GET)."""
        job = client.get_catalog_job(self.noun, op, job_id)
        if not isinstance(job, Mapping) or not job_status(job):
            raise MalformedAnswer(
                f"Klaviyo's catalog {self.noun} job {job_id} answer has no status; "
                f"body shape: {shape_of(job)}"[:1000]
            )
        return job

    def accepted(
        self, job_id: str, op: str, rows: list[ClaimedRow], *, fallback: bool = False
    ) -> AcceptedJob:
        return AcceptedJob(
            self.kind,
            op,
            job_id,
            tuple(r.pk for r in rows),
            float(klaviyo_settings.CATALOG_JOB_TIMEOUT),
            fallback,
        )

    def send(self, ctx: SendContext, request: Request) -> dict[Any, ErrorInfo] | JobStarted:
        """Start the job; one Klaviyo finished at once is settled here (with at most one
        fallback job), one still running is followed by later passes (``flush.jobs``)."""
        failed: dict[Any, ErrorInfo] = {}
        op, rows, body = request.key, request.rows, request.body
        fallback = False
        while True:
            try:
                job_id, job = self.start(ctx.client, op, body)
            except KlaviyoError as err:
                if not fallback or is_retryable(err) or isinstance(err, KlaviyoAuthError):
                    raise  # the flush loop's policy: abort, retry, locate, split or dead-letter
                # The fallback job was refused whole: its rows fail with Klaviyo's reason.
                failed.update({row.pk: error_info(err) for row in rows})
                break
            status = job_status(job)
            if status not in JOB_DONE:
                return JobStarted(failed, self.accepted(job_id, op, rows, fallback=fallback))
            if status == "cancelled":
                raise CatalogJobCancelled(f"Klaviyo cancelled catalog {self.noun} job {job_id}.")
            outcome = self.outcome(job, rows, op, fallback=fallback)
            failed.update(outcome.failed)
            moving = {r.pk for r in outcome.fallback}
            done = [r for r in rows if r.pk not in outcome.failed and r.pk not in moving]
            record_objects(
                ctx.using,
                ctx.account,
                self.kind,
                op,
                [r.payload["external_id"] for r in done],
                job_id,
            )
            if not outcome.fallback:
                break
            ctx.request_made()
            ctx.keep_lease()  # between the two jobs, as between any requests
            op, rows, fallback = outcome.fallback_op, outcome.fallback, True
            body = self.body(op, rows)
        return failed

    def finished(
        self, client: Any, job: Mapping[str, Any], rows: list[ClaimedRow | None], accepted: Any
    ) -> JobOutcome:
        """What a job Klaviyo says is complete did for its ``rows`` (``flush.jobs``)."""
        return self.outcome(job, rows, accepted.op, fallback=accepted.fallback)

    def outcome(
        self,
        job: Mapping[str, Any],
        rows: list[ClaimedRow | None],
        op: str,
        *,
        fallback: bool = False,
    ) -> JobOutcome:
        """What a finished job did for ``rows`` (in the body's order; None: a row no longer
        waiting for it). "Already exists" on a create, or "does not exist" on an update,
        sends the row again as the other operation once (``fallback``)."""
        outcome = JobOutcome()
        other = "update" if op == "create" else "create"
        for row, error in self._errors(job, rows):
            kind = _error_kind(error)
            if op == "delete" and kind == "not_found":
                continue  # nothing to delete: done
            if not fallback and _FALLBACK.get((op, kind)) == other:
                outcome.fallback.append(row)
                outcome.fallback_op = other
                continue
            detail = f"{error.get('detail') or error.get('title') or 'failed'}"
            pointer = (error.get("source") or {}).get("pointer")
            where = f" (at {pointer})" if pointer else ""
            # Which operation it was, so a dead row says whether it was created or updated.
            tried = f" [catalog {self.noun} {op}" + (
                f", after the {other} was refused]" if fallback else "]"
            )
            outcome.failed[row.pk] = ErrorInfo(
                None, str(error.get("code") or "job_error")[:64], f"{detail}{where}{tried}"
            )
        return outcome

    def _errors(
        self, job: Mapping[str, Any], rows: list[ClaimedRow | None]
    ) -> list[tuple[ClaimedRow, Mapping[str, Any]]]:
        """Each job error with the row it names; an error naming none fails every row
        whose outcome the job leaves unknown (it counted more failures than it named)."""
        attributes = job.get("attributes") or {}
        errors = [e for e in attributes.get("errors") or [] if isinstance(e, Mapping)]
        found: list[tuple[ClaimedRow, Mapping[str, Any]]] = []
        unnamed: list[Mapping[str, Any]] = []
        named_count = 0
        for error in errors:
            match = _POINTER.search(str((error.get("source") or {}).get("pointer") or ""))
            if match and int(match.group(1)) < len(rows):
                named_count += 1
                row = rows[int(match.group(1))]
                if row is not None:
                    found.append((row, error))
            else:
                unnamed.append(error)
        failed_count = int(attributes.get("failed_count") or 0)
        if unnamed or failed_count > named_count:
            named = {row.pk for row, _ in found}
            error = (
                unnamed[0]
                if unnamed
                else {
                    "code": "job_failed",
                    "detail": f"Klaviyo's job {job.get('id')} failed {failed_count} resource(s) "
                    "without saying which.",
                }
            )
            found += [(row, error) for row in rows if row is not None and row.pk not in named]
        return found

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        """A refused job request whose errors point at resources: only their rows die."""
        return locate_rows(err, request.index, pointer=_POINTER, field=_FIELD)

    def settle(
        self, request: Request, result: dict[Any, ErrorInfo] | JobStarted
    ) -> list[RowOutcome]:
        """The job's per-resource refusals (``send``) end only their rows; rows of a job
        still running wait for it."""
        if isinstance(result, JobStarted):
            waiting = set(result.job.rows)
            return [
                RowOutcome(row, AWAIT, job=result.job) for row in request.rows if row.pk in waiting
            ] + per_row([r for r in request.rows if r.pk not in waiting], result.failed)
        return per_row(request.rows, result)


class BackInStockSender(Sender):
    kind = Kind.BACK_IN_STOCK

    def prepare(self, row: ClaimedRow) -> dict[str, Any]:
        payload = row.payload
        return {
            "profile": dict(payload["profile"]),
            "variant": payload["variant"],
            "channels": list(payload["channels"]),
        }

    def resolve(
        self, ctx: SendContext, rows: list[ClaimedRow], outcomes: Outcomes
    ) -> list[ClaimedRow]:
        return hold_for_parents(ctx, rows, outcomes, self.kind)

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        """One request per row, its body built as the row was cleaned when written."""
        return [
            Request(
                self.kind,
                "one",
                [r],
                back_in_stock_body(
                    r.flush_item["profile"], r.flush_item["variant"], r.flush_item["channels"]
                ),
                [[r]],
            )
            for r in rows
        ]

    def send(self, ctx: SendContext, request: Request) -> None:
        ctx.client.send_back_in_stock_subscription(request.body)
