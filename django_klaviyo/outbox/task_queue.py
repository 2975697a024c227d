"""Task-queue mode: with ``KLAVIYO["FLUSH_TASK_BACKEND"]`` set to a backend alias of
Django's ``TASKS`` setting, each ``outbox_ready`` enqueues a flush task on the project's
own task backend, so a shop with a task worker runs no ``klaviyo_flush --loop``.

Debounced: the first signal of a window of ``FLUSH_TASK_DEBOUNCE_SECONDS`` enqueues one
task to run when the window ends (on backends that can defer; at once on others); the
window is held in the rate-limit cache (``RATE_LIMIT_CACHE``), shared by all web
processes when that cache is. Rows written during the window were committed before the
task runs, so it drains them. A periodic flush (docs/deployment.md) covers rows whose
retry time comes later and any enqueue that failed.

Recovery after a killed worker (``schedule_recovery``): a flush task killed mid-run
leaves its rows ``sending`` under a lease (and, on django-tasks-db, its task RUNNING for
good). So each flush task first schedules a recovery flush for when the rows it is about
to lease would expire (``LEASE_SECONDS`` from now), and every flush that ends with rows
still leased by others schedules one for the moment the oldest of those leases expires:
another worker (or the restarted one) reclaims and sends them then, as a second
``klaviyo_flush --loop`` would. One pending recovery at a time (held in the cache).
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
RECOVERY_KEY = "django_klaviyo:flush_task:recovery"
# After a lease's expiry, so the recovery flush finds the rows reclaimable.
RECOVERY_MARGIN_SECONDS = 1.0


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


def schedule_recovery(alias: str, at: dt.datetime, *, now: dt.datetime | None = None) -> Any:
    """Enqueue a recovery flush on backend ``alias`` to run at ``at`` (plus a second),
    unless one is already pending to run no later; returns the task result, or None.
    Nothing on backends that cannot defer (the periodic flush covers them)."""
    from django_klaviyo.outbox.tasks import flush_outbox_task

    now = now or timezone.now()
    at = max(at, now) + dt.timedelta(seconds=RECOVERY_MARGIN_SECONDS)
    cache = caches[klaviyo_settings.RATE_LIMIT_CACHE]
    pending = cache.get(RECOVERY_KEY)
    # A pending recovery that runs sooner reschedules itself if the rows are still held.
    if isinstance(pending, dt.datetime) and now < pending <= at:
        return None
    task = flush_outbox_task.using(backend=alias)
    if not task.get_backend().supports_defer:
        return None
    result = task.using(run_after=at).enqueue(recovery=True)
    cache.set(RECOVERY_KEY, at, timeout=max(1, int((at - now).total_seconds()) + 60))
    return result


def oldest_lease(using: str | None = None) -> dt.datetime | None:
    """When the oldest lease on ``sending`` rows was taken or last renewed (None: none)."""
    from django.db.models import Min

    from django_klaviyo.models import OutboxEvent

    rows = OutboxEvent.objects.using(using).filter(status=OutboxEvent.Status.SENDING)
    oldest: dt.datetime | None = rows.aggregate(oldest=Min("locked_at"))["oldest"]
    return oldest
