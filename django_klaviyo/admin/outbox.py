"""The outbox: a dashboard over the changelist, filters, exact-match search, actions."""

from __future__ import annotations

import contextlib
from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.translation import ngettext

from django_klaviyo import health, operations
from django_klaviyo.admin.base import ReadOnlyDetailAdmin, pretty_json
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.identifiers import normalize_phone_number
from django_klaviyo.models import OutboxEvent


def profile_keys_for(term: str) -> set[str]:
    """The ``profile_key`` values a typed search term may mean ("a@x.com" -> "email:a@x.com")."""
    keys = {term}
    if ":" in term:
        prefix, _, value = term.partition(":")
        if prefix == "email":
            keys.add(f"email:{value.lower()}")
        return keys
    if "@" in term:
        keys.add(f"email:{term.lower()}")
        return keys
    keys |= {f"{prefix}:{term}" for prefix in ("external_id", "id", "anonymous_id")}
    with contextlib.suppress(KlaviyoValidationError):
        keys.add(f"phone_number:{normalize_phone_number(term)}")
    return keys


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyDetailAdmin):
    change_list_template = "admin/django_klaviyo/outboxevent/change_list.html"
    list_display = (
        "created_at",
        "kind",
        "metric",
        "profile_key",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error_code",
        "sent_at",
        "outcome_note",
    )
    list_filter = ("status", "kind", "last_error_code", "created_at")
    # Exact matches only (see get_search_results): they use the indexes on big tables.
    search_fields = ("profile_key", "unique_id")
    search_help_text = (
        "Exact email, phone, external id, Klaviyo profile id, profile key "
        "(email:a@example.com) or unique_id."
    )
    ordering = ("-created_at",)
    actions = ("retry_now", "requeue_dead", "discard")
    fieldsets = (
        (None, {"fields": ("id", "kind", "metric", "status", "profile_key", "unique_id")}),
        ("Payload", {"fields": ("pretty_payload",)}),
        (
            "Delivery",
            {
                "fields": (
                    "attempts",
                    "next_attempt_at",
                    "locked_at",
                    "locked_by",
                    "sent_at",
                    "outcome_note",
                    "created_at",
                    "updated_at",
                    "dedupe_key",
                )
            },
        ),
        ("Last error", {"fields": ("last_error_status", "last_error_code", "last_error_detail")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in OutboxEvent._meta.fields] + ["pretty_payload"]

    @admin.display(description="payload")
    def pretty_payload(self, obj: OutboxEvent) -> str:
        return pretty_json(obj.payload)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[OutboxEvent], search_term: str
    ) -> tuple[QuerySet[OutboxEvent], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(profile_key__in=profile_keys_for(term)) | Q(unique_id=term)), False

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 added action_location; older versions take the request alone.
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location=action_location)
        # "discard" replaces it: it leaves rows being sent alone.
        actions.pop("delete_selected", None)
        return actions

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        stats = operations.queue_stats()
        statuses = list(OutboxEvent.Status)
        context = {
            "dashboard": stats,
            "dashboard_statuses": [(status.value, status.label) for status in statuses],
            "dashboard_status_counts": [
                stats.by_status.get(status.value, 0) for status in statuses
            ],
            "dashboard_kinds": [
                (kind.label, [stats.by_kind.get(kind.value, {}).get(s.value, 0) for s in statuses])
                for kind in OutboxEvent.Kind
                if kind.value in stats.by_kind
            ],
            "dashboard_timeline": health.hourly_timeline(24, now=stats.now),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=context)

    def _report(self, request: HttpRequest, selected: int, changed: int, done: str) -> None:
        self.message_user(request, done % {"count": changed}, messages.SUCCESS)
        skipped = selected - changed
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d selected outbox event was left alone "
                    "(its status does not allow it).",
                    "%(count)d selected outbox events were left alone "
                    "(their status does not allow it).",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )

    @admin.action(description="Retry now (dead or retrying rows)", permissions=["change"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        selected = queryset.count()
        changed = operations.retry_now(queryset)
        done = ngettext(
            "%(count)d outbox event was queued for an immediate retry.",
            "%(count)d outbox events were queued for an immediate retry.",
            changed,
        )
        self._report(request, selected, changed, done)

    @admin.action(description="Requeue dead rows", permissions=["change"])
    def requeue_dead(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        selected = queryset.count()
        changed = operations.requeue_dead(queryset)
        done = ngettext(
            "%(count)d dead outbox event was requeued.",
            "%(count)d dead outbox events were requeued.",
            changed,
        )
        self._report(request, selected, changed, done)

    @admin.action(description="Discard (delete, except rows being sent)", permissions=["delete"])
    def discard(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        selected = queryset.count()
        changed = operations.discard(queryset)
        done = ngettext(
            "%(count)d outbox event was discarded.",
            "%(count)d outbox events were discarded.",
            changed,
        )
        self._report(request, selected, changed, done)
