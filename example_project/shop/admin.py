from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.utils import timezone

from shop.models import Order, OrderLine, Product, Subscription

_PLACE_AFTER_LINES = "_shop_place_after_lines"


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("number", "customer", "email", "status", "total", "currency", "placed_at")
    list_filter = ("status", "currency")
    search_fields = ("number", "email", "customer__email")
    raw_id_fields = ("customer",)
    inlines = [OrderLineInline]
    readonly_fields = ("created_at", "updated_at")

    def save_model(self, request: Any, obj: Order, form: Any, change: bool) -> None:
        # The admin saves the order before its inline lines. An order entering "placed"
        # is first saved in its previous status and moved to placed in save_related, once
        # the lines exist, so Klaviyo's Placed Order lists them (same transaction).
        if obj.status == Order.Status.PLACED and (not change or "status" in form.changed_data):
            setattr(obj, _PLACE_AFTER_LINES, True)
            obj.status = form.initial.get("status") if change else Order.Status.PENDING
        super().save_model(request, obj, form, change)

    def save_related(self, request: Any, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        order = form.instance
        if getattr(order, _PLACE_AFTER_LINES, False):
            delattr(order, _PLACE_AFTER_LINES)
            order.status = Order.Status.PLACED
            order.placed_at = order.placed_at or timezone.now()
            order.save(update_fields=["status", "placed_at", "updated_at"])


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    # Editing price or inventory here updates Klaviyo's catalog on the next flush.
    list_display = ("name", "sku", "price", "inventory", "brand")
    list_editable = ("price", "inventory")
    search_fields = ("name", "sku")


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    # Changing the status here sends Subscription Started / Paused / Cancelled
    # (KLAVIYO["TRACKED_MODELS"]) and mirrors it on the customer's Klaviyo profile.
    list_display = ("customer", "plan", "interval", "status", "mrr", "currency", "updated_at")
    list_filter = ("status", "plan")
    search_fields = ("customer__email", "plan")
    raw_id_fields = ("customer",)
    readonly_fields = ("created_at", "updated_at")
