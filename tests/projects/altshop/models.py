"""A store whose order differs from the example shop in every name django-klaviyo reads:
``state`` (not ``status``) with its own values, ``grand_total``, ``items``, a
``reference``, a ``guest_email`` and no customer relation."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    class State(models.TextChoices):
        CART = "cart", "Cart"
        PAID = "paid", "Paid"
        SHIPPED = "shipped", "Shipped"
        VOID = "void", "Void"
        RETURNED = "returned", "Returned"

    reference = models.CharField(max_length=32)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CART)
    grand_total = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    currency_code = models.CharField(max_length=3, default="EUR")
    guest_email = models.EmailField()
    paid_on = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.reference


class Item(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    title = models.CharField(max_length=255)
    code = models.CharField(max_length=64)
    qty = models.PositiveIntegerField(default=1)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    maker = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return self.title
