"""Coupons and their codes, with an action that queues pending codes for Klaviyo."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from django_klaviyo.admin.accounts import AccountColumnMixin
from django_klaviyo.coupons import enqueue_codes, enqueue_coupon
from django_klaviyo.exceptions import KlaviyoError
from django_klaviyo.models import KlaviyoCoupon, KlaviyoCouponCode, OutboxEvent

Status = KlaviyoCouponCode.Status


@admin.register(KlaviyoCoupon)
class KlaviyoCouponAdmin(AccountColumnMixin, admin.ModelAdmin):
    list_display = (
        "external_id",
        "description",
        "klaviyo_id",
        "pending",
        "queued",
        "failed",
        "synced_at",
    )
    search_fields = ("external_id",)
    # The account is fixed once codes may have been sent with its key.
    readonly_fields = ("account", "klaviyo_id", "created_at", "synced_at")
    actions = ["queue_for_klaviyo"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[KlaviyoCoupon]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _pending=Count("codes", filter=Q(codes__status=Status.PENDING)),
                _queued=Count("codes", filter=Q(codes__status=Status.QUEUED)),
                _failed=Count("codes", filter=Q(codes__status=Status.FAILED)),
            )
        )

    @admin.display(description="pending codes", ordering="_pending")
    def pending(self, obj: Any) -> int:
        return int(obj._pending)

    @admin.display(description="queued codes", ordering="_queued")
    def queued(self, obj: Any) -> int:
        return int(obj._queued)

    @admin.display(description="failed codes", ordering="_failed")
    def failed(self, obj: Any) -> int:
        return int(obj._failed)

    # Queuing writes outbox rows and changes the codes: the change permission, never view.
    @admin.action(
        description="Queue the coupon and its pending codes for Klaviyo", permissions=["change"]
    )
    def queue_for_klaviyo(self, request: HttpRequest, queryset: QuerySet[KlaviyoCoupon]) -> None:
        for coupon in queryset:
            try:
                codes = enqueue_codes(coupon)
                coupon_queued = enqueue_coupon(coupon) if not codes else False
            except KlaviyoError as exc:
                self.message_user(request, f"{coupon}: nothing queued: {exc}", messages.ERROR)
                continue
            what = f"{len(codes)} code(s) queued" + (", the coupon queued" if coupon_queued else "")
            self.message_user(
                request,
                f"{coupon}: {what}; the flusher sends them (failures show here as failed "
                "codes and in the outbox as dead rows, with Klaviyo's reason).",
                messages.SUCCESS,
            )


@admin.register(KlaviyoCouponCode)
class KlaviyoCouponCodeAdmin(admin.ModelAdmin):
    list_display = ("code", "coupon", "status", "expires_at", "error_code", "synced_at")
    list_filter = ("status", "coupon")
    search_fields = ("=code",)
    raw_id_fields = ("coupon",)
    readonly_fields = (
        "status",
        "klaviyo_id",
        "error_code",
        "error_detail",
        "synced_at",
        "outbox_row",
    )
    show_full_result_count = False

    @admin.display(description="outbox row")
    def outbox_row(self, obj: KlaviyoCouponCode) -> str:
        """The outbox row carrying this code (requeue a dead one from there)."""
        row = OutboxEvent.objects.filter(pk=obj.outbox_id).first() if obj.outbox_id else None
        if row is None:
            return "-"
        url = reverse("admin:django_klaviyo_outboxevent_change", args=[row.pk])
        return format_html('<a href="{}">{} ({})</a>', url, row.pk, row.get_status_display())
