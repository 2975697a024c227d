"""Deliver the outbox to Klaviyo: claim due rows, group them into requests, send, record outcomes.

Delivery is at least once. Rows are claimed in a short transaction and leased to this
flusher (status ``sending``); Klaviyo is called outside any transaction; outcomes are
written in bulk afterwards. A flusher that dies mid-batch leaves its rows ``sending`` until
the lease expires and another flusher reclaims them, so a request may be repeated: events
carry a stable ``unique_id`` and profile, list and consent calls are idempotent upserts.

Outcome policy, per row:

- accepted by Klaviyo: ``sent``;
- retryable failure (429, 5xx, transport, ``error.retryable``): ``retrying`` with
  exponential back-off (at least Klaviyo's Retry-After), ``dead`` after MAX_ATTEMPTS;
- a 400 whose error pointer names an item: only that row is ``dead``, the rest of the
  request is sent again in the same run; a 400 (or client-side validation error) without
  a usable pointer splits the request in halves to isolate the bad rows, within a budget;
- any other client error: ``dead`` with Klaviyo's status, code and detail;
- a rejected API key (401, or 403 with JSON): the whole run stops with ``FlushAborted``,
  unsent rows go back to their previous state without counting the attempt.

Consent: subscribe jobs are asynchronous and may wait on double opt-in, so a sent
``subscribe`` row does not mark the local link subscribed (webhooks or a sync confirm it).
An ``unsubscribe`` takes effect without confirmation, so the local link is marked

The package, one concern per module: ``claim`` leases due rows; ``senders/`` holds one
module per outbox kind that turns claimed rows into Klaviyo requests; ``outcomes`` decides
what a failure means for a row; ``loop`` is the ``Flusher`` (batches, delivery, bulk
outcome writes, dry run); ``report`` is what a run reports.
"""

from __future__ import annotations

from django_klaviyo.flush.claim import ClaimedRow, claim_batch, make_owner, reclaim_expired_leases
from django_klaviyo.flush.loop import Flusher, flush_outbox, validate_kinds
from django_klaviyo.flush.outcomes import ErrorInfo, Outcomes, error_info, is_retryable
from django_klaviyo.flush.report import FlushAborted, FlushReport, KindCounts, StopSignal
from django_klaviyo.flush.senders import Sender, make_senders

__all__ = [
    "ClaimedRow",
    "ErrorInfo",
    "FlushAborted",
    "FlushReport",
    "Flusher",
    "KindCounts",
    "Outcomes",
    "Sender",
    "StopSignal",
    "claim_batch",
    "error_info",
    "flush_outbox",
    "is_retryable",
    "make_owner",
    "make_senders",
    "reclaim_expired_leases",
    "validate_kinds",
]
