"""Read-only mirrors of Klaviyo campaigns and flows (``manage.py klaviyo_sync``)."""

from __future__ import annotations

from django.db import models


class KlaviyoCampaign(models.Model):
    klaviyo_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=255)
    channel = models.CharField(max_length=32, blank=True)
    status = models.CharField(max_length=64, blank=True)
    send_time = models.DateTimeField(null=True, blank=True)
    remote_created = models.DateTimeField(null=True, blank=True)
    remote_updated = models.DateTimeField(null=True, blank=True)
    raw = models.JSONField(default=dict, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Klaviyo campaign"
        ordering = ["-remote_updated"]

    def __str__(self) -> str:
        return self.name


class KlaviyoFlow(models.Model):
    klaviyo_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=255)
    status = models.CharField(max_length=64, blank=True)
    trigger_type = models.CharField(max_length=64, blank=True)
    archived = models.BooleanField(default=False)
    remote_created = models.DateTimeField(null=True, blank=True)
    remote_updated = models.DateTimeField(null=True, blank=True)
    raw = models.JSONField(default=dict, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Klaviyo flow"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
