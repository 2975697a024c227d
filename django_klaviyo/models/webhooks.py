"""A log of received webhooks: every delivery, and each of its items once."""

from __future__ import annotations

import uuid

from django.db import models


class WebhookDelivery(models.Model):
    class Source(models.TextChoices):
        SYSTEM = "system", "System webhook (signed)"
        FLOW = "flow", "Flow webhook action (shared token)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.SYSTEM)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    webhook_id = models.CharField(max_length=64, blank=True, db_index=True)
    # Request headers with signatures, tokens and cookies redacted.
    headers = models.JSONField(default=dict, blank=True)
    body = models.TextField(blank=True)
    # A plain string: proxies send values that an inet column rejects.
    remote_addr = models.CharField(max_length=64, blank=True)
    # The Klaviyo account whose secret verified it ("": the default account).
    account = models.CharField(max_length=64, blank=True, default="")
    valid = models.BooleanField(default=False)
    processed = models.BooleanField(default=False)
    item_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)

    class Meta:
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.get_source_display()} {self.received_at:%Y-%m-%d %H:%M:%S}"


class WebhookItem(models.Model):
    """One event of a delivery's ``data[]``, unique on Klaviyo's ``external_id``.

    Pending: not processed and never attempted (``attempts == 0``); the worker claims these.
    Failed: not processed after an attempt (``error`` says why); reprocessed on demand.
    """

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="items")
    # Klaviyo's event id, unique within an account (the constraint below).
    external_id = models.CharField(max_length=255)
    # The delivery's account ("": the default one); the built-in consent handlers keep the
    # local mirror of the default account only (docs/accounts.md).
    account = models.CharField(max_length=64, blank=True, default="")
    topic = models.CharField(max_length=255, db_index=True)
    payload = models.JSONField(default=dict, blank=True)
    processed = models.BooleanField(default=False)
    processed_at = models.DateTimeField(null=True, blank=True)
    # Times the handlers ran for this item (on receipt, by the worker, or reprocessed).
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "webhook item"
        ordering = ["-created_at"]
        constraints = [
            # The receipt's INSERT ... ON CONFLICT (account, external_id) DO NOTHING.
            models.UniqueConstraint(
                fields=["account", "external_id"], name="klaviyo_webhook_item_unique"
            ),
        ]
        indexes = [
            # The worker's queue: only items still waiting, so it stays small.
            models.Index(
                fields=["created_at"],
                condition=models.Q(processed=False, attempts=0),
                name="klaviyo_webhook_item_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.topic} {self.external_id}"
