"""coupon / coupon_code: Klaviyo's Coupons API, with the local mirror kept in step.

coupon: one ``POST /api/coupons`` per row (Klaviyo has no bulk endpoint for coupons). A
coupon Klaviyo already has (409) is taken as it is: Klaviyo's coupon id is its external
id, so the codes that follow find it either way.

coupon_code: one row per code. A batch's rows are packed per coupon into coupon-code
bulk-create jobs of at most 1,000 codes. A job is started, not waited for: its rows wait
for it (``awaiting_job``) and a later pass of any worker settles them (``flush.jobs``:
``poll``, ``finished``, ``job_settled``), so no other kind waits behind it. A code row
waits, uncounted, while its coupon still has an unsent ``coupon`` row (the coupon kind
goes first in a batch, so usually both go in one batch): sent before its coupon exists,
Klaviyo would refuse every code. The job's per-code errors (a code Klaviyo already has,
an unknown coupon) dead-letter only their rows, with Klaviyo's code and detail; a job
cancelled, or still running after ``CATALOG_JOB_TIMEOUT``, retries its rows.

Rows were cleaned by the rulebook when written: bodies are only built here
(``coupon_body``, ``coupon_codes_body``) and sent with the client's ``send_coupon`` and
``_start_coupon_code_job``.

The mirror (``KlaviyoCoupon``, ``KlaviyoCouponCode``) is per account (unlike profile ids,
a coupon records its account), so it follows every account's rows. When a job settles,
in the transaction that writes its rows' outcomes (``job_settled``), a sent code takes
Klaviyo's id and status and a dead one becomes ``failed`` with the row's reason; a row
dead before any job took it (a refused job request, an invalid row) does the same in the
transaction that records it dead (``dead_lettered``). A requeued row that is then sent
updates the mirror again.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from django_klaviyo.client.bodies.coupons import coupon_body, coupon_codes_body
from django_klaviyo.client.catalog import job_status
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoAPIError, KlaviyoError
from django_klaviyo.flush.claim import IN_CHUNK, ClaimedRow, chunks
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.outcomes import (
    AWAIT,
    AcceptedJob,
    ErrorInfo,
    Located,
    Outcomes,
    RowOutcome,
    locate_rows,
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
from django_klaviyo.flush.senders.catalog import hold_for_parents
from django_klaviyo.models import KlaviyoCoupon, KlaviyoCouponCode, OutboxEvent
from django_klaviyo.rules import limits

Kind = OutboxEvent.Kind
CodeStatus = KlaviyoCouponCode.Status

# Where a coupon-code job's error (or a refused job request) names one code.
_POINTER = re.compile(r"/coupon-codes/data/(\d+)")
_FIELD = re.compile(r"^coupon-codes\[(\d+)\]")
_ALREADY_EXISTS = re.compile(r"already exists", re.IGNORECASE)


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

    def prepare(self, row: ClaimedRow) -> tuple[str, str, str | None]:
        payload = row.payload
        return payload["coupon"], payload["code"], payload.get("expires_at")

    def resolve(
        self, ctx: SendContext, rows: list[ClaimedRow], outcomes: Outcomes
    ) -> list[ClaimedRow]:
        rows = _latest(rows, lambda p: (p["coupon"], p["code"]), outcomes)
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

    def start(self, client: Any, op: str, body: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """Start a job (one POST): Klaviyo's job id and the job as it answered."""
        job = client._start_coupon_code_job(body)
        return accepted_job_id(job, "the coupon code bulk-create job"), job

    def send(self, ctx: SendContext, request: Request) -> JobStarted:
        """Start the job and hand its rows over to it: a later pass settles them
        (``flush.jobs``, ``finished`` and ``job_settled``), even one Klaviyo finished at
        once (the codes' ids and status need the job's GET anyway)."""
        job_id, _job = self.start(
            ctx.client, "create", coupon_codes_body(request.key, request.body)
        )
        rows = tuple(r.pk for r in request.rows)
        lifetime = float(klaviyo_settings.CATALOG_JOB_TIMEOUT)
        return JobStarted({}, AcceptedJob(self.kind, "create", job_id, rows, lifetime))

    def poll(self, client: Any, op: str, job_id: str) -> dict[str, Any]:
        """The job as Klaviyo sees it now, with the codes it created (one GET)."""
        job = client.get_coupon_code_job(job_id)
        if not isinstance(job, Mapping) or not job_status(job):
            raise MalformedAnswer(
                f"Klaviyo's coupon code job {job_id} answer has no status; "
                f"body shape: {shape_of(job)}"[:1000]
            )
        return job

    def finished(
        self, client: Any, job: Mapping[str, Any], rows: list[ClaimedRow | None], accepted: Any
    ) -> JobOutcome:
        """The codes a job Klaviyo says is complete refused end only their rows, with
        Klaviyo's code and detail (``flush.jobs``)."""
        refused, _adopted = _outcome(self.using, rows, job)
        return JobOutcome(failed={pk: info for pk, (_row, info) in refused.items()})

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        """A refused job request whose errors point at codes: only their rows die."""
        return locate_rows(err, request.index, pointer=_POINTER, field=_FIELD)

    def settle(self, request: Request, result: Any) -> list[RowOutcome]:
        """The job's rows wait for it (``awaiting_job``)."""
        return [RowOutcome(row, AWAIT, job=result.job) for row in request.rows]

    def job_settled(
        self,
        rows: list[ClaimedRow | None],
        job: Mapping[str, Any] | None,
        sent: Collection[Any],
        dead: Mapping[Any, ErrorInfo],
        now: datetime,
    ) -> None:
        """The mirror follows a settled job, in the transaction that settles its rows
        (``flush.jobs``, before the rows' outcomes are written): sent codes take
        Klaviyo's id and status (one an earlier attempt imported: ``UNASSIGNED``), dead
        ones turn ``failed`` with the row's reason."""
        adopted: set[str] = set()
        created: dict[Any, Mapping[str, Any]] = {}
        if job is not None:
            adopted = _outcome(self.using, rows, job)[1]
            created = {_code(c): c for c in job.get("included") or [] if isinstance(c, Mapping)}
        by_coupon: dict[str, dict[str, ErrorInfo | None]] = defaultdict(dict)
        for row in rows:
            if row is None or (row.pk not in dead and row.pk not in sent):
                continue
            payload = row.payload if isinstance(row.payload, Mapping) else {}
            coupon, code = payload.get("coupon"), payload.get("code")
            if isinstance(coupon, str) and isinstance(code, str):
                by_coupon[coupon][code] = dead.get(row.pk)
        for coupon, infos in by_coupon.items():
            changed = []
            for code in _mirror(self.using, self.account, coupon, list(infos)):
                info = infos[code.code]
                if info is not None:
                    code.status = CodeStatus.FAILED
                    code.error_code = info.code[:64]
                    code.error_detail = info.detail
                else:
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
        """Dead code rows show on their mirror codes as ``failed`` with the same reason
        (rows that died before a job took them: a refused job request, an invalid row)."""
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


def _outcome(
    using: str, rows: list[ClaimedRow | None], job: Mapping[str, Any]
) -> tuple[Located, set[str]]:
    """(the refused rows, the codes an earlier attempt put in Klaviyo) of a complete job
    whose body held ``rows`` (in order; None: a row no longer waiting for it). An error
    naming no code fails every code the job leaves unknown (it counted more failures than
    it named). "Already exists" for a row whose earlier attempt may have reached Klaviyo
    (a dropped answer, a job that outlived its lifetime) is that attempt's work, not a
    refusal."""
    maybe_landed = _maybe_landed(using, [r for r in rows if r is not None])
    attributes = job.get("attributes") or {}
    errors = [e for e in attributes.get("errors") or [] if isinstance(e, Mapping)]
    found: Located = {}
    adopted: set[str] = set()
    unnamed: list[Mapping[str, Any]] = []
    named = 0
    for error in errors:
        match = _POINTER.search(str((error.get("source") or {}).get("pointer") or ""))
        if not match or int(match.group(1)) >= len(rows):
            unnamed.append(error)
            continue
        named += 1
        row = rows[int(match.group(1))]
        if row is None:
            continue
        if row.pk in maybe_landed and _already_exists(error):
            adopted.add(_row_code(row))
        else:
            found[row.pk] = (row, _info(error))
    failed_count = int(attributes.get("failed_count") or 0)
    if unnamed or failed_count > named:
        error = (
            unnamed[0]
            if unnamed
            else {
                "code": "job_failed",
                "detail": f"Klaviyo's job {job.get('id')} failed {failed_count} code(s) "
                "without saying which.",
            }
        )
        created = {_code(c) for c in job.get("included") or []}
        for row in rows:
            if row is None:
                continue
            code = _row_code(row)
            if row.pk not in found and code not in created and code not in adopted:
                found[row.pk] = (row, _info(error))
    return found, adopted


def _row_code(row: ClaimedRow) -> Any:
    return row.payload.get("code") if isinstance(row.payload, Mapping) else None


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
