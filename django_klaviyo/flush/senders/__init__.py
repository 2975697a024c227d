"""One sender per outbox kind; ``make_senders`` gives a flusher its own set."""

from __future__ import annotations

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.flush.claim import ClaimedRow
from django_klaviyo.flush.outcomes import ErrorInfo
from django_klaviyo.flush.senders.base import InvalidRow, Request, Sender
from django_klaviyo.flush.senders.consent import SubscribeSender, UnsubscribeSender
from django_klaviyo.flush.senders.deletion import DeletionSender
from django_klaviyo.flush.senders.events import EventSender
from django_klaviyo.flush.senders.lists import ListItem, ListSender
from django_klaviyo.flush.senders.profiles import ProfileUpsertSender
from django_klaviyo.models import OutboxEvent

Kind = OutboxEvent.Kind

__all__ = [
    "DeletionSender",
    "EventSender",
    "InvalidRow",
    "ListItem",
    "ListSender",
    "ProfileUpsertSender",
    "Request",
    "Sender",
    "SubscribeSender",
    "UnsubscribeSender",
    "make_senders",
    "prepare_rows",
]


def make_senders() -> dict[str, Sender]:
    """One set per flusher: senders keep per-run caches."""
    return {
        Kind.EVENT: EventSender(),
        Kind.PROFILE_UPSERT: ProfileUpsertSender(),
        Kind.LIST_ADD: ListSender(Kind.LIST_ADD),
        Kind.LIST_REMOVE: ListSender(Kind.LIST_REMOVE),
        Kind.SUBSCRIBE: SubscribeSender(),
        Kind.UNSUBSCRIBE: UnsubscribeSender(),
        Kind.PROFILE_DELETION: DeletionSender(),
    }


_BAD_PAYLOAD = (InvalidRow, KlaviyoValidationError, KeyError, TypeError, ValueError, AttributeError)


def prepare_rows(
    sender: Sender, rows: list[ClaimedRow]
) -> tuple[list[ClaimedRow], list[tuple[ClaimedRow, ErrorInfo]]]:
    ready, invalid = [], []
    for row in rows:
        try:
            row.flush_item = sender.prepare(row)
        except _BAD_PAYLOAD as exc:
            invalid.append(
                (row, ErrorInfo(None, "invalid_payload", f"Invalid {row.kind} row: {exc}"))
            )
        else:
            ready.append(row)
    return ready, invalid
