"""The flush as a task of Django's Tasks framework: ``django.tasks`` (Django >= 6.0) or the
``django-tasks`` backport below it. Importing this module needs one of the two.

``flush_outbox_task`` drains the outbox once (as ``klaviyo_flush`` without ``--loop``) and
returns the run's figures. ``django_klaviyo.outbox.task_queue`` enqueues it when rows are written;
a periodic job can enqueue it too (docs/deployment.md). Each run also makes sure a worker
killed in the middle of it is recovered from when its lease expires
(``task_queue.schedule_recovery``).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.utils import timezone

try:
    from django.tasks import task  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Django < 6.0
    from django_tasks import task  # type: ignore[import-not-found,no-redef,unused-ignore]

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.flush import flush_outbox
from django_klaviyo.outbox import task_queue

__all__ = ["flush_outbox_task"]

logger = logging.getLogger(__name__)


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
    oldest = task_queue.oldest_lease()
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
        task_queue.schedule_recovery(alias, at)
    except Exception:
        # The periodic flush still recovers the rows (after the lease, as before).
        logger.exception("django-klaviyo: could not schedule a recovery flush on %r.", alias)
