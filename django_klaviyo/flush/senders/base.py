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
from django_klaviyo.flush.outcomes import AcceptedJob, ErrorInfo, Located, Outcomes, RowOutcome
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


@dataclass
class JobStarted:
    """What ``CatalogSender.send`` returns when a job is still running: the rows it
    already settled (``failed``: refusals by pk) and those waiting for ``job``."""

    failed: dict[Any, ErrorInfo]
    job: AcceptedJob


@dataclass
class JobOutcome:
    """What a finished job did for its rows: refused ones (by pk), the rows to send again
    as the other operation (``fallback``), and which operation that is."""

    failed: dict[Any, ErrorInfo] = field(default_factory=dict)
    # Refused for now (Klaviyo's status for them is transient): retried.
    retry: dict[Any, ErrorInfo] = field(default_factory=dict)
    fallback: list[ClaimedRow] = field(default_factory=list)
    fallback_op: str = ""


def shape_of(value: Any, depth: int = 0) -> str:
    """A body's shape (keys and types, no values) for a note on a malformed answer."""
    if isinstance(value, Mapping):
        if depth >= 2:
            return "{...}"
        inner = ", ".join(f"{k!r}: {shape_of(v, depth + 1)}" for k, v in list(value.items())[:8])
        return "{" + inner + "}"
    if isinstance(value, list):
        return f"[{len(value)} item(s)]"
    return type(value).__name__


class MalformedAnswer(KlaviyoError):
    """A 2xx answer without what Klaviyo documents (a job without an id): an error at
    once, retried like a failing request, with the body's shape in the row's note."""

    retryable = True


def accepted_job_id(job: Any, what: str) -> str:
    """The id of a job answer, or ``MalformedAnswer`` naming the body's shape."""
    job_id = job.get("id") if isinstance(job, Mapping) else None
    if not isinstance(job_id, str) or not job_id.strip():
        raise MalformedAnswer(
            f"Klaviyo answered {what} with 2xx but no job id; body shape: {shape_of(job)}"[:1000]
        )
    return job_id


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
