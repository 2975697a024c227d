"""What every sender shares: the request it builds, the row checks, Klaviyo's batch sizes."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django_klaviyo.exceptions import KlaviyoError
from django_klaviyo.flush.claim import ClaimedRow
from django_klaviyo.flush.context import SendContext
from django_klaviyo.flush.outcomes import ErrorInfo, Located, Outcomes, RowOutcome
from django_klaviyo.rules import limits

# Request sizes come from the one list of Klaviyo limits.
EVENTS_PER_REQUEST = limits.EVENTS_PER_REQUEST
PROFILES_PER_IMPORT_JOB = limits.PROFILES_PER_IMPORT_JOB
IDS_PER_LIST_REQUEST = limits.IDS_PER_LIST_REQUEST
PROFILES_PER_SUBSCRIBE_JOB = limits.PROFILES_PER_SUBSCRIBE_JOB
PROFILES_PER_UNSUBSCRIBE_JOB = limits.PROFILES_PER_UNSUBSCRIBE_JOB
REQUEST_BYTES_BUDGET = limits.REQUEST_BYTES_BUDGET
ITEM_OVERHEAD_BYTES = limits.ITEM_OVERHEAD_BYTES

# Where an error names one profile of a bulk profiles body (Klaviyo's JSON pointer, or the
# client's validation ``field`` path).
PROFILES_POINTER = re.compile(r"/profiles/data/(\d+)")
PROFILES_FIELD = re.compile(r"^profiles\[(\d+)\]")


class InvalidRow(KlaviyoError):
    """An outbox payload that cannot become a Klaviyo request."""


@dataclass
class Parts:
    """The requests one row was split into: it is sent when none remains."""

    remaining: int


@dataclass
class Request:
    kind: str
    key: Any
    rows: list[ClaimedRow]
    # The client call's main argument, and the rows behind each of its items.
    body: Any = None
    index: list[list[ClaimedRow]] = field(default_factory=list)
    # Set when this request carries part of one row's events (see EventSender._split).
    parts: Parts | None = None


def optional_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRow(f"payload[{key!r}] must be a string or null.")
    return value


def encoded_size(value: Any) -> int:
    return len(json.dumps(value, default=str).encode())


class Sender:
    """How one kind of row becomes Klaviyo requests. What it needs of the run sending it
    (client, lease, report, waits) comes with each call of ``resolve`` and ``send``: a
    ``SendContext``."""

    kind: str = ""
    # The database alias of the rows (set by make_senders); local mirrors are updated there.
    using: str = "default"
    # The OutboxEvent.account of the rows it sends (set by make_senders): one set of
    # senders per account.
    account: str = ""

    @property
    def mirrored(self) -> bool:
        """Whether the local mirror (profile links' Klaviyo ids, memberships, consent) is
        this account's: it is the default account's, as Klaviyo ids are per account."""
        return not self.account

    def prepare(self, row: ClaimedRow) -> Any:
        """Validate a row's payload and return what ``plan`` needs; raise to dead-letter it."""
        raise NotImplementedError

    def resolve(
        self, ctx: SendContext, rows: list[ClaimedRow], outcomes: Outcomes
    ) -> list[ClaimedRow]:
        """Look up what the requests need beyond the payload; returns the rows ready to plan."""
        return rows

    def lookups_needed(self, rows: list[ClaimedRow]) -> int:
        """Dry run: how many extra requests ``resolve`` would make."""
        return 0

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        raise NotImplementedError

    def send(self, ctx: SendContext, request: Request) -> Any:
        """Make the request(s) with ``ctx.client``; returns what ``settle`` and
        ``succeeded`` need."""
        raise NotImplementedError

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        return None

    def settle(self, request: Request, result: Any) -> list[RowOutcome] | None:
        """What an accepted request did for each of its rows (``result``: what ``send``
        returned); None: every row was taken (the common case, with no object per row).
        An import or catalog job reports the items it refused after accepting the
        request (``outcomes.refused``, ``outcomes.per_row``)."""
        return None

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        return None

    def dead_lettered(self, dead: list[tuple[ClaimedRow, ErrorInfo]], now: datetime) -> None:
        """Rows of this kind just recorded dead (called in that transaction): a local
        mirror shows the failure with the row's reason."""
        return None
