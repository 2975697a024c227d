"""Plans and subscriptions, mapped by ``KLAVIYO["TRACKED_MODELS"]`` only (tests/tracking/)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Plan(models.Model):
    name = models.CharField(max_length=64)


class Subscription(models.Model):
    class Status(models.TextChoices):
        TRIAL = "trial", "Trial"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        CANCELLED = "cancelled", "Cancelled"

    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TRIAL)
    interval = models.CharField(max_length=16, default="month")
    mrr = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, default="USD")
    updated_at = models.DateTimeField(auto_now=True)
