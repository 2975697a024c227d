"""The outbox: a dashboard over the changelist, filters, exact-match search, actions.

Built for big tables: no query on a page load scans the outbox (see admin/dashboard.py);
filters have fixed choices or read failing rows through their partial index, search is
an exact profile match on the profile_key index, and the list is newest first along the
time-ordered primary key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext

from django_klaviyo import health
from django_klaviyo.admin.accounts import AccountColumnMixin
from django_klaviyo.admin.base import ReadOnlyDetailAdmin, pretty_json
from django_klaviyo.admin.dashboard import (
    FAILING,
    UNFINISHED,
    OutboxPaginator,
    failing_error_codes,
    outbox_dashboard,
    timeline_chart,
)
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.outbox import actions as operations
from django_klaviyo.rules.identifiers import normalize_phone_number

# Timestamps the dashboard's hourly timeline reads at most, of sent and of dead rows.
TIMELINE_ROWS = 20_000
# Columns the list never shows, left in the database: a page of 100 rows would otherwise
# fetch and decode 100 JSON payloads (about 150 KB). The detail page reads them.
LIST_DEFERRED = ("payload", "last_error_detail")


def list_time(value: dt.datetime | None) -> str:
    """A time in the list: "2026-12-06 18:21:05" in the site's time zone, "-" for none."""
    return "-" if value is None else timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S")


class OutboxChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, *args: Any, **kwargs: Any) -> QuerySet:
        return super().get_queryset(request, *args, **kwargs).defer(*LIST_DEFERRED)


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


class FailingErrorCodeFilter(admin.SimpleListFilter):
    """Failing rows (retrying or dead) by last error code; choices from those rows only,
    not a DISTINCT over the table (a sent row's code is history, not a failure)."""

    title = "last error code (failing rows)"
    parameter_name = "last_error_code"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(code, code) for code in failing_error_codes()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> QuerySet:
        if self.value() is None:
            return queryset
        return queryset.filter(status__in=FAILING, last_error_code=self.value())


@admin.register(OutboxEvent)
class OutboxEventAdmin(AccountColumnMixin, ReadOnlyDetailAdmin):
    change_list_template = "admin/django_klaviyo/outboxevent/change_list.html"
    # The times through list_time (to the second, in the site's time zone), not Django's
    # localized date format: 300 of those cost about 10 ms of a 60 ms page.
    list_display = (
        "created",
        "kind",
        "metric",
        "profile_key",
        "status",
        "attempts",
        "next_attempt",
        "last_error_code",
        "sent",
        "outcome_note",
    )
    # status and kind have fixed choices (no query); created_at's are relative dates.
    list_filter = ("status", "kind", FailingErrorCodeFilter, "created_at")
    # Exact matches only (see get_search_results), served by the profile_key index.
    search_fields = ("profile_key",)
    search_help_text = (
        "Exact email, phone, external id, Klaviyo profile id or profile key (email:a@example.com)."
    )
    # Newest first along the time-ordered primary key: no sort, no created_at index.
    ordering = ("-id",)
    paginator = OutboxPaginator
    actions = ("retry_now", "requeue_dead", "discard")
    fieldsets = (
        (
            None,
            {"fields": ("id", "kind", "metric", "status", "profile_key", "unique_id", "account")},
        ),
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

    def action_checkbox(self, obj: OutboxEvent) -> str:
        # Django renders this through a form widget and its template, once per row: about
        # a third of a 100-row page's time. The same markup, written directly.
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            str(obj.pk),
            format_html(gettext("Select this object for an action - {}"), str(obj)),
        )

    @admin.display(description="created at", ordering="created_at")
    def created(self, obj: OutboxEvent) -> str:
        return list_time(obj.created_at)

    @admin.display(description="next attempt at", ordering="next_attempt_at")
    def next_attempt(self, obj: OutboxEvent) -> str:
        return list_time(obj.next_attempt_at)

    @admin.display(description="sent at", ordering="sent_at")
    def sent(self, obj: OutboxEvent) -> str:
        return list_time(obj.sent_at)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return OutboxChangeList

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
        return queryset.filter(profile_key__in=profile_keys_for(term)), False

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 added action_location; older versions take the request alone.
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location=action_location)
        # "discard" replaces it: it leaves rows in flight alone.
        actions.pop("delete_selected", None)
        return actions

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        stats = outbox_dashboard()
        for line in health.stopped_accounts(stats.now):  # a refused key: say so on the page
            self.message_user(request, f"Klaviyo account {line}", messages.ERROR)
        unfinished = [OutboxEvent.Status(status) for status in UNFINISHED]
        timeline = health.hourly_timeline(24, now=stats.now, limit=TIMELINE_ROWS)
        context = {
            "dashboard": stats,
            "dashboard_statuses": [(status.value, status.label) for status in unfinished],
            "dashboard_status_counts": [stats.by_status[status] for status in unfinished],
            "dashboard_kinds": [
                (
                    kind.label,
                    [stats.unfinished_by_kind.get(kind.value, {}).get(s, 0) for s in unfinished],
                )
                for kind in OutboxEvent.Kind
                if kind.value in stats.unfinished_by_kind
            ],
            "dashboard_timeline": timeline_chart(timeline),
            # Some hours were beyond the rows read (a busy day): the chart says which.
            "dashboard_timeline_partial": any(b.sent is None or b.dead is None for b in timeline),
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

    @admin.action(description="Discard (delete, except rows in flight)", permissions=["delete"])
    def discard(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> None:
        selected = queryset.count()
        changed = operations.discard(queryset)
        done = ngettext(
            "%(count)d outbox event was discarded.",
            "%(count)d outbox events were discarded.",
            changed,
        )
        self._report(request, selected, changed, done)
