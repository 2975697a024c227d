"""One sender per outbox kind; ``make_senders`` gives a flusher its own set."""

from __future__ import annotations

import json

from django.db import DEFAULT_DB_ALIAS

from django_klaviyo import rules
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.flush.claim import ClaimedRow
from django_klaviyo.flush.outcomes import ErrorInfo
from django_klaviyo.flush.senders.base import InvalidRow, Request, Sender
from django_klaviyo.flush.senders.catalog import BackInStockSender, CatalogSender
from django_klaviyo.flush.senders.consent import SubscribeSender
from django_klaviyo.flush.senders.coupons import CouponCodeSender, CouponSender
from django_klaviyo.flush.senders.deletion import DeletionSender
from django_klaviyo.flush.senders.events import EventSender
from django_klaviyo.flush.senders.lists import ListItem, ListSender
from django_klaviyo.flush.senders.profiles import ProfileUpsertSender
from django_klaviyo.flush.senders.unsubscribe import UnsubscribeSender
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


def make_senders(using: str | None = None, account: str = "") -> dict[str, Sender]:
    """One set per flusher and account: senders keep per-run caches and write to
    ``using``; ``account``: the ``OutboxEvent.account`` of the rows they send."""
    senders: dict[str, Sender] = {
        Kind.EVENT: EventSender(),
        Kind.PROFILE_UPSERT: ProfileUpsertSender(),
        Kind.LIST_ADD: ListSender(Kind.LIST_ADD),
        Kind.LIST_REMOVE: ListSender(Kind.LIST_REMOVE),
        Kind.SUBSCRIBE: SubscribeSender(),
        Kind.UNSUBSCRIBE: UnsubscribeSender(),
        Kind.PROFILE_DELETION: DeletionSender(),
        Kind.CATALOG_CATEGORY: CatalogSender(Kind.CATALOG_CATEGORY),
        Kind.CATALOG_ITEM: CatalogSender(Kind.CATALOG_ITEM),
        Kind.CATALOG_VARIANT: CatalogSender(Kind.CATALOG_VARIANT),
        Kind.BACK_IN_STOCK: BackInStockSender(),
        Kind.COUPON: CouponSender(),
        Kind.COUPON_CODE: CouponCodeSender(),
    }
    for sender in senders.values():
        sender.using = using or DEFAULT_DB_ALIAS
        sender.account = account
    return senders


def reclean(row: ClaimedRow) -> None:
    payload = row.payload
    if row.kind == Kind.EVENT and row.metric and isinstance(payload, dict):
        payload = {"metric": row.metric, **payload}
    payload = rules.clean(row.kind, payload, unique_id=row.unique_id)
    encoded = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    rules.check_size(row.kind, payload, encoded)
    row.payload = payload
    row.size = len(encoded) + len(row.unique_id)
    row.rules_version = rules.RULES_VERSION


_BAD_PAYLOAD = (InvalidRow, KlaviyoValidationError, KeyError, TypeError, ValueError, AttributeError)


def _reason(row: ClaimedRow, exc: BaseException) -> str:
    if isinstance(exc, _BAD_PAYLOAD):
        return f"Invalid {row.kind} row: {exc}"
    # Anything else (RecursionError, a bug) still ends only this row, with what it was.
    return f"Invalid {row.kind} row: {type(exc).__name__}: {exc}"


def prepare_rows(
    sender: Sender, rows: list[ClaimedRow], recleaned: list[ClaimedRow] | None = None
) -> tuple[list[ClaimedRow], list[tuple[ClaimedRow, ErrorInfo]]]:
    """Hand each row to its sender. Rows of the current rules version were cleaned when
    written and are taken as they are; a row of another version (older, or written by
    hand) is cleaned once here (and added to ``recleaned``, to be saved back), and
    dead-lettered with the reason if it fails."""
    ready, invalid = [], []
    version, prepare = rules.RULES_VERSION, sender.prepare  # looked up once per batch
    for row in rows:
        if row.load_error:
            invalid.append(
                (
                    row,
                    ErrorInfo(None, "invalid_payload", f"Invalid {row.kind} row: {row.load_error}"),
                )
            )
            continue
        old = row.rules_version != version
        try:
            if old:
                reclean(row)
            row.flush_item = prepare(row)
        except Exception as exc:
            invalid.append((row, ErrorInfo(None, "invalid_payload", _reason(row, exc)[:2000])))
        else:
            ready.append(row)
            if old and recleaned is not None:
                recleaned.append(row)
    return ready, invalid
