"""The flush as a task of Django's Tasks framework: ``django.tasks`` (Django >= 6.0) or the
``django-tasks`` backport below it. Importing this module needs one of the two.

``flush_outbox_task`` drains the outbox once (as ``klaviyo_flush`` without ``--loop``) and
returns the run's figures. ``django_klaviyo.outbox.task_queue`` enqueues it when rows are written;
a periodic job can enqueue it too (docs/deployment.md).

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
from django.db.models import Min
from django.utils import timezone

try:
    from django.tasks import task  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Django < 6.0
    from django_tasks import task  # type: ignore[import-not-found,no-redef,unused-ignore]

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent

__all__ = ["flush_outbox_task"]

logger = logging.getLogger(__name__)
RECOVERY_KEY = "django_klaviyo:flush_task:recovery"
# After a lease's expiry, so the recovery flush finds the rows reclaimable.
RECOVERY_MARGIN_SECONDS = 1.0


@task()
def flush_outbox_task(max_seconds: float | None = None, recovery: bool = False) -> dict[str, Any]:
    """Send every due row, then stop; ``max_seconds`` bounds one run. ``recovery``: a run
    scheduled to pick up the rows of a killed worker (it schedules no other at its start,
    so an idle shop runs none)."""
    alias = klaviyo_settings.FLUSH_TASK_BACKEND or "default"
    lease = dt.timedelta(seconds=float(klaviyo_settings.LEASE_SECONDS))
    if not recovery:
        # If this worker is killed, the rows it leases are recovered when the lease ends.
        _schedule(alias, timezone.now() + lease)
    report = flush_outbox(max_seconds=max_seconds)
    # Rows still leased by other runs (or by a killed one): look again when they expire.
    oldest = oldest_lease()
    if oldest is not None:
        _schedule(alias, oldest + lease)
    return {
        "sent": report.sent,
        "retrying": report.retrying,
        "dead": report.dead,
        "requests": report.requests,
        "ended": report.ended,
    }


def _schedule(alias: str, at: dt.datetime) -> None:
    try:
        schedule_recovery(alias, at)
    except Exception:
        # The periodic flush still recovers the rows (after the lease, as before).
        logger.exception("django-klaviyo: could not schedule a recovery flush on %r.", alias)


def schedule_recovery(alias: str, at: dt.datetime, *, now: dt.datetime | None = None) -> Any:
    """Enqueue a recovery flush on backend ``alias`` to run at ``at`` (plus a second),
    unless one is already pending to run no later; returns the task result, or None.
    Nothing on backends that cannot defer (the periodic flush covers them)."""
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
    rows = OutboxEvent.objects.using(using).filter(status=OutboxEvent.Status.SENDING)
    oldest: dt.datetime | None = rows.aggregate(oldest=Min("locked_at"))["oldest"]
    return oldest
