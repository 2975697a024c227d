from __future__ import annotations

from django.apps import AppConfig


class DjangoKlaviyoConfig(AppConfig):
    name = "django_klaviyo"
    label = "django_klaviyo"
    verbose_name = "Klaviyo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers system checks and connects the save receivers.
        from django_klaviyo import checks, signals  # noqa: F401

        signals.connect_receivers()
