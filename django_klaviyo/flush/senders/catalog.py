"""catalog_item / catalog_variant / catalog_category: Klaviyo's catalog bulk jobs.

Rows of one batch are coalesced per external id (the latest row wins; earlier ones
are superseded and marked sent), grouped by job (create, update, delete; at most 100
resources a job) and each job is polled to completion. The job's per-resource errors
dead-letter only their rows, with Klaviyo's code and detail. Two answers are not
failures but a sign the row guessed the wrong job: "already exists" on create is
retried once as an update, "does not exist" on update once as a create; and deleting
what Klaviyo does not have is done already.

back_in_stock: one ``POST /api/back-in-stock-subscriptions`` per row (there is no bulk
endpoint); Klaviyo's refusal (unknown variant, bad identifier) dead-letters the row.

Rows were cleaned by the rulebook when written (``prepare_rows`` cleans rows of an older
rules version once): bodies are only assembled here, with the client's builders, and
sent with its ``send_...`` methods, which check nothing again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from django_klaviyo.client.bodies.back_in_stock import back_in_stock_body
from django_klaviyo.client.bodies.catalog import catalog_resource, related
from django_klaviyo.client.catalog import job_status
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoAuthError, KlaviyoError
from django_klaviyo.flush.claim import IN_CHUNK, ClaimedRow, chunks
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.outcomes import (
    ErrorInfo,
    Located,
    Outcomes,
    RowOutcome,
    error_info,
    is_retryable,
    locate_rows,
    per_row,
)
from django_klaviyo.flush.senders.base import Request, Sender
from django_klaviyo.models import OutboxEvent
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
_OPEN = (OutboxEvent.Status.PENDING, OutboxEvent.Status.RETRYING, OutboxEvent.Status.SENDING)


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
    for row, _until in outcomes.release:
        if row.kind == parent_kind:
            waiting[row.payload["external_id"]] = None
    # Parents waiting in the outbox (not in this batch).
    open_rows = (
        OutboxEvent.objects.using(ctx.using)
        .filter(kind=parent_kind, status__in=_OPEN, account=ctx.account)
        .exclude(locked_by=ctx.owner)
    )
    for chunk in chunks(sorted(wanted), IN_CHUNK):
        found = open_rows.filter(payload__external_id__in=chunk).values_list(
            "payload__external_id", "next_attempt_at"
        )
        for external_id, next_attempt_at in found:
            known = waiting.get(external_id)
            waiting[external_id] = max(filter(None, (known, next_attempt_at)), default=None)
    if not waiting:
        return rows
    ready = []
    soon = ctx.retry_at(1)
    for row in rows:
        blocking = [waiting[p] for p in parents_of(row.payload) if p in waiting]
        if blocking and row.payload.get("op") != "delete":
            outcomes.mark_release([row], max([soon, *filter(None, blocking)]))
        else:
            ready.append(row)
    return ready


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
        for row in rows:  # claimed in the order they were written
            earlier = latest.get(row.payload["external_id"])
            if earlier is not None:
                outcomes.mark_sent([earlier])  # superseded by a later change
                # An object created since the last flush is still new to Klaviyo.
                if earlier.flush_item["op"] == "create" and row.flush_item["op"] == "update":
                    row.flush_item["op"] = "create"
            latest[row.payload["external_id"]] = row
        return hold_for_parents(ctx, list(latest.values()), outcomes, self.kind)

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        requests = []
        for op in ("create", "update", "delete"):
            mine = [r for r in rows if r.flush_item["op"] == op]
            for chunk in chunks(mine, limits.CATALOG_RESOURCES_PER_JOB):
                body = [_resource(self.noun, op, r.flush_item) for r in chunk]
                requests.append(Request(self.kind, op, list(chunk), body, [[r] for r in chunk]))
        return requests

    def _run(self, ctx: SendContext, op: str, body: list[dict[str, Any]]) -> dict[str, Any]:
        job = ctx.client.send_catalog_job(
            self.noun,
            op,
            body,
            timeout=float(klaviyo_settings.CATALOG_JOB_TIMEOUT),
            poll_interval=float(klaviyo_settings.CATALOG_JOB_POLL_SECONDS),
            # A job may run for minutes: the rows' lease is kept between polls.
            between_polls=ctx.keep_lease,
        )
        if job_status(job) == "cancelled":
            raise CatalogJobCancelled(f"Klaviyo cancelled catalog {self.noun} job {job.get('id')}.")
        return job

    def send(self, ctx: SendContext, request: Request) -> dict[Any, ErrorInfo]:
        """Run the job (and at most one fallback job); returns the failed rows."""
        failed: dict[Any, ErrorInfo] = {}
        op, rows, body = request.key, request.rows, request.body
        for attempt in range(2):
            if attempt:
                ctx.keep_lease()  # between the two jobs, as between any requests
            try:
                job = self._run(ctx, op, body)
            except KlaviyoError as err:
                if attempt == 0 or is_retryable(err) or isinstance(err, KlaviyoAuthError):
                    raise  # the flush loop's policy: abort, retry, locate, split or dead-letter
                # The fallback job was refused whole: its rows fail with Klaviyo's reason.
                failed.update({row.pk: error_info(err) for row in rows})
                break
            retry: list[ClaimedRow] = []
            for row, error in self._errors(job, rows):
                kind = _error_kind(error)
                fallback = _FALLBACK.get((op, kind))
                if op == "delete" and kind == "not_found":
                    continue  # nothing to delete: done
                if fallback and fallback != request.key:
                    retry.append(row)
                    continue
                detail = f"{error.get('detail') or error.get('title') or 'failed'}"
                pointer = (error.get("source") or {}).get("pointer")
                where = f" (at {pointer})" if pointer else ""
                failed[row.pk] = ErrorInfo(
                    None, str(error.get("code") or "job_error")[:64], f"{detail}{where}"
                )
            if not retry:
                break
            op, rows = ("update" if op == "create" else "create"), retry
            body = [_resource(self.noun, op, r.flush_item) for r in rows]
        return failed

    def _errors(
        self, job: Mapping[str, Any], rows: list[ClaimedRow]
    ) -> list[tuple[ClaimedRow, Mapping[str, Any]]]:
        """Each job error with the row it names; an error naming none fails every row
        whose outcome the job leaves unknown (it counted more failures than it named)."""
        attributes = job.get("attributes") or {}
        errors = [e for e in attributes.get("errors") or [] if isinstance(e, Mapping)]
        found: list[tuple[ClaimedRow, Mapping[str, Any]]] = []
        unnamed: list[Mapping[str, Any]] = []
        for error in errors:
            match = _POINTER.search(str((error.get("source") or {}).get("pointer") or ""))
            if match and int(match.group(1)) < len(rows):
                found.append((rows[int(match.group(1))], error))
            else:
                unnamed.append(error)
        failed_count = int(attributes.get("failed_count") or 0)
        if unnamed or failed_count > len(found):
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
            found += [(row, error) for row in rows if row.pk not in named]
        return found

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        """A refused job request whose errors point at resources: only their rows die."""
        return locate_rows(err, request.index, pointer=_POINTER, field=_FIELD)

    def settle(self, request: Request, result: dict[Any, ErrorInfo]) -> list[RowOutcome]:
        """The job's per-resource refusals (``send``) end only their rows."""
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
