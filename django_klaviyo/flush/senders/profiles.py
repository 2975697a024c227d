"""Profile upserts: one call each, or bulk import jobs for large batches; remembers ids."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from django_klaviyo.client.bodies.profiles import build_bulk_import, build_profile
from django_klaviyo.exceptions import KlaviyoError
from django_klaviyo.flush.claim import ClaimedRow
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.outcomes import (
    AWAIT,
    DEAD,
    AcceptedJob,
    Located,
    RowOutcome,
    locate_rows,
    refused,
)
from django_klaviyo.flush.senders.base import (
    ITEM_OVERHEAD_BYTES,
    PROFILES_FIELD,
    PROFILES_PER_IMPORT_JOB,
    PROFILES_POINTER,
    REQUEST_BYTES_BUDGET,
    JobOutcome,
    JobStarted,
    MalformedAnswer,
    Request,
    Sender,
    accepted_job_id,
    encoded_size,
    shape_of,
)
from django_klaviyo.flush.senders.imports import JOB_WAIT_SECONDS, per_profile, upsert_profile
from django_klaviyo.models import KlaviyoProfileLink, OutboxEvent

Kind = OutboxEvent.Kind

logger = logging.getLogger("django_klaviyo.flush")

# More profile upserts than this in one claim go out as one bulk import job instead.
LARGE_PROFILE_BATCH = 100


def link_for(identifiers: Mapping[str, Any], using: str = "default") -> KlaviyoProfileLink | None:
    """The local link of a profile (``ProfileLinkQuerySet.best_match``)."""
    return KlaviyoProfileLink.objects.using(using).best_match(identifiers)


def remember_profile_id(
    identifiers: Mapping[str, Any], klaviyo_id: str | None, using: str = "default"
) -> bool:
    """Store Klaviyo's profile id on the link matching ``identifiers``; True if stored."""
    if not klaviyo_id:
        return False
    # Only the identifiers the payload sent: an "id" there is Klaviyo's, not yet stored.
    link = link_for({k: v for k, v in identifiers.items() if k != "id"}, using)
    if link is None or link.klaviyo_id == klaviyo_id:
        return link is not None
    try:
        with transaction.atomic(using=using):
            KlaviyoProfileLink.objects.using(using).filter(pk=link.pk).update(
                klaviyo_id=klaviyo_id, last_synced_at=timezone.now(), updated_at=timezone.now()
            )
    except IntegrityError:
        # Another link already holds this id (merged profiles); leave both as they are.
        logger.warning(
            "Klaviyo profile %s is already linked to another local profile; link %s not updated.",
            klaviyo_id,
            link.pk,
        )
        return False
    return True


def profile_attributes(row: ClaimedRow) -> dict[str, Any]:
    # A copy: senders pop keys from it.
    return dict(row.payload["profile"])


class ProfileUpsertSender(Sender):
    kind = Kind.PROFILE_UPSERT

    def prepare(self, row: ClaimedRow) -> tuple[dict[str, Any], int]:
        attributes = row.payload["profile"]
        size = row.size if row.size is not None else encoded_size(attributes)
        return attributes, size + ITEM_OVERHEAD_BYTES

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        if len(rows) <= LARGE_PROFILE_BATCH:
            return [Request(self.kind, "one", [r], r.flush_item[0], [[r]]) for r in rows]
        requests: list[Request] = []
        current: list[ClaimedRow] = []
        size = 0
        for row in rows:
            row_size = row.flush_item[1]
            if current and (
                len(current) >= PROFILES_PER_IMPORT_JOB or size + row_size > REQUEST_BYTES_BUDGET
            ):
                requests.append(self._bulk(current))
                current, size = [], 0
            current.append(row)
            size += row_size
        if current:
            requests.append(self._bulk(current))
        return requests

    def _bulk(self, rows: list[ClaimedRow]) -> Request:
        return Request(
            self.kind, "bulk", rows, [r.flush_item[0] for r in rows], [[r] for r in rows]
        )

    def send(self, ctx: SendContext, request: Request) -> Any:
        if request.key == "bulk":
            # Started, not waited for: a later pass settles it (flush.jobs, finished()).
            job = ctx.client.send_bulk_import(
                build_bulk_import([build_profile(p) for p in request.body])
            )
            job_id = accepted_job_id(job, "the profile bulk import")
            rows = request.rows
            return JobStarted(
                {},
                AcceptedJob(
                    self.kind, "import", job_id, tuple(r.pk for r in rows), JOB_WAIT_SECONDS
                ),
            )
        return upsert_profile(ctx, request.body)

    def poll(self, client: Any, op: str, job_id: str) -> dict[str, Any]:
        """The import job as Klaviyo sees it now (one GET)."""
        job = client.get_bulk_import_job(job_id)
        status = (job.get("attributes") or {}).get("status") if isinstance(job, Mapping) else None
        if not status:
            raise MalformedAnswer(
                f"Klaviyo's profile import job {job_id} answer has no status; "
                f"body shape: {shape_of(job)}"[:1000]
            )
        return job

    def finished(
        self, client: Any, job: Mapping[str, Any], rows: list[ClaimedRow | None], accepted: Any
    ) -> JobOutcome:
        """Each imported profile's outcome, from the job's ``import-errors``."""
        errors = client.get_bulk_import_errors(accepted.job_id)
        profiles = [dict(row.payload["profile"]) if row is not None else {} for row in rows]
        outcome = JobOutcome()
        for row, info in zip(rows, per_profile(errors, profiles), strict=True):
            if row is None or info is None:
                continue
            if refused(row, info).fate == DEAD:
                outcome.failed[row.pk] = info
            else:
                outcome.retry[row.pk] = info
        return outcome

    def settle(self, request: Request, result: Any) -> list[RowOutcome] | None:
        if request.key != "bulk":
            return super().settle(request, result)
        if isinstance(result, JobStarted):
            return [RowOutcome(row, AWAIT, job=result.job) for row in request.rows]
        # One outcome per imported profile (``import_profiles``), in the body's order.
        return [
            RowOutcome(row) if info is None else refused(row, info)
            for rows, info in zip(request.index, result, strict=True)
            for row in rows
        ]

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        if request.key != "bulk":
            return None
        return locate_rows(err, request.index, pointer=PROFILES_POINTER, field=PROFILES_FIELD)

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        if request.key == "bulk":
            return
        profile_id = result.get("id") if isinstance(result, Mapping) else None
        remember_profile_id(request.body, profile_id, self.using)
