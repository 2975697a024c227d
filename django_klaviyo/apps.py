from __future__ import annotations

from django.apps import AppConfig


class DjangoKlaviyoConfig(AppConfig):
    name = "django_klaviyo"
    label = "django_klaviyo"
    verbose_name = "Klaviyo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks and connects the save receivers (these modules
        # import models, so they load once the app registry is ready).
        from django_klaviyo import checks  # noqa: F401
        from django_klaviyo.catalog import checks as catalog_checks  # noqa: F401
        from django_klaviyo.catalog.receivers import connect_catalog_receivers
        from django_klaviyo.orders import receivers as order_receivers
        from django_klaviyo.outbox import task_queue
        from django_klaviyo.profiles import receivers as user_receivers
        from django_klaviyo.tracking import receivers as tracked_receivers

        order_receivers.connect()
        user_receivers.connect()
        task_queue.connect()
        connect_catalog_receivers()
        tracked_receivers.connect()
