"""The local mirror: profile links (with their list memberships), lists, memberships.

Read-only: these rows mirror Klaviyo and change through the outbox and webhooks; an edit
here would not reach Klaviyo.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from django_klaviyo.admin.accounts import AccountColumnMixin
from django_klaviyo.admin.base import ReadOnlyDetailAdmin
from django_klaviyo.models import KlaviyoList, KlaviyoProfileLink, ListMembership


class ListMembershipInline(admin.TabularInline):
    model = ListMembership
    fk_name = "profile"
    extra = 0
    fields = (
        "klaviyo_list",
        "desired_member",
        "synced_member",
        "synced_at",
        "email_consent",
        "sms_consent",
    )
    readonly_fields = fields
    show_change_link = True
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("klaviyo_list")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(KlaviyoProfileLink)
class KlaviyoProfileLinkAdmin(ReadOnlyDetailAdmin):
    list_display = (
        "__str__",
        "user",
        "klaviyo_id",
        "email_consent",
        "sms_consent",
        "last_synced_at",
    )
    list_select_related = ("user",)
    list_filter = ("email_consent", "sms_consent")
    search_fields = ("=email", "=klaviyo_id", "=external_id", "=phone_number")
    search_help_text = "Exact email, Klaviyo profile id, external id or phone number."
    raw_id_fields = ("user",)
    readonly_fields = (
        "user",
        "klaviyo_id",
        "email",
        "phone_number",
        "external_id",
        "email_consent",
        "email_consent_at",
        "sms_consent",
        "sms_consent_at",
        "last_synced_at",
        "created_at",
        "updated_at",
    )
    inlines = (ListMembershipInline,)


@admin.register(KlaviyoList)
class KlaviyoListAdmin(AccountColumnMixin, ReadOnlyDetailAdmin):
    list_display = ("name", "klaviyo_id", "opt_in_process", "remote_updated", "synced_at")
    search_fields = ("name", "=klaviyo_id")
    readonly_fields = (
        "account",
        "klaviyo_id",
        "name",
        "opt_in_process",
        "remote_created",
        "remote_updated",
        "synced_at",
    )


@admin.register(ListMembership)
class ListMembershipAdmin(ReadOnlyDetailAdmin):
    """Membership, and consent given or withdrawn for this list alone (the profile link
    holds the global consent; a global unsubscribe outranks a list's consent)."""

    list_display = (
        "profile",
        "klaviyo_list",
        "desired_member",
        "synced_member",
        "email_consent",
        "sms_consent",
        "synced_at",
    )
    list_select_related = ("profile", "klaviyo_list")
    list_filter = ("desired_member", "synced_member", "email_consent", "sms_consent")
    search_fields = ("=profile__email", "=klaviyo_list__klaviyo_id")
    raw_id_fields = ("profile", "klaviyo_list")
    readonly_fields = (
        "profile",
        "klaviyo_list",
        "desired_member",
        "synced_member",
        "synced_at",
        "email_consent",
        "email_consent_at",
        "sms_consent",
        "sms_consent_at",
        "updated_at",
    )
