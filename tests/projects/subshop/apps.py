from __future__ import annotations

from django.apps import AppConfig


class SubshopConfig(AppConfig):
    """A subscription business: its subscriptions' lifecycle tracked by settings
    (KLAVIYO["TRACKED_MODELS"], tests/tracking/)."""

    name = "tests.projects.subshop"
    label = "subshop"
    default_auto_field = "django.db.models.BigAutoField"
