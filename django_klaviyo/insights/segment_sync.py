"""``klaviyo_sync segments``: the segments mirror of one account, page by page.

1. Every segment's name (``GET /api/segments``, 10 a page, 75/s 750/m); segments gone
   from Klaviyo after a complete listing are deleted with their members and sizes.
2. Every segment's profile count (``GET /api/segments/{id}`` with
   ``additional-fields[segment]=profile_count``: 1/s, 15/m, so about 4 s per segment),
   stalest first, and today's ``KlaviyoSegmentSize`` row.
3. The members of the segments chosen in ``KLAVIYO["SEGMENTS"]``
   (``GET /api/segments/{id}/profiles``, 100 a page, 75/s 750/m). Each page is written
   in one transaction together with the cursor of the next, so a run stopped mid-way
   (a 429 beyond the client's retries, a kill) continues there next time. Members not
   seen are removed only once a pass has listed the segment to its end.
4. The last 30 days of every segment's size (``POST /api/segment-series-reports``, 100
   segments a request: 1/s, 2/m, 225/d) into ``KlaviyoSegmentSize``, before step 2's
   counts, which then set today's row.

Memory stays flat: one page at a time, one bulk upsert per page. Rate limits go through
the client's shared limiter, so workers and other commands share the windows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import F
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from django_klaviyo.client.segments import MAX_SERIES_SEGMENTS
from django_klaviyo.exceptions import KlaviyoAPIError
from django_klaviyo.insights.chosen import chosen_segments
from django_klaviyo.models import (
    KlaviyoProfileLink,
    KlaviyoSegment,
    KlaviyoSegmentMembership,
    KlaviyoSegmentSize,
)

Progress = Callable[[str], None]


@dataclass
class SegmentSyncResult:
    """What one account's sync did, and the chosen names it could not resolve."""

    segments: int = 0
    removed: int = 0
    counted: int = 0
    history: int = 0
    members: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _datetime(value: Any) -> dt.datetime | None:
    try:
        return parse_datetime(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def sync_segment_names(client: Any, account: str, now: dt.datetime) -> tuple[int, int]:
    """Mirror every segment's name; returns (segments seen, segments removed)."""
    seen: set[str] = set()
    for resource in client.get_segments():
        klaviyo_id = str(resource.get("id") or "")
        if not klaviyo_id:
            continue
        attributes = resource.get("attributes") or {}
        KlaviyoSegment.objects.update_or_create(
            account=account,
            klaviyo_id=klaviyo_id,
            defaults={
                "name": str(attributes.get("name") or klaviyo_id)[:255],
                "is_active": attributes.get("is_active") is not False,
                "remote_created": _datetime(attributes.get("created")),
                "remote_updated": _datetime(attributes.get("updated")),
                "synced_at": now,
            },
        )
        seen.add(klaviyo_id)
    gone = KlaviyoSegment.objects.filter(account=account).exclude(klaviyo_id__in=seen)
    _, deleted = gone.delete()  # with their members and sizes
    return len(seen), deleted.get(KlaviyoSegment._meta.label, 0)


def resolve_chosen(account: str) -> tuple[list[KlaviyoSegment], list[str]]:
    """The mirrored segments ``KLAVIYO["SEGMENTS"]`` names for ``account``, and a message
    for each name that matches no segment or two."""
    found: list[KlaviyoSegment] = []
    problems: list[str] = []
    where = f" (account {account!r})" if account else ""
    for ref in chosen_segments(account):
        segments = KlaviyoSegment.objects.named(ref, account)
        if not segments:
            problems.append(f"KLAVIYO['SEGMENTS'] names {ref!r}{where}: no segment has it.")
        elif len(segments) > 1:
            problems.append(
                f"KLAVIYO['SEGMENTS'] names {ref!r}{where}: two segments have it; "
                "name one by its id."
            )
        elif segments[0] not in found:
            found.append(segments[0])
    return found, problems


def record_count(segment: KlaviyoSegment, count: int, now: dt.datetime) -> None:
    """Store a profile count on the segment and as today's size."""
    KlaviyoSegment.objects.filter(pk=segment.pk).update(profile_count=count, count_synced_at=now)
    segment.profile_count, segment.count_synced_at = count, now
    KlaviyoSegmentSize.objects.update_or_create(
        segment=segment, date=timezone.localdate(now), defaults={"profile_count": count}
    )


def sync_counts(
    client: Any,
    account: str,
    now: dt.datetime,
    progress: Progress,
) -> int:
    """Read each segment's profile count, stalest first; returns segments counted."""
    segments = KlaviyoSegment.objects.filter(account=account).order_by(
        F("count_synced_at").asc(nulls_first=True), "pk"
    )
    counted = 0
    for segment in list(segments):
        count = client.get_segment_profile_count(segment.klaviyo_id)
        if count is None:
            continue
        record_count(segment, count, now)
        counted += 1
        progress(f"  {segment.name}: {count} profiles")
    return counted


def sync_size_history(client: Any, account: str, progress: Progress) -> int:
    """Daily sizes of the account's segments over the last 30 days, 100 segments per
    report; returns the rows written (each day's row replaced by Klaviyo's figure)."""
    segments = {s.klaviyo_id: s for s in KlaviyoSegment.objects.filter(account=account)}
    ids = sorted(segments)
    written = 0
    for start in range(0, len(ids), MAX_SERIES_SEGMENTS):
        report = client.query_segment_series(ids[start : start + MAX_SERIES_SEGMENTS])
        days = [_datetime(stamp) for stamp in report.get("date_times") or []]
        rows = []
        for result in report.get("results") or []:
            segment = segments.get(str((result.get("groupings") or {}).get("segment_id")))
            totals = (result.get("statistics") or {}).get("total_members") or []
            if segment is None:
                continue
            rows += [
                KlaviyoSegmentSize(segment=segment, date=day.date(), profile_count=int(total))
                for day, total in zip(days, totals, strict=False)
                if day is not None and isinstance(total, (int, float)) and total >= 0
            ]
        KlaviyoSegmentSize.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["segment", "date"],
            update_fields=["profile_count"],
        )
        written += len(rows)
    progress(f"  size history: {written} daily sizes from segment-series-reports")
    return written


def _links(account: str, profiles: list[dict[str, Any]]) -> dict[str, int]:
    """Local link ids by Klaviyo profile id, matched on Klaviyo id (the links' ids are
    the default account's), then external_id, then email."""
    ids = {p["id"]: p.get("attributes") or {} for p in profiles}
    matched: dict[str, int] = {}
    if not account:
        for pk, klaviyo_id in KlaviyoProfileLink.objects.filter(
            klaviyo_id__in=list(ids)
        ).values_list("pk", "klaviyo_id"):
            matched[klaviyo_id] = pk
    by_external = {a.get("external_id"): i for i, a in ids.items() if a.get("external_id")}
    for pk, external_id in KlaviyoProfileLink.objects.filter(
        external_id__in=list(by_external)
    ).values_list("pk", "external_id"):
        matched.setdefault(by_external[external_id], pk)
    by_email = {str(a["email"]).lower(): i for i, a in ids.items() if a.get("email")}
    # The best link last, so it wins: a user's link over a guest's, then the oldest.
    emails = dict(
        KlaviyoProfileLink.objects.annotate(lower_email=Lower("email"))
        .filter(lower_email__in=list(by_email))
        .order_by(F("user_id").asc(nulls_first=True), "-pk")
        .values_list("lower_email", "pk")
    )
    for email, pk in emails.items():
        matched.setdefault(by_email[email], pk)
    return matched


def _store_page(
    segment: KlaviyoSegment, profiles: list[dict[str, Any]], cursor: str, now: dt.datetime
) -> None:
    profiles = [p for p in profiles if p.get("id")]
    links = _links(segment.account, profiles)
    rows = [
        KlaviyoSegmentMembership(
            segment=segment,
            klaviyo_profile_id=str(p["id"])[:64],
            email=str((p.get("attributes") or {}).get("email") or "").lower()[:254],
            external_id=str((p.get("attributes") or {}).get("external_id") or "")[:255],
            profile_id=links.get(p["id"]),
            synced_at=now,
        )
        for p in profiles
    ]
    with transaction.atomic():
        KlaviyoSegmentMembership.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["segment", "klaviyo_profile_id"],
            update_fields=["email", "external_id", "profile", "synced_at"],
        )
        KlaviyoSegment.objects.filter(pk=segment.pk).update(members_cursor=cursor)
    segment.members_cursor = cursor


def sync_members(
    client: Any,
    segment: KlaviyoSegment,
    now: dt.datetime,
    progress: Progress,
    *,
    page_size: int = 100,
) -> int:
    """List ``segment``'s members to the end, from its stored cursor if a pass was
    interrupted; returns the member count once complete."""
    if not segment.members_cursor or segment.members_pass_started_at is None:
        segment.members_cursor = ""
        segment.members_pass_started_at = now
        segment.save(update_fields=["members_cursor", "members_pass_started_at"])
    else:
        progress(f"  {segment.name}: resuming an interrupted pass")
    cursor: str | None = segment.members_cursor or None
    pages = seen = 0
    while True:
        try:
            page = client.get_segment_members_page(segment.klaviyo_id, cursor, page_size=page_size)
        except KlaviyoAPIError as exc:
            if cursor is None or exc.status != 400:
                raise
            # A stored cursor Klaviyo no longer accepts: list again from the first page.
            progress(f"  {segment.name}: the stored cursor expired; starting the pass again")
            cursor = None
            continue
        _store_page(segment, page.profiles, page.next_cursor or "", now)
        pages += 1
        seen += len(page.profiles)
        progress(f"  {segment.name}: page {pages}, {seen} members read")
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    with transaction.atomic():
        KlaviyoSegmentMembership.objects.filter(
            segment=segment, synced_at__lt=segment.members_pass_started_at
        ).delete()
        count = KlaviyoSegmentMembership.objects.filter(segment=segment).count()
        segment.members_cursor = ""
        segment.members_pass_started_at = None
        segment.members_synced_at = now
        segment.save(
            update_fields=["members_cursor", "members_pass_started_at", "members_synced_at"]
        )
    return count


def sync_segments(
    client: Any,
    account: str = "",
    *,
    now: dt.datetime | None = None,
    progress: Progress = lambda line: None,
    page_size: int = 100,
) -> SegmentSyncResult:
    """The whole segments sync of one account (``account``: its ``OutboxEvent.account``
    value). Klaviyo's errors propagate with the progress kept; the names of
    ``KLAVIYO["SEGMENTS"]`` that match no segment or two are in ``problems``."""
    now = now or timezone.now()
    result = SegmentSyncResult()
    result.segments, result.removed = sync_segment_names(client, account, now)
    progress(f"  {result.segments} segments listed, {result.removed} gone from Klaviyo removed")
    chosen, result.problems = resolve_chosen(account)
    for segment in chosen:
        count = sync_members(client, segment, now, progress, page_size=page_size)
        result.members[segment.name] = count
    result.history = sync_size_history(client, account, progress)
    result.counted = sync_counts(client, account, now, progress)
    return result
