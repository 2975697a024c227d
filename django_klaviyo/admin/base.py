"""Shared admin pieces."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString


def pretty_json(value: Any) -> SafeString:
    """JSON as an indented, escaped <pre> block."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre style="white-space: pre-wrap">{}</pre>', text)


def pretty_json_text(text: str) -> SafeString:
    """A stored JSON text pretty-printed, or shown verbatim if it does not parse."""
    try:
        return pretty_json(json.loads(text))
    except ValueError:
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', text)


class ReadOnlyDetailAdmin(admin.ModelAdmin):
    """Rows are written by the app, never typed in: no add form, and a detail page that
    only shows. Changelist actions still work for users with the change permission."""

    show_full_result_count = False
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)
