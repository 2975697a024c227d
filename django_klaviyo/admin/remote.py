"""Read-only mirrors of campaigns and flows (``manage.py klaviyo_sync``)."""

from __future__ import annotations

from django.contrib import admin

from django_klaviyo.admin.accounts import AccountColumnMixin
from django_klaviyo.admin.base import ReadOnlyDetailAdmin, pretty_json
from django_klaviyo.models import KlaviyoCampaign, KlaviyoFlow

_REMOTE_FIELDS = ("remote_created", "remote_updated", "synced_at", "pretty_raw")


class _RemoteAdmin(AccountColumnMixin, ReadOnlyDetailAdmin):
    search_fields = ("name", "=klaviyo_id")

    @admin.display(description="raw")
    def pretty_raw(self, obj: KlaviyoCampaign | KlaviyoFlow) -> str:
        return pretty_json(obj.raw)


@admin.register(KlaviyoCampaign)
class KlaviyoCampaignAdmin(_RemoteAdmin):
    list_display = ("name", "channel", "status", "send_time", "remote_updated", "klaviyo_id")
    list_filter = ("channel", "status")
    readonly_fields = (
        "account",
        "klaviyo_id",
        "name",
        "channel",
        "status",
        "send_time",
        *_REMOTE_FIELDS,
    )


@admin.register(KlaviyoFlow)
class KlaviyoFlowAdmin(_RemoteAdmin):
    list_display = ("name", "status", "trigger_type", "archived", "remote_updated", "klaviyo_id")
    list_filter = ("status", "archived", "trigger_type")
    readonly_fields = (
        "account",
        "klaviyo_id",
        "name",
        "status",
        "trigger_type",
        "archived",
        *_REMOTE_FIELDS,
    )
