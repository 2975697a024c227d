"""Task-queue mode: with ``KLAVIYO["FLUSH_TASK_BACKEND"]`` set to a backend alias of
Django's ``TASKS`` setting, each ``outbox_ready`` enqueues a flush task on the project's
own task backend, so a shop with a task worker runs no ``klaviyo_flush --loop``.

Debounced: the first signal of a window of ``FLUSH_TASK_DEBOUNCE_SECONDS`` enqueues one
task to run when the window ends (on backends that can defer; at once on others); the
window is held in the rate-limit cache (``RATE_LIMIT_CACHE``), shared by all web
processes when that cache is. Rows written during the window were committed before the
task runs, so it drains them. A periodic flush (docs/deployment.md) covers rows whose
retry time comes later and any enqueue that failed.
Recovery after a killed worker: ``django_klaviyo.outbox.tasks``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.core.cache import caches
from django.utils import timezone

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.signals import outbox_ready

logger = logging.getLogger(__name__)
DEBOUNCE_KEY = "django_klaviyo:flush_task:debounce"


def connect() -> None:
    outbox_ready.connect(on_outbox_ready, dispatch_uid="django_klaviyo_flush_task")


def on_outbox_ready(sender: Any = None, **kwargs: Any) -> None:
    alias = klaviyo_settings.FLUSH_TASK_BACKEND
    if not alias:
        return
    try:
        enqueue_flush(alias)
    except Exception:
        # The rows are committed; the periodic flush sends them and klaviyo_status shows
        # the backlog. The store's request must not fail over a wake-up hint.
        logger.exception("django-klaviyo: could not enqueue the flush task on %r.", alias)


def enqueue_flush(alias: str, *, debounce: float | None = None) -> Any:
    """Enqueue one flush task on backend ``alias`` unless one is already pending in this
    debounce window; returns the task result, or None when debounced."""
    from django_klaviyo.outbox.tasks import flush_outbox_task

    seconds = klaviyo_settings.FLUSH_TASK_DEBOUNCE_SECONDS if debounce is None else debounce
    if seconds and not caches[klaviyo_settings.RATE_LIMIT_CACHE].add(
        DEBOUNCE_KEY, 1, timeout=seconds
    ):
        return None
    task = flush_outbox_task.using(backend=alias)
    if seconds and task.get_backend().supports_defer:
        task = task.using(run_after=timezone.now() + dt.timedelta(seconds=seconds))
    return task.enqueue()
