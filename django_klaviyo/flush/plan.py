"""The dry run: what a flush would send now, in how many requests, claiming nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.db.models import TextField
from django.db.models.functions import Cast

from django_klaviyo.flush.claim import CLAIMED_COLUMNS, ClaimedRow, claimed_rows, due_rows
from django_klaviyo.flush.report import FlushReport
from django_klaviyo.flush.senders import ListItem, Sender, prepare_rows


def plan_due(
    senders: Mapping[str, Sender],
    *,
    now: datetime,
    kinds: Sequence[str] | None,
    using: str,
    account: str | None,
    batch_size: int,
) -> FlushReport:
    """Plan the rows due at ``now`` (of ``kinds`` and ``account``; None: all) with
    ``senders``, ``batch_size`` rows at a time."""
    report = FlushReport(dry_run=True)
    due = due_rows(now, kinds, using, account).order_by("next_attempt_at", "pk")
    batch: list[Sequence[Any]] = []
    # The payload as text, parsed row by row: one unreadable row must not end the plan.
    columns = ["payload_text" if c == "payload" else c for c in CLAIMED_COLUMNS]
    due = due.annotate(payload_text=Cast("payload", output_field=TextField()))
    for record in due.values_list(*columns).iterator(chunk_size=batch_size):
        batch.append(record)
        if len(batch) >= batch_size:
            _plan_batch(senders, claimed_rows(batch, owner="", now=None), report)
            batch = []
    if batch:
        _plan_batch(senders, claimed_rows(batch, owner="", now=None), report)
    return report


def _plan_batch(senders: Mapping[str, Sender], rows: list[ClaimedRow], report: FlushReport) -> None:
    by_kind: dict[str, list[ClaimedRow]] = defaultdict(list)
    for row in rows:
        by_kind[row.kind].append(row)
    for kind, kind_rows in by_kind.items():
        sender = senders.get(kind)
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
