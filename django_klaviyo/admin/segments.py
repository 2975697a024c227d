"""Read-only mirror of Klaviyo segments, their members and sizes (``klaviyo_sync segments``)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from django_klaviyo.admin.accounts import AccountColumnMixin
from django_klaviyo.admin.base import ReadOnlyDetailAdmin
from django_klaviyo.models import KlaviyoSegment, KlaviyoSegmentMembership, KlaviyoSegmentSize


@admin.register(KlaviyoSegment)
class KlaviyoSegmentAdmin(AccountColumnMixin, ReadOnlyDetailAdmin):
    list_display = ("name", "profile_count", "members_synced_at", "synced_at", "in_klaviyo")
    search_fields = ("name", "=klaviyo_id")
    readonly_fields = (
        "account",
        "klaviyo_id",
        "in_klaviyo",
        "name",
        "is_active",
        "profile_count",
        "count_synced_at",
        "remote_created",
        "remote_updated",
        "synced_at",
        "members_synced_at",
        "members_pass_started_at",
        "members_cursor",
    )

    @admin.display(description="Klaviyo")
    def in_klaviyo(self, obj: KlaviyoSegment) -> str:
        return format_html(
            '<a href="{}" rel="noopener noreferrer" target="_blank">{}</a>',
            obj.klaviyo_url,
            obj.klaviyo_id,
        )


@admin.register(KlaviyoSegmentMembership)
class KlaviyoSegmentMembershipAdmin(ReadOnlyDetailAdmin):
    """Members of the segments chosen in KLAVIYO["SEGMENTS"], as Klaviyo listed them."""

    list_display = ("email", "external_id", "klaviyo_profile_id", "segment", "profile", "synced_at")
    list_select_related = ("segment", "profile")
    list_filter = ("segment",)
    search_fields = ("=email", "=external_id", "=klaviyo_profile_id")
    raw_id_fields = ("segment", "profile")
    readonly_fields = (
        "segment",
        "klaviyo_profile_id",
        "email",
        "external_id",
        "profile",
        "synced_at",
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        # Emails are stored lower-cased: an email is searched the same way, on the index
        # (external ids and Klaviyo ids keep their case).
        term = search_term.strip()
        return super().get_search_results(request, queryset, term.lower() if "@" in term else term)


@admin.register(KlaviyoSegmentSize)
class KlaviyoSegmentSizeAdmin(ReadOnlyDetailAdmin):
    list_display = ("segment", "date", "profile_count")
    list_select_related = ("segment",)
    list_filter = ("segment",)
    date_hierarchy = "date"
    readonly_fields = ("segment", "date", "profile_count")
