"""Coupons and their codes, with an action that uploads pending codes to Klaviyo."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from django_klaviyo.coupons import push_codes
from django_klaviyo.exceptions import KlaviyoError
from django_klaviyo.models import KlaviyoCoupon, KlaviyoCouponCode

Status = KlaviyoCouponCode.Status


@admin.register(KlaviyoCoupon)
class KlaviyoCouponAdmin(admin.ModelAdmin):
    list_display = ("external_id", "description", "klaviyo_id", "pending", "failed", "synced_at")
    search_fields = ("external_id",)
    readonly_fields = ("klaviyo_id", "created_at", "synced_at")
    actions = ["upload_to_klaviyo"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[KlaviyoCoupon]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _pending=Count("codes", filter=Q(codes__status=Status.PENDING)),
                _failed=Count("codes", filter=Q(codes__status=Status.FAILED)),
            )
        )

    @admin.display(description="pending codes", ordering="_pending")
    def pending(self, obj: Any) -> int:
        return int(obj._pending)

    @admin.display(description="refused codes", ordering="_failed")
    def failed(self, obj: Any) -> int:
        return int(obj._failed)

    @admin.action(description="Create in Klaviyo and upload pending codes")
    def upload_to_klaviyo(self, request: HttpRequest, queryset: QuerySet[KlaviyoCoupon]) -> None:
        for coupon in queryset:
            try:
                report = push_codes(coupon)
            except KlaviyoError as exc:
                self.message_user(
                    request, f"{coupon}: Klaviyo refused the upload: {exc}", messages.ERROR
                )
                continue
            level = messages.WARNING if report.failed else messages.SUCCESS
            self.message_user(
                request,
                f"{coupon}: {report.imported} code(s) imported, {report.failed} refused "
                "(see each refused code's reason).",
                level,
            )


@admin.register(KlaviyoCouponCode)
class KlaviyoCouponCodeAdmin(admin.ModelAdmin):
    list_display = ("code", "coupon", "status", "expires_at", "error_code", "synced_at")
    list_filter = ("status", "coupon")
    search_fields = ("=code",)
    raw_id_fields = ("coupon",)
    readonly_fields = ("status", "klaviyo_id", "error_code", "error_detail", "synced_at")
    show_full_result_count = False
