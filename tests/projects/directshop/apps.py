from __future__ import annotations

from django.apps import AppConfig


class DirectshopConfig(AppConfig):
    """A store whose checkout creates the order in its final status, then its lines."""

    name = "tests.projects.directshop"
    label = "directshop"
    default_auto_field = "django.db.models.BigAutoField"
