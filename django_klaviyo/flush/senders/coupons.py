"""coupon / coupon_code: Klaviyo's Coupons API, with the local mirror kept in step.

coupon: one ``POST /api/coupons`` per row (Klaviyo has no bulk endpoint for coupons). A
coupon Klaviyo already has (409) is taken as it is: Klaviyo's coupon id is its external
id, so the codes that follow find it either way.

coupon_code: one row per code. A batch's rows are packed per coupon into coupon-code
bulk-create jobs of at most 1,000 codes, each polled to completion. A code row waits,
uncounted, while its coupon still has an unsent ``coupon`` row (the coupon kind goes
first in a batch, so usually both go in one batch): sent before its coupon exists,
Klaviyo would refuse every code. The job's per-code errors (a code Klaviyo already has,
an unknown coupon) dead-letter only their rows, with Klaviyo's code and detail.

Rows were cleaned by the rulebook when written: bodies are only built here
(``coupon_body``, ``coupon_codes_body``) and sent with the client's ``send_...`` methods.

The mirror (``KlaviyoCoupon``, ``KlaviyoCouponCode``) is per account (unlike profile ids,
a coupon records its account), so it follows every account's rows: a sent code takes
Klaviyo's id and status; a dead one becomes ``failed`` with the row's reason, in the
transaction that records the row dead (``dead_lettered``). A requeued row that is then
sent updates the mirror again.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django_klaviyo.client.bodies.coupons import coupon_body, coupon_codes_body
from django_klaviyo.client.catalog import job_status
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoAPIError, KlaviyoError
from django_klaviyo.flush.claim import IN_CHUNK, ClaimedRow, chunks
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.outcomes import (
    ErrorInfo,
    Located,
    Outcomes,
    RowOutcome,
    locate_rows,
    per_row,
)
from django_klaviyo.flush.senders.base import Request, Sender
from django_klaviyo.flush.senders.catalog import hold_for_parents
from django_klaviyo.models import KlaviyoCoupon, KlaviyoCouponCode, OutboxEvent
from django_klaviyo.rules import limits

Kind = OutboxEvent.Kind
CodeStatus = KlaviyoCouponCode.Status

# Where a coupon-code job's error (or a refused job request) names one code.
_POINTER = re.compile(r"/coupon-codes/data/(\d+)")
_FIELD = re.compile(r"^coupon-codes\[(\d+)\]")
_ALREADY_EXISTS = re.compile(r"already exists", re.IGNORECASE)


class CouponJobCancelled(KlaviyoError):
    """Klaviyo cancelled the job: nothing of it is known to be done, so it is retried."""

    retryable = True


def _latest(rows: list[ClaimedRow], key: Any, outcomes: Outcomes) -> list[ClaimedRow]:
    """One row per key, the latest written; earlier ones are superseded (marked sent)."""
    latest: dict[Any, ClaimedRow] = {}
    for row in rows:  # claimed in the order they were written
        earlier = latest.get(key(row.payload))
        if earlier is not None:
            outcomes.mark_sent([earlier])
        latest[key(row.payload)] = row
    return list(latest.values())


class CouponSender(Sender):
    kind = Kind.COUPON
    mirrored = True  # the coupon mirror records its account

    def prepare(self, row: ClaimedRow) -> dict[str, Any]:
        return {
            "external_id": row.payload["external_id"],
            "description": row.payload.get("description") or "",
        }

    def resolve(
        self, ctx: SendContext, rows: list[ClaimedRow], outcomes: Outcomes
    ) -> list[ClaimedRow]:
        return _latest(rows, lambda p: p["external_id"], outcomes)

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        return [Request(self.kind, "one", [r], r.flush_item, [[r]]) for r in rows]

    def send(self, ctx: SendContext, request: Request) -> str:
        """Create the coupon; returns its Klaviyo id."""
        item = request.body
        try:
            data = ctx.client.send_coupon(coupon_body(item["external_id"], item["description"]))
        except KlaviyoAPIError as err:
            if err.status != 409:
                raise
            return str(item["external_id"])  # Klaviyo has it already: its id is the external id
        return str(data.get("id") or item["external_id"])

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        KlaviyoCoupon.objects.using(self.using).filter(
            account=self.account, external_id=request.body["external_id"]
        ).update(klaviyo_id=result, synced_at=now)


class CouponCodeSender(Sender):
    kind = Kind.COUPON_CODE
    mirrored = True  # the coupon mirror records its account

    def __init__(self) -> None:
        # Rows of this batch whose earlier attempt may have reached Klaviyo.
        self._maybe_landed: set[Any] = set()

    def prepare(self, row: ClaimedRow) -> tuple[str, str, str | None]:
        payload = row.payload
        return payload["coupon"], payload["code"], payload.get("expires_at")

    def resolve(
        self, ctx: SendContext, rows: list[ClaimedRow], outcomes: Outcomes
    ) -> list[ClaimedRow]:
        rows = _latest(rows, lambda p: (p["coupon"], p["code"]), outcomes)
        self._maybe_landed = _maybe_landed(self.using, rows)
        return hold_for_parents(ctx, rows, outcomes, self.kind)

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        by_coupon: dict[str, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            by_coupon[row.flush_item[0]].append(row)
        requests = []
        for coupon, mine in by_coupon.items():
            for chunk in chunks(mine, limits.COUPON_CODES_PER_JOB):
                body = [(r.flush_item[1], r.flush_item[2]) for r in chunk]
                requests.append(Request(self.kind, coupon, list(chunk), body, [[r] for r in chunk]))
        return requests

    def send(self, ctx: SendContext, request: Request) -> dict[str, Any]:
        """Run the job to completion; returns it (its errors name the refused codes)."""
        job = ctx.client.send_coupon_code_job(
            coupon_codes_body(request.key, request.body),
            timeout=float(klaviyo_settings.CATALOG_JOB_TIMEOUT),
            poll_interval=float(klaviyo_settings.CATALOG_JOB_POLL_SECONDS),
            # A job may run for minutes: the rows' lease is kept between polls.
            between_polls=ctx.keep_lease,
        )
        if job_status(job) == "cancelled":
            raise CouponJobCancelled(f"Klaviyo cancelled coupon code job {job.get('id')}.")
        return dict(job)

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        """A refused job request whose errors point at codes: only their rows die."""
        return locate_rows(err, request.index, pointer=_POINTER, field=_FIELD)

    def settle(self, request: Request, result: Any) -> list[RowOutcome]:
        """The codes the job refused end only their rows, with Klaviyo's code and detail."""
        refused = self._outcome(request, result)[0]
        return per_row(request.rows, {pk: info for pk, (_row, info) in refused.items()})

    def _outcome(self, request: Request, result: Any) -> tuple[Located, set[str]]:
        """(the refused rows, the codes an earlier attempt put in Klaviyo). An error
        naming no code fails every code the job leaves unknown (it counted more failures
        than it named). "Already exists" for a row whose earlier attempt may have reached
        Klaviyo (a dropped answer, a job that outlasted the wait) is that attempt's work,
        not a refusal."""
        attributes = (result or {}).get("attributes") or {}
        errors = [e for e in attributes.get("errors") or [] if isinstance(e, Mapping)]
        found: Located = {}
        adopted: set[str] = set()
        unnamed: list[Mapping[str, Any]] = []
        rows = request.rows
        for error in errors:
            match = _POINTER.search(str((error.get("source") or {}).get("pointer") or ""))
            if not match or int(match.group(1)) >= len(rows):
                unnamed.append(error)
                continue
            row = rows[int(match.group(1))]
            if row.pk in self._maybe_landed and _already_exists(error):
                adopted.add(row.flush_item[1])
            else:
                found[row.pk] = (row, _info(error))
        failed_count = int(attributes.get("failed_count") or 0)
        if unnamed or failed_count > len(found) + len(adopted):
            error = (
                unnamed[0]
                if unnamed
                else {
                    "code": "job_failed",
                    "detail": f"Klaviyo's job {result.get('id')} failed {failed_count} code(s) "
                    "without saying which.",
                }
            )
            created = {_code(c) for c in result.get("included") or []}
            for row in rows:
                code = row.flush_item[1]
                if row.pk not in found and code not in created and code not in adopted:
                    found[row.pk] = (row, _info(error))
        return found, adopted

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        """Sent codes take Klaviyo's id and status (refused ones: see ``dead_lettered``);
        one an earlier attempt imported is taken as imported (``UNASSIGNED``)."""
        refused, adopted = self._outcome(request, result)
        refused_codes = {row.flush_item[1] for row, _ in refused.values()}
        created = {_code(c): c for c in result.get("included") or [] if isinstance(c, Mapping)}
        codes = [code for code, _ in request.body if code not in refused_codes]
        changed = []
        for code in _mirror(self.using, self.account, request.key, codes):
            resource = created.get(code.code) or {}
            status = (resource.get("attributes") or {}).get("status")
            if code.code in adopted:
                status = CodeStatus.UNASSIGNED
            code.klaviyo_id = str(resource.get("id") or code.klaviyo_id)
            code.status = status or CodeStatus.PROCESSING
            code.error_code = code.error_detail = ""
            code.synced_at = now
            changed.append(code)
        KlaviyoCouponCode.objects.using(self.using).bulk_update(
            changed,
            ["status", "klaviyo_id", "error_code", "error_detail", "synced_at"],
            batch_size=IN_CHUNK,
        )

    def dead_lettered(self, dead: list[tuple[ClaimedRow, ErrorInfo]], now: datetime) -> None:
        """Dead code rows show on their mirror codes as ``failed`` with the same reason."""
        by_coupon: dict[str, dict[str, ErrorInfo]] = defaultdict(dict)
        for row, info in dead:
            payload = row.payload if isinstance(row.payload, Mapping) else {}
            coupon, code = payload.get("coupon"), payload.get("code")
            if isinstance(coupon, str) and isinstance(code, str):
                by_coupon[coupon][code] = info
        for coupon, infos in by_coupon.items():
            changed = []
            for code in _mirror(self.using, self.account, coupon, list(infos)):
                info = infos[code.code]
                code.status = CodeStatus.FAILED
                code.error_code = info.code[:64]
                code.error_detail = info.detail
                code.synced_at = now
                changed.append(code)
            KlaviyoCouponCode.objects.using(self.using).bulk_update(
                changed, ["status", "error_code", "error_detail", "synced_at"], batch_size=IN_CHUNK
            )


def _mirror(using: str, account: str, coupon: str, codes: list[str]) -> list[KlaviyoCouponCode]:
    """The mirror codes of ``account``'s ``coupon`` among ``codes`` (none for rows
    written by hand)."""
    found: list[KlaviyoCouponCode] = []
    for chunk in chunks(codes, IN_CHUNK):
        found += KlaviyoCouponCode.objects.using(using).filter(
            coupon__account=account, coupon__external_id=coupon, code__in=list(chunk)
        )
    return found


def _maybe_landed(using: str, rows: list[ClaimedRow]) -> set[Any]:
    """Rows tried before whose last failure may still have reached Klaviyo: anything
    but a 429 (throttled requests are not processed)."""
    retried = [row.pk for row in rows if row.attempts > 1]
    found: set[Any] = set()
    for chunk in chunks(retried, IN_CHUNK):
        found.update(
            OutboxEvent.objects.using(using)
            .filter(pk__in=list(chunk))
            .exclude(last_error_status=429)
            .values_list("pk", flat=True)
        )
    return found


def _already_exists(error: Mapping[str, Any]) -> bool:
    text = f"{error.get('title') or ''} {error.get('detail') or ''}"
    return error.get("code") in ("duplicate", "conflict") or bool(_ALREADY_EXISTS.search(text))


def _code(resource: Any) -> Any:
    return ((resource or {}).get("attributes") or {}).get("unique_code")


def _info(error: Mapping[str, Any]) -> ErrorInfo:
    detail = str(error.get("detail") or error.get("title") or "failed")
    pointer = (error.get("source") or {}).get("pointer")
    where = f" (at {pointer})" if pointer else ""
    return ErrorInfo(None, str(error.get("code") or "job_error")[:64], f"{detail}{where}")
