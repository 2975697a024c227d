from __future__ import annotations

from django.apps import AppConfig


class AltshopConfig(AppConfig):
    """A store shaped unlike the example shop, mapped to Klaviyo by settings only."""

    name = "tests.projects.altshop"
    label = "altshop"
    default_auto_field = "django.db.models.BigAutoField"
