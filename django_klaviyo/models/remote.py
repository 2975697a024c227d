"""Read-only mirrors of Klaviyo campaigns and flows (``manage.py klaviyo_sync``), one set
per Klaviyo account."""

from __future__ import annotations

from django.db import models


# The Klaviyo account a mirror row belongs to (``OutboxEvent.account``: "" is the default
# account). Klaviyo ids are per account, so rows are unique per (account, klaviyo_id).
def account_field() -> models.CharField:
    return models.CharField(max_length=64, blank=True, default="")


def unique_per_account(name: str) -> models.UniqueConstraint:
    return models.UniqueConstraint(fields=["account", "klaviyo_id"], name=name)


class KlaviyoCampaign(models.Model):
    account = account_field()
    klaviyo_id = models.CharField(max_length=64)
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
        constraints = [unique_per_account("klaviyo_campaign_account_id")]

    def __str__(self) -> str:
        return self.name


class KlaviyoFlow(models.Model):
    account = account_field()
    klaviyo_id = models.CharField(max_length=64)
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
        constraints = [unique_per_account("klaviyo_flow_account_id")]

    def __str__(self) -> str:
        return self.name
