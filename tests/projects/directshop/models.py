"""A store shaped like a second framework's checkout: the order is created directly in
its placed status (``Order.objects.create(status="PROCESSING", ...)``), its items are
saved afterwards in the same transaction, and nothing saves the order again or sends a
signal. The order keeps its address as one free-text field and has a phone number; it
has no ``placed_at``, ``updated_at``, ``number``, discount or category fields."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    class Status(models.TextChoices):
        NEW = "NEW", "New"
        PROCESSING = "PROCESSING", "Processing"
        SHIPPED = "SHIPPED", "Shipped"
        CANCELLED = "CANCELLED", "Cancelled"
        REFUNDED = "REFUNDED", "Refunded"

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=32, blank=True)
    order_total = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, default="USD")
    address = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="order_items")
    product_name = models.CharField(max_length=255)
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField(default=1)
    price = models.DecimalField(max_digits=12, decimal_places=2)
