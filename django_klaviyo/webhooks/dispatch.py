"""Running the handlers of stored webhook items: each item exactly once.

Every path (a small delivery on receipt, the worker draining large ones, the admin's
"reprocess") goes through :func:`process_claimed`: it locks the items it will handle with
``SELECT ... FOR UPDATE SKIP LOCKED``, runs each item's handlers in a savepoint, records
the outcome, and commits once. An item another process holds is skipped, not waited for,
and the row lock lasts until the outcome is committed, so two processors never handle the
same item; a processor that dies mid-batch rolls back and leaves its items pending.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from django_klaviyo.models import WebhookDelivery, WebhookItem

# Importing the handlers connects the built-in consent receivers.
from django_klaviyo.webhooks import handlers  # noqa: F401
from django_klaviyo.webhooks.signals import klaviyo_webhook_event

logger = logging.getLogger(__name__)

# Items one worker transaction claims: bounds how long its row locks are held.
PROCESS_BATCH_SIZE = 200


class HandlersFailed(Exception):
    """One or more receivers raised; carries (receiver name, exception) pairs."""

    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        super().__init__(
            "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in failures)
        )
        self.failures = failures


def _receiver_name(receiver: object) -> str:
    module = getattr(receiver, "__module__", "")
    name = getattr(receiver, "__qualname__", None) or type(receiver).__name__
    return f"{module}.{name}" if module else name


def process_item(item: WebhookItem, *, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Send ``klaviyo_webhook_event`` for ``item``; True when every receiver succeeded.

    The receivers' writes and the processed flag commit together; if a receiver fails they
    all roll back and the error and traceback are recorded on the item instead. Call it
    through :func:`process_claimed`, which holds the item's row lock.
    """
    item.attempts += 1
    try:
        with transaction.atomic(using=using):
            responses = klaviyo_webhook_event.send_robust(
                sender=WebhookItem,
                topic=item.topic,
                payload=item.payload,
                item=item,
                delivery=item.delivery,
                # The Klaviyo account it came to ("": the default one).
                account=item.account,
            )
            failures = [
                (_receiver_name(receiver), result)
                for receiver, result in responses
                if isinstance(result, BaseException)
            ]
            if failures:
                raise HandlersFailed(failures)
            item.processed = True
            item.processed_at = timezone.now()
            item.error = ""
            item.traceback = ""
            item.save(
                using=using,
                update_fields=["processed", "processed_at", "attempts", "error", "traceback"],
            )
    except HandlersFailed as exc:
        logger.error(
            "Klaviyo webhook item %s (%s) failed in its handlers: %s",
            item.external_id,
            item.topic,
            exc,
        )
        item.processed = False
        item.error = str(exc)
        item.traceback = "\n".join(
            "".join(traceback.format_exception(type(err), err, err.__traceback__))
            for _, err in exc.failures
        )
        item.save(using=using, update_fields=["processed", "attempts", "error", "traceback"])
        return False
    return True


@dataclass
class ProcessResult:
    processed: int = 0
    failed: int = 0

    @property
    def handled(self) -> int:
        return self.processed + self.failed


def process_claimed(items: QuerySet[WebhookItem], *, using: str | None = None) -> ProcessResult:
    """Lock the items of ``items`` that no other process holds, run their handlers, commit.

    ``items`` may be sliced (``[:200]``) to bound the batch. Items held elsewhere are
    skipped: the caller sees them neither processed nor failed.
    """
    alias = using or items.db
    result = ProcessResult()
    with transaction.atomic(using=alias):
        claimed = list(items.using(alias).select_for_update(skip_locked=True))
        # One instance per delivery, its raw body (up to WEBHOOK_MAX_BODY_BYTES) loaded only
        # if a receiver reads it: a copy per item would take gigabytes for a large delivery.
        deliveries = (
            WebhookDelivery.objects.using(alias)
            .defer("body", "headers")
            .in_bulk({item.delivery_id for item in claimed})
        )
        for item in claimed:
            item.delivery = deliveries[item.delivery_id]
        for item in claimed:
            if process_item(item, using=alias):
                result.processed += 1
            else:
                result.failed += 1
        # One order for every processor: no two wait on each other's deliveries.
        for key in sorted(deliveries):
            summarize_delivery(deliveries[key])
    return result


def pending_items(using: str | None = None) -> QuerySet[WebhookItem]:
    """Items waiting for their first run, oldest first."""
    return (
        WebhookItem.objects.using(using or DEFAULT_DB_ALIAS)
        .filter(processed=False, attempts=0)
        .order_by("created_at", "pk")
    )


def process_pending(*, limit: int = PROCESS_BATCH_SIZE, using: str | None = None) -> ProcessResult:
    """One batch of the worker's queue (see :func:`process_claimed`)."""
    return process_claimed(pending_items(using)[:limit], using=using)


def process_items(
    items: QuerySet[WebhookItem] | Iterable[WebhookItem], *, using: str | None = None
) -> ProcessResult:
    """Run the handlers of ``items`` again, whatever their state (the admin's "reprocess"),
    in batches; items another process is handling right now are skipped."""
    if isinstance(items, QuerySet):
        alias = using or items.db
        pks = list(items.order_by().values_list("pk", flat=True))
    else:
        listed = list(items)
        alias = using or (listed[0]._state.db if listed else None) or DEFAULT_DB_ALIAS
        pks = [item.pk for item in listed]
    result = ProcessResult()
    for start in range(0, len(pks), PROCESS_BATCH_SIZE):
        chunk = pks[start : start + PROCESS_BATCH_SIZE]
        queryset = WebhookItem.objects.using(alias).filter(pk__in=chunk).order_by("created_at")
        batch = process_claimed(queryset, using=alias)
        result.processed += batch.processed
        result.failed += batch.failed
    return result


def summarize_delivery(delivery: WebhookDelivery) -> None:
    """A delivery is processed when all its items are; its error names the failed ones."""
    unprocessed = delivery.items.filter(processed=False)
    counts = unprocessed.aggregate(
        failed=Count("pk", filter=Q(attempts__gt=0)), pending=Count("pk", filter=Q(attempts=0))
    )
    total_failed = counts["failed"]
    failed = list(unprocessed.filter(attempts__gt=0).values_list("external_id", flat=True)[:20])
    delivery.processed = not (counts["failed"] or counts["pending"])
    delivery.error = (
        f"{total_failed} item(s) failed in their handlers: {', '.join(failed)}"
        + (" ..." if total_failed > len(failed) else "")
        if total_failed
        else ""
    )
    delivery.save(update_fields=["processed", "error"])
