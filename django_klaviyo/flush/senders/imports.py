"""Profiles in bulk: import jobs, lookups of 100 identifiers, and 409 duplicate_profile
resolved by updating the profile Klaviyo names.

"Accepted is not imported": a profile bulk import answers 202 with a job; whether each
profile was imported is known only once the job is ``complete`` (``GET`` the job) and its
``import-errors`` are read (``per_profile``). A profile upsert row's import is followed by
later passes (``flush.jobs``); a list add's own import (``import_profiles``, for profiles
it needs ids of) is polled between other work and given up after ``JOB_WAIT_SECONDS``,
the rows then retried, which re-imports the same profiles (an upsert).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from django_klaviyo.client.bodies.profiles import (
    build_bulk_import,
    build_profile,
    build_profile_import,
    build_profile_update,
)
from django_klaviyo.exceptions import KlaviyoAuthError, KlaviyoDuplicateProfileError, KlaviyoError
from django_klaviyo.flush.claim import chunks
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.outcomes import ErrorInfo, is_retryable
from django_klaviyo.rules.identifiers import email_key

# How long a batch waits for one import job, and between polls (growing to the cap).
JOB_WAIT_SECONDS = 120.0
FIRST_POLL_SECONDS = 0.5
POLL_CAP_SECONDS = 5.0
# GET /api/profiles filters take at most 100 values (and a page holds 100 profiles).
IDS_PER_LOOKUP = 100
LOOKUP_FIELDS = ("external_id", "email", "phone_number")

T = TypeVar("T")

_ITEM_POINTER = re.compile(r"/profiles/data/(\d+)")


# Reads that follow an accepted import (job status, errors, id lookups) are idempotent
# GETs: a transient failure of one is read again after a pause, within the job's wait,
# rather than failing (and re-importing) the whole group.
READ_ATTEMPTS = 4


def read(ctx: SendContext, call: Callable[..., T], *args: Any) -> T:
    pause = FIRST_POLL_SECONDS
    for attempt in range(READ_ATTEMPTS):
        ctx.request_made()
        ctx.keep_lease()
        try:
            return call(*args)
        except KlaviyoAuthError:
            raise
        except KlaviyoError as err:
            if not is_retryable(err) or attempt + 1 == READ_ATTEMPTS:
                raise
            if not ctx.pause(max(pause, float(getattr(err, "retry_after", 0) or 0))):
                raise
            pause = min(pause * 2, POLL_CAP_SECONDS)
    raise AssertionError("unreachable")  # the loop returns or raises


class ImportNotFinished(KlaviyoError):
    """The import job was cancelled, or still running when the flusher stopped waiting."""

    retryable = True


def upsert_profile(ctx: SendContext, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """``profile-import`` of a row's clean ``attributes``; on 409 duplicate_profile,
    update the profile Klaviyo names (e.g. a user changing to an email an earlier guest
    profile holds). The caller counts the first request, as for every other request."""
    try:
        return ctx.client.send_profile_import(build_profile_import(attributes))
    except KlaviyoDuplicateProfileError as err:
        duplicate = err.duplicate_profile_id
        if not duplicate:
            raise
        ctx.request_made()
        ctx.keep_lease()
        body = build_profile_update(duplicate, attributes)
        data = ctx.client.send_profile_update(duplicate, body)
        return data if data.get("id") else {**data, "id": duplicate}


def import_profiles(
    ctx: SendContext, profiles: Sequence[Mapping[str, Any]]
) -> list[ErrorInfo | None]:
    """Import ``profiles`` (rows' clean attributes) in one job and follow it to its end:
    for each profile, None when imported, else what Klaviyo said about it. Raises
    ``ImportNotFinished``. The caller counts the import's request; the polls and reads
    are counted here."""
    body = build_bulk_import([build_profile(p) for p in profiles])
    job = ctx.client.send_bulk_import(body)
    job_id = str(job.get("id") or "")
    if not job_id:
        raise ImportNotFinished("Klaviyo's bulk import answer carried no job id.")
    status = _status(job)
    waited, pause = 0.0, FIRST_POLL_SECONDS
    while status not in ("complete", "cancelled"):
        if waited >= JOB_WAIT_SECONDS or not ctx.pause(pause):
            raise ImportNotFinished(
                f"Klaviyo profile import job {job_id} was still {status!r} after {waited:.0f}s; "
                "the rows are retried."
            )
        waited += pause
        pause = min(pause * 2, POLL_CAP_SECONDS)
        status = _status(read(ctx, ctx.client.get_bulk_import_job, job_id))
    if status == "cancelled":
        raise ImportNotFinished(f"Klaviyo cancelled profile import job {job_id}.")
    errors = read(ctx, ctx.client.get_bulk_import_errors, job_id)
    return per_profile(errors, profiles)


def _status(job: Mapping[str, Any]) -> str:
    attributes = job.get("attributes") if isinstance(job, Mapping) else None
    return str((attributes or {}).get("status") or "queued")


def per_profile(
    errors: list[dict[str, Any]], profiles: Sequence[Mapping[str, Any]]
) -> list[ErrorInfo | None]:
    outcome: list[ErrorInfo | None] = [None] * len(profiles)
    keys = {identity(p): i for i, p in enumerate(profiles)}
    for error in errors:
        attributes = error.get("attributes") if isinstance(error, Mapping) else None
        if not isinstance(attributes, Mapping):
            continue
        source = attributes.get("source") if isinstance(attributes.get("source"), Mapping) else {}
        index = None
        match = _ITEM_POINTER.search(str(source.get("pointer") or ""))
        if match and int(match.group(1)) < len(profiles):
            index = int(match.group(1))
        original = attributes.get("original_payload")
        if index is None and isinstance(original, Mapping):
            index = keys.get(identity(original.get("attributes") or original))
        if index is None:
            continue
        status = attributes.get("status")
        outcome[index] = ErrorInfo(
            int(status) if str(status or "").isdigit() else None,
            str(attributes.get("code") or "import_error")[:64],
            "Klaviyo's profile import failed for this profile: "
            + str(attributes.get("detail") or attributes.get("title") or "no detail"),
        )
    return outcome


def identity(profile: Mapping[str, Any]) -> tuple[str, str, str]:
    email = profile.get("email")
    return (
        str(profile.get("external_id") or ""),
        email_key(email) if email else "",
        str(profile.get("phone_number") or ""),
    )


def lookup_ids(ctx: SendContext, profiles: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """Klaviyo's id of each profile, found by its identifiers, strongest first, with one
    ``GET /api/profiles?filter=any(field,[...])`` per 100 values (None: not found)."""
    found: list[str | None] = [None] * len(profiles)
    for field in LOOKUP_FIELDS:
        wanted: dict[str, list[int]] = {}
        for i, profile in enumerate(profiles):
            value = profile.get(field)
            if found[i] is None and value:
                key = email_key(value) if field == "email" else str(value)
                wanted.setdefault(key, []).append(i)
        for values in chunks(sorted(wanted), IDS_PER_LOOKUP):
            for resource in read(ctx, ctx.client.find_profiles, field, list(values)):
                attributes = resource.get("attributes") or {}
                value = attributes.get(field)
                if not value or not resource.get("id"):
                    continue
                key = email_key(value) if field == "email" else str(value)
                for i in wanted.get(key, ()):
                    found[i] = str(resource["id"])
    return found
