"""The event outbox: every change meant for Klaviyo, written in the caller's transaction."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone


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

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        RETRYING = "retrying", "Retrying"
        SENT = "sent", "Sent"
        DEAD = "dead", "Dead"

    DUE_STATUSES = (Status.PENDING, Status.RETRYING)
    TERMINAL_STATUSES = (Status.SENT, Status.DEAD)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    # Kind-specific body; see docs/outbox.md for each kind's shape.
    payload = models.JSONField()
    # Metric name for events ("Placed Order"); blank for other kinds.
    metric = models.CharField(max_length=128, blank=True)
    # Klaviyo's event idempotency key; sent unchanged on every attempt.
    unique_id = models.CharField(max_length=255, blank=True, db_index=True)
    # Saving the same state twice maps to the same key, and the constraint keeps one row.
    dedupe_key = models.CharField(max_length=255, null=True, blank=True, unique=True)
    # "email:a@example.com", "external_id:42", ... groups rows per profile in bulk requests.
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
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "outbox event"
        ordering = ["created_at"]
        indexes = [
            # "Due rows": a partial index that holds only unsent rows, so claiming
            # stays cheap however many sent rows accumulate.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["pending", "retrying"]),
                name="klaviyo_outbox_due",
            ),
            # Expired leases of crashed flushers.
            models.Index(
                fields=["locked_at"],
                condition=Q(status="sending"),
                name="klaviyo_outbox_leased",
            ),
            models.Index(fields=["status", "kind"], name="klaviyo_outbox_status_kind"),
            # Admin filter and "top error codes"; new rows have no error and stay out of it,
            # so the insert on the save path pays nothing for it.
            models.Index(
                fields=["last_error_code"],
                condition=~Q(last_error_code=""),
                name="klaviyo_outbox_error_code",
            ),
            # "Sent in the last hour" on the dashboard, and purge by age.
            models.Index(
                fields=["sent_at"],
                condition=Q(sent_at__isnull=False),
                name="klaviyo_outbox_sent_at",
            ),
        ]

    def __str__(self) -> str:
        label = self.metric or self.get_kind_display()
        return f"{label} [{self.status}] {self.profile_key}"
