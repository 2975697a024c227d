"""A minimal store: orders and their lines, tracked by django-klaviyo.

Status flow: pending → placed → fulfilled, or → cancelled / refunded. Klaviyo events fire
on the transitions (see django_klaviyo.orders.mappers); shop.services does the checkout. A
Refund (with RefundLines) records money given back, in parts or at once; each is sent to
Klaviyo as a Refunded Order by shop.services.refund (django_klaviyo.order_refunded).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.urls import reverse


class Order(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PLACED = "placed", "Placed"
        FULFILLED = "fulfilled", "Fulfilled"
        CANCELLED = "cancelled", "Cancelled"
        REFUNDED = "refunded", "Refunded"

    number = models.CharField(max_length=32, unique=True)
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        # Not "orders": the test suite also installs django-oscar, whose Order takes it.
        related_name="shop_orders",
    )
    # The customer's email at checkout; the only identifier of a guest.
    email = models.EmailField(blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    total = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0.00"))
    currency = models.CharField(max_length=3, default="USD")
    # {"first_name", "last_name", "address1", "city", "region_code", "country_code", "zip", ...}
    billing_address = models.JSONField(default=dict, blank=True)
    shipping_address = models.JSONField(default=dict, blank=True)
    tracking_number = models.CharField(max_length=64, blank=True)
    tracking_url = models.URLField(max_length=500, blank=True)
    carrier = models.CharField(max_length=64, blank=True)
    discount_code = models.CharField(max_length=64, blank=True)
    # The discount the total already includes (a positive amount).
    discount_value = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    cancel_reason = models.CharField(max_length=255, blank=True)
    # The storefront visitor's anonymous id (django_klaviyo.storefront), so Placed Order
    # lands on the profile of the browsing that led to it (KLAVIYO["ORDER_FIELDS"]).
    klaviyo_anonymous_id = models.CharField(max_length=128, blank=True)
    placed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Order {self.number} ({self.status})"


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product_id = models.CharField(max_length=64, blank=True)
    sku = models.CharField(max_length=64)
    name = models.CharField(max_length=255)
    quantity = models.PositiveIntegerField(default=1)
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)
    image_url = models.URLField(max_length=500, blank=True)
    product_url = models.URLField(max_length=500, blank=True)
    categories = models.JSONField(default=list, blank=True)
    brand = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.name}"

    @property
    def row_total(self) -> Decimal:
        return self.unit_price * self.quantity


class Refund(models.Model):
    """Money given back for an order, all at once or in parts (shop.services.refund)."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="refunds")
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"Refund {self.pk} of {self.amount} for order {self.order_id}"


class RefundLine(models.Model):
    refund = models.ForeignKey(Refund, on_delete=models.CASCADE, related_name="lines")
    line = models.ForeignKey(OrderLine, on_delete=models.CASCADE, related_name="refund_lines")
    quantity = models.PositiveIntegerField(default=1)
    amount = models.DecimalField(max_digits=12, decimal_places=2)

    def __str__(self) -> str:
        return f"{self.quantity} x line {self.line_id}"


class Product(models.Model):
    """A product with one stock level; Klaviyo's catalog sees it as an item with one
    variant (KLAVIYO["CATALOG"] in shop_site.settings)."""

    name = models.CharField(max_length=255)
    sku = models.CharField(max_length=64, unique=True)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    url = models.URLField(max_length=500)
    image_url = models.URLField(max_length=500, blank=True)
    # Category names, e.g. ["Coffee", "Gifts"].
    categories = models.JSONField(default=list, blank=True)
    brand = models.CharField(max_length=128, blank=True)
    inventory = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.sku})"

    # The storefront's page (``url`` is the public address that emails and the catalog use).
    def get_absolute_url(self) -> str:
        return reverse("shop:product", kwargs={"sku": self.sku})

    def klaviyo_metadata(self) -> dict[str, str]:
        return {"brand": self.brand} if self.brand else {}

    @property
    def in_stock(self) -> bool:
        return self.inventory > 0


class Cart(models.Model):
    """A shopper's cart, stored so an emailed cart link can restore it on any device."""

    token = models.CharField(max_length=64, unique=True)
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # {sku: quantity}
    items = models.JSONField(default=dict, blank=True)
    checked_out = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Cart {self.token[:8]}"


class Subscription(models.Model):
    """A customer's subscription to a plan: its lifecycle reaches Klaviyo by settings only
    (KLAVIYO["TRACKED_MODELS"] in shop_site/settings.py; docs/mapping.md, Tracked models):
    Subscription Started / Paused / Cancelled, with the MRR as value, and the status and
    plan mirrored on the customer's profile."""

    class Status(models.TextChoices):
        TRIAL = "trial", "Trial"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        CANCELLED = "cancelled", "Cancelled"

    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="shop_subscriptions"
    )
    plan = models.CharField(max_length=64)
    interval = models.CharField(max_length=16, default="month")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TRIAL)
    # Monthly recurring revenue: the events' value.
    mrr = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0.00"))
    currency = models.CharField(max_length=3, default="USD")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.plan} ({self.status})"
