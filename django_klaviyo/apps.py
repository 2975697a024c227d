from __future__ import annotations

from django.apps import AppConfig


class DjangoKlaviyoConfig(AppConfig):
    name = "django_klaviyo"
    label = "django_klaviyo"
    verbose_name = "Klaviyo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers system checks and connects the save receivers (both modules import
        # models, so they load once the app registry is ready).
        from django_klaviyo import checks, receivers, task_queue  # noqa: F401

        receivers.connect_receivers()
        task_queue.connect()
