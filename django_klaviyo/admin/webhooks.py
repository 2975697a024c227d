"""The webhook log: deliveries (pretty body, redacted headers) and items (reprocess)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import ngettext

from django_klaviyo.admin.accounts import AccountColumnMixin
from django_klaviyo.admin.base import ReadOnlyDetailAdmin, pretty_json, pretty_json_text
from django_klaviyo.models import WebhookDelivery, WebhookItem
from django_klaviyo.webhooks.dispatch import process_items


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(AccountColumnMixin, ReadOnlyDetailAdmin):
    list_display = (
        "received_at",
        "source",
        "webhook_id",
        "item_count",
        "processed",
        "remote_addr",
    )
    list_filter = ("source", "processed", "received_at")
    search_fields = ("=webhook_id",)
    fields = (
        "id",
        "source",
        "account",
        "received_at",
        "webhook_id",
        "remote_addr",
        "valid",
        "processed",
        "item_count",
        "items_link",
        "error",
        "traceback",
        "pretty_headers",
        "pretty_body",
    )
    readonly_fields = fields

    @admin.display(description="headers (credentials redacted)")
    def pretty_headers(self, obj: WebhookDelivery) -> str:
        return pretty_json(obj.headers)

    @admin.display(description="body")
    def pretty_body(self, obj: WebhookDelivery) -> str:
        return pretty_json_text(obj.body)

    @admin.display(description="items")
    def items_link(self, obj: WebhookDelivery) -> str:
        url = reverse("admin:django_klaviyo_webhookitem_changelist")
        return format_html(
            '<a href="{}?delivery__id__exact={}">Items of this delivery</a>', url, obj.pk
        )


class ItemStateFilter(admin.SimpleListFilter):
    """Pending (waiting for the worker), processed, or failed (see the item's error)."""

    title = "state"
    parameter_name = "state"
    STATES = {
        "pending": Q(processed=False, attempts=0),
        "processed": Q(processed=True),
        "failed": Q(processed=False, attempts__gt=0),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(state, state.capitalize()) for state in self.STATES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        condition = self.STATES.get(self.value() or "")
        return queryset if condition is None else queryset.filter(condition)


@admin.register(WebhookItem)
class WebhookItemAdmin(AccountColumnMixin, ReadOnlyDetailAdmin):
    list_display = (
        "created_at",
        "topic",
        "external_id",
        "processed",
        "attempts",
        "processed_at",
        "delivery",
    )
    list_select_related = ("delivery",)
    list_filter = (ItemStateFilter, "processed", "topic", "created_at")
    search_fields = ("=external_id",)
    raw_id_fields = ("delivery",)
    actions = ("reprocess",)
    fields = (
        "external_id",
        "account",
        "topic",
        "delivery",
        "processed",
        "processed_at",
        "attempts",
        "created_at",
        "error",
        "traceback",
        "pretty_payload",
    )
    readonly_fields = fields

    @admin.display(description="payload")
    def pretty_payload(self, obj: WebhookItem) -> str:
        return pretty_json(obj.payload)

    @admin.action(description="Reprocess (run the webhook handlers again)", permissions=["change"])
    def reprocess(self, request: HttpRequest, queryset: QuerySet[WebhookItem]) -> None:
        selected = queryset.count()
        result = process_items(queryset)
        if selected > result.handled:
            self.message_user(
                request,
                ngettext(
                    "%(count)d webhook item is being processed by a worker right now; "
                    "it was left to it.",
                    "%(count)d webhook items are being processed by a worker right now; "
                    "they were left to it.",
                    selected - result.handled,
                )
                % {"count": selected - result.handled},
                messages.WARNING,
            )
        if result.processed:
            self.message_user(
                request,
                ngettext(
                    "%(count)d webhook item was processed again.",
                    "%(count)d webhook items were processed again.",
                    result.processed,
                )
                % {"count": result.processed},
                messages.SUCCESS,
            )
        if result.failed:
            self.message_user(
                request,
                ngettext(
                    "%(count)d webhook item failed in its handlers; see its error.",
                    "%(count)d webhook items failed in their handlers; see their errors.",
                    result.failed,
                )
                % {"count": result.failed},
                messages.ERROR,
            )
