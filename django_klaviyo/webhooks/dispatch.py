"""Running the handlers of stored webhook items, once on receipt and again on demand."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from django_klaviyo.models import WebhookDelivery, WebhookItem

# Importing the handlers connects the built-in consent receivers.
from django_klaviyo.webhooks import handlers  # noqa: F401
from django_klaviyo.webhooks.signals import klaviyo_webhook_event

logger = logging.getLogger(__name__)


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


def process_item(item: WebhookItem) -> bool:
    """Send ``klaviyo_webhook_event`` for ``item``; True when every receiver succeeded.

    The receivers' writes and the processed flag commit together; if a receiver fails they
    all roll back and the error and traceback are recorded on the item instead.
    """
    try:
        with transaction.atomic():
            responses = klaviyo_webhook_event.send_robust(
                sender=WebhookItem,
                topic=item.topic,
                payload=item.payload,
                item=item,
                delivery=item.delivery,
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
            item.save(update_fields=["processed", "processed_at", "error", "traceback"])
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
        item.save(update_fields=["processed", "error", "traceback"])
        return False
    return True


@dataclass
class ProcessResult:
    processed: int = 0
    failed: int = 0


def process_items(items: Iterable[WebhookItem]) -> ProcessResult:
    """Process ``items`` one by one, then refresh each touched delivery's summary."""
    result = ProcessResult()
    deliveries: dict[object, WebhookDelivery] = {}
    for item in items:
        if process_item(item):
            result.processed += 1
        else:
            result.failed += 1
        deliveries[item.delivery_id] = item.delivery
    for delivery in deliveries.values():
        summarize_delivery(delivery)
    return result


def summarize_delivery(delivery: WebhookDelivery) -> None:
    """A delivery is processed when all its items are; its error names the failures."""
    failed = list(delivery.items.filter(processed=False).values_list("external_id", flat=True)[:20])
    total_failed = delivery.items.filter(processed=False).count()
    delivery.processed = total_failed == 0
    delivery.error = (
        f"{total_failed} item(s) failed in their handlers: {', '.join(failed)}"
        + (" ..." if total_failed > len(failed) else "")
        if total_failed
        else ""
    )
    delivery.save(update_fields=["processed", "error"])
