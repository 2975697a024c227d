"""The account column and filter, shown once more than one Klaviyo account is configured
(a single-account admin looks as before). Choices come from the settings, so the filter
runs no DISTINCT over the outbox."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from django_klaviyo import accounts


class AccountFilter(admin.SimpleListFilter):
    title = "Klaviyo account"
    parameter_name = "account"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in accounts.names()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        name = self.value()
        if name is None:
            return queryset
        # "default" is stored as ""; an unknown name (a removed account) is still matched.
        return queryset.filter(account="" if name == accounts.DEFAULT else name)


class AccountColumnMixin:
    """Adds ``account`` to ``list_display`` (after the first column) and the account
    filter to ``list_filter`` when several accounts are configured."""

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = super().get_list_display(request)  # type: ignore[misc]
        if not accounts.several():
            return shown
        return (shown[0], "account_name", *shown[1:])

    def get_list_filter(self, request: HttpRequest) -> Any:
        filters = super().get_list_filter(request)  # type: ignore[misc]
        return (AccountFilter, *filters) if accounts.several() else filters

    @admin.display(description="account", ordering="account")
    def account_name(self, obj: Any) -> str:
        return accounts.display(obj.account)
