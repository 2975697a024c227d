"""Where a ``klaviyo_backfill`` run got to, so a crashed or interrupted run resumes."""

from __future__ import annotations

from django.db import models


class BackfillCheckpoint(models.Model):
    # "orders", "customers" or "consent", with the run's --since/--until: one row per range.
    name = models.CharField(max_length=255, unique=True)
    # The primary key of the last source row whose outbox rows were committed (as text, so
    # any primary key type fits); the next batch starts after it.
    last_pk = models.CharField(max_length=255, blank=True)
    source_rows = models.PositiveBigIntegerField(default=0)
    outbox_rows = models.PositiveBigIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "backfill checkpoint"

    def __str__(self) -> str:
        state = "finished" if self.finished_at else f"after pk {self.last_pk or '-'}"
        return f"{self.name}: {self.source_rows} rows, {state}"
