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
- a rejected API key (401): that account's sending stops (the whole run, with one account)
  with ``FlushAborted``, unsent rows go back to their previous state without counting the
  attempt;
- a key lacking a scope (403 with JSON): only the rows of the kind whose endpoint needs it
  go back, uncounted, for a few minutes, with the missing scope in ``last_error_detail``;
- profile bulk import jobs are polled to their end: a profile the job failed is ``dead``
  with Klaviyo's error; 409 duplicate_profile updates the profile Klaviyo names.

A working flusher renews the lease of the rows it still holds between requests and records
outcomes only for those (``lease``); a stop request is honoured between requests.

Consent: subscribe jobs are asynchronous and may wait on double opt-in, so a sent
``subscribe`` row does not mark the local link subscribed (webhooks or a sync confirm it);
a list-scoped one only clears that list's own unsubscribe in the mirror.
An ``unsubscribe`` takes effect without confirmation, so the mirror is updated as soon as
Klaviyo accepts the job: the link's consent for a global one (a suppression is kept), the
list's membership consent for a list-scoped one. A list-scoped unsubscribe is sent only for
profiles Klaviyo confirms are on the list (see ``senders/unsubscribe.py``).

The package, one concern per module: ``claim`` leases due rows (``fairness``: with a fair
share across kinds); ``lease`` keeps them;
``senders/`` holds one module per outbox kind that turns claimed rows into Klaviyo
requests and settles each row of an accepted one (``senders/imports`` handles profiles
in bulk); ``outcomes`` decides what a failure means for a row; ``loop`` is the
``Flusher`` (the run: batches, idling, stopping); ``context`` is what senders get of the
run (``SendContext``: client, lease, report, clock, waits), never the ``Flusher`` itself;
``deliver`` sends one batch, kind by kind; ``record`` writes the outcomes; ``outages``
rides out database and network outages; ``plan`` is the dry run; ``report`` is what a run
reports; ``rotation`` sends each Klaviyo account's rows with its own client, in turn (a
rejected key stops only its account).
"""

from __future__ import annotations

# The public surface of the package (docs/api.md): run a flush and read its report. The
# stages (claim, senders, outcomes, the Flusher loop) are imported from their own modules.
from django_klaviyo.flush.loop import flush_outbox
from django_klaviyo.flush.report import FlushAborted, FlushReport, KindCounts, StopSignal

__all__ = ["FlushAborted", "FlushReport", "KindCounts", "StopSignal", "flush_outbox"]
