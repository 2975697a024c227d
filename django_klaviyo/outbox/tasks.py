"""The flush as a task of Django's Tasks framework: ``django.tasks`` (Django >= 6.0) or the
``django-tasks`` backport below it. Importing this module needs one of the two.

``flush_outbox_task`` drains the outbox once (as ``klaviyo_flush`` without ``--loop``) and
returns the run's figures. ``django_klaviyo.outbox.task_queue`` enqueues it when rows are written;
a periodic job can enqueue it too (docs/deployment.md).
"""

from __future__ import annotations

from typing import Any

try:
    from django.tasks import task  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Django < 6.0
    from django_tasks import task  # type: ignore[import-not-found,no-redef,unused-ignore]

from django_klaviyo.flush import flush_outbox

__all__ = ["flush_outbox_task"]


@task()
def flush_outbox_task(max_seconds: float | None = None) -> dict[str, Any]:
    """Send every due row, then stop; ``max_seconds`` bounds one run."""
    report = flush_outbox(max_seconds=max_seconds)
    return {
        "sent": report.sent,
        "retrying": report.retrying,
        "dead": report.dead,
        "requests": report.requests,
        "ended": report.ended,
    }
