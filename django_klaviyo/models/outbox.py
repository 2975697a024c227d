"""The event outbox: every change meant for Klaviyo, written in the caller's transaction."""

from __future__ import annotations

import os
import threading
import time
import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

_RANDOM_BITS = 74  # rand_a (12) + rand_b (62) of RFC 9562
# The last id made in this process as one number, its milliseconds above its random part:
# counting on from it carries into the next millisecond by itself.
_last = 0
_id_lock = threading.Lock()
_VERSION_AND_VARIANT = 0x7 << 76 | 0b10 << 62
_RAND_B = (1 << 62) - 1
# Random parts drawn from os.urandom 64 at a time: one system call per 64 ids instead of
# one per id (4 us of an order's save, in situ). A forked child starts with none of its
# parent's, so no two processes share a draw.
_draws: list[int] = []
_DRAWS_PER_CALL = 64
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_draws.clear)


def _draw() -> None:
    block = os.urandom(10 * _DRAWS_PER_CALL)
    _draws.extend(
        int.from_bytes(block[i : i + 10], "big") >> (80 - _RANDOM_BITS)
        for i in range(0, len(block), 10)
    )


def new_outbox_id() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): 48 bits of Unix milliseconds, then random.

    Rows written close in time get neighbouring keys, so an insert touches the right edge
    of the primary-key index instead of a random page, and the admin's newest-first list
    walks the primary key (no created_at index is written per row). Strictly increasing
    within a process (RFC 9562's "monotonic random"), so rows of one INSERT keep their order.
    """
    return uuid.UUID(int=new_outbox_id_int())


def new_outbox_id_int() -> int:
    """The next :func:`new_outbox_id` as its 128-bit number: the outbox writer sends SQLite
    its 32 hex digits without building the UUID."""
    global _last
    millis = time.time_ns() // 1_000_000
    with _id_lock:
        if not _draws:
            _draw()
        drawn = millis << _RANDOM_BITS | _draws.pop()
        if drawn <= _last:
            # Same millisecond with a smaller draw, or the clock stepped back: count on.
            drawn = _last + 1
        _last = drawn
    millis, rand_a, rand_b = drawn >> _RANDOM_BITS, drawn >> 62 & 0xFFF, drawn & _RAND_B
    return millis << 80 | rand_a << 64 | rand_b | _VERSION_AND_VARIANT


class OutboxEvent(models.Model):
    class Kind(models.TextChoices):
        EVENT = "event", "Event"
        PROFILE_UPSERT = "profile_upsert", "Profile upsert"
        LIST_ADD = "list_add", "Add to list"
        LIST_REMOVE = "list_remove", "Remove from list"
        SUBSCRIBE = "subscribe", "Subscribe"
        UNSUBSCRIBE = "unsubscribe", "Unsubscribe"
        PROFILE_DELETION = "profile_deletion", "Profile deletion"
        CATALOG_CATEGORY = "catalog_category", "Catalog category"
        CATALOG_ITEM = "catalog_item", "Catalog item"
        CATALOG_VARIANT = "catalog_variant", "Catalog variant"
        BACK_IN_STOCK = "back_in_stock", "Back-in-stock subscription"
        COUPON = "coupon", "Coupon"
        COUPON_CODE = "coupon_code", "Coupon code"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        RETRYING = "retrying", "Retrying"
        SENT = "sent", "Sent"
        DEAD = "dead", "Dead"
        # Klaviyo accepted its request as a bulk job that a later pass settles (KlaviyoJob).
        AWAITING_JOB = "awaiting_job", "Awaiting Klaviyo job"

    DUE_STATUSES = (Status.PENDING, Status.RETRYING)
    # Sent and not settled yet: a flusher holds the row, or Klaviyo's bulk job does.
    IN_FLIGHT_STATUSES = (Status.SENDING, Status.AWAITING_JOB)
    TERMINAL_STATUSES = (Status.SENT, Status.DEAD)

    # Time-ordered (see new_outbox_id): the newest-first admin list and the insert both
    # stay at the right edge of the primary-key index.
    id = models.UUIDField(primary_key=True, default=new_outbox_id, editable=False)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    # Kind-specific body; see docs/outbox.md for each kind's shape.
    payload = models.JSONField()
    # Metric name for events ("Placed Order"); blank for other kinds.
    metric = models.CharField(max_length=128, blank=True)
    # Klaviyo's event idempotency key; sent unchanged on every attempt.
    # Not indexed: no query looks a row up by it (the flusher reads it from claimed rows).
    unique_id = models.CharField(max_length=255, blank=True)
    # Saving the same state twice maps to the same key, and the constraint keeps one row
    # (the save path's INSERT ... ON CONFLICT (dedupe_key) DO NOTHING needs this index).
    dedupe_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    # The Klaviyo account the row goes to (django_klaviyo.accounts): "" is the default
    # account, so a single-account row stays as small as before. Not indexed: the flusher's
    # claim filters it on the due index's rows (docs/accounts.md).
    account = models.CharField(max_length=64, blank=True, default="")
    # "email:a@example.com", "external_id:42", ... groups rows per profile in bulk requests.
    # Indexed for one documented admin need: the changelist's search for a customer's rows
    # (README, Admin). The flusher groups claimed rows by it in memory.
    profile_key = models.CharField(max_length=320, blank=True, db_index=True)
    # The version of django_klaviyo.rules the payload was cleaned with: the flusher sends
    # rows of the current version as they are and cleans any other once before sending.
    # 0: never cleaned (rows written before rule versions, or by hand).
    rules_version = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    locked_at = models.DateTimeField(null=True, blank=True)
    locked_by = models.CharField(max_length=255, blank=True)
    last_error_status = models.PositiveIntegerField(null=True, blank=True)
    last_error_code = models.CharField(max_length=64, blank=True)
    last_error_detail = models.TextField(blank=True)
    # Why a row ended without a request, e.g. "not on list X, nothing to do" (not an error).
    outcome_note = models.CharField(max_length=255, blank=True)
    # Not indexed: newest-first lists order by the time-ordered primary key instead.
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "outbox event"
        ordering = ["created_at"]
        # Every index is paid for by every INSERT on the store's save path, so each one is
        # justified by a query below, and partial where it can be: a new row is "pending"
        # with no error and no sent_at, so it enters only the "due" index (plus the
        # primary key, dedupe_key and profile_key). docs/benchmarks.md measures the cost.
        indexes = [
            # Flush path: claim_batch's "due rows, oldest first" (ORDER BY next_attempt_at
            # LIMIT n ... FOR UPDATE SKIP LOCKED); holds only unsent rows, so claiming stays
            # cheap however many sent rows accumulate. Also the dashboard's due-row counts
            # and "oldest due row".
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["pending", "retrying"]),
                name="klaviyo_outbox_due",
            ),
            # Flush path: release_expired_leases (status "sending", locked_at < cutoff).
            # Also the dashboard's "being sent" count.
            models.Index(
                fields=["locked_at"],
                condition=Q(status="sending"),
                name="klaviyo_outbox_leased",
            ),
            # Admin: the dashboard's dead count, kinds and top error codes (read from the
            # index alone), the "dead" and "last error code" filters newest first (the id
            # makes the top-100 sort index-only), requeue_dead; purge of old dead rows.
            # Rows enter it only when they fail, so its width costs the save path nothing.
            models.Index(
                fields=["status", "last_error_code", "kind", "id"],
                condition=Q(status__in=["retrying", "dead"]),
                name="klaviyo_outbox_failing",
            ),
            # Purge by age of sent rows (sent_at < cutoff), and the dashboard's "sent in the
            # last hour/day". Written by the flusher when a row is sent, never on save.
            models.Index(
                fields=["sent_at"],
                condition=Q(status="sent"),
                name="klaviyo_outbox_sent",
            ),
        ]

    def __str__(self) -> str:
        label = self.metric or self.get_kind_display()
        return f"{label} [{self.status}] {self.profile_key}"
