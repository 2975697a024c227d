"""The local mirror of Klaviyo coupons and their codes."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class KlaviyoCoupon(models.Model):
    # Klaviyo's coupon id is its external id; ``klaviyo_id`` is set once Klaviyo has it.
    external_id = models.CharField(max_length=255)
    # The Klaviyo account the coupon lives in (``OutboxEvent.account``: "" is the default
    # account). Coupon ids are per account, so one external id may exist in several.
    account = models.CharField(max_length=64, blank=True, default="")
    description = models.CharField(max_length=255, blank=True)
    klaviyo_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Klaviyo coupon"
        ordering = ["external_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "external_id"], name="klaviyo_coupon_account_external_id"
            )
        ]

    def __str__(self) -> str:
        return f"{self.external_id} ({self.account})" if self.account else self.external_id


class KlaviyoCouponCode(models.Model):
    class Status(models.TextChoices):
        # Local states: saved only; queued in the outbox (a ``coupon_code`` row); dead
        # in the outbox (Klaviyo's reason in error_code/error_detail, as on the row).
        PENDING = "pending", "Pending (not yet queued)"
        QUEUED = "queued", "Queued in the outbox"
        FAILED = "failed", "Failed (see the reason)"
        # Klaviyo's states (CouponCode.status).
        PROCESSING = "PROCESSING", "Processing"
        UNASSIGNED = "UNASSIGNED", "Unassigned"
        ASSIGNED_TO_PROFILE = "ASSIGNED_TO_PROFILE", "Assigned to a profile"
        USED = "USED", "Used"
        DELETING = "DELETING", "Deleting"
        VERSION_NOT_ACTIVE = "VERSION_NOT_ACTIVE", "Version not active"

    coupon = models.ForeignKey(KlaviyoCoupon, on_delete=models.CASCADE, related_name="codes")
    code = models.CharField(max_length=255)
    expires_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(
        max_length=32, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    klaviyo_id = models.CharField(max_length=255, blank=True)
    # Why its outbox row is dead: Klaviyo's reason when it refused the code.
    error_code = models.CharField(max_length=64, blank=True)
    error_detail = models.TextField(blank=True)
    # The outbox row that carries the code (requeue it there when it is dead).
    outbox_id = models.UUIDField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Klaviyo coupon code"
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(fields=["coupon", "code"], name="klaviyo_coupon_code_unique")
        ]

    def __str__(self) -> str:
        return f"{self.code} [{self.status}]"
