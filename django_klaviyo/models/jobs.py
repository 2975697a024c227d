"""Klaviyo's bulk jobs the flusher follows: one row per job it started, polled by any
worker until Klaviyo says it is done, then its outbox rows are settled.

A job's outbox rows wait in status ``awaiting_job`` with ``locked_by = "job:<id>"``: the
flusher moves on after Klaviyo accepts the request, and a later pass (of any worker) polls
the job (``flush.jobs``). One worker polls a job at a time: it leases the job (``locked_by``,
``locked_at``) with a conditional UPDATE, and settles it only while it still holds it.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class KlaviyoJob(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        COMPLETE = "complete", "Complete"
        CANCELLED = "cancelled", "Cancelled"
        EXPIRED = "expired", "Expired"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The OutboxEvent.account of its rows ("": the default account).
    account = models.CharField(max_length=64, blank=True, default="")
    # The outbox kind of its rows (catalog_item, ...), and the job: create, update, delete.
    kind = models.CharField(max_length=32)
    op = models.CharField(max_length=16)
    # Klaviyo's job id.
    job_id = models.CharField(max_length=255)
    # A create retried as an update (or the reverse) after Klaviyo said it exists (or not).
    fallback = models.BooleanField(default=False)
    # The outbox row ids in the job body's order (Klaviyo's errors point at an index).
    rows = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    # What Klaviyo said at the last poll (queued, processing, complete, cancelled).
    klaviyo_status = models.CharField(max_length=32, blank=True)
    polls = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    next_poll_at = models.DateTimeField()
    # After this the job is given up on and its rows are retried.
    expires_at = models.DateTimeField()
    locked_by = models.CharField(max_length=255, blank=True)
    locked_at = models.DateTimeField(null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=255, blank=True)

    class Meta:
        verbose_name = "Klaviyo job"
        indexes = [
            # The poller's "open jobs due for a look"; holds open jobs only.
            models.Index(
                fields=["next_poll_at"],
                condition=Q(status="open"),
                name="klaviyo_job_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.op} job {self.job_id} [{self.status}]"

    @property
    def marker(self) -> str:
        """``OutboxEvent.locked_by`` of the rows waiting for this job."""
        return job_marker(self.pk)


def job_marker(pk: uuid.UUID | str) -> str:
    return f"job:{pk}"


class KlaviyoCatalogObject(models.Model):
    """A catalog resource Klaviyo is known to have, from the jobs that created or updated
    it (removed when a delete job ends): the flusher sends an upsert of a known one as an
    update and of an unknown one as the row says, so create vs update does not hang on
    Klaviyo's error wording ("already exists" is only the last resort)."""

    account = models.CharField(max_length=64, blank=True, default="")
    # The outbox kind: catalog_category, catalog_item, catalog_variant.
    kind = models.CharField(max_length=32)
    external_id = models.CharField(max_length=255)
    # The Klaviyo job that last wrote it.
    job_id = models.CharField(max_length=255, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        verbose_name = "Klaviyo catalog object"
        constraints = [
            models.UniqueConstraint(
                fields=["account", "kind", "external_id"], name="klaviyo_catalog_object_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.external_id}"
