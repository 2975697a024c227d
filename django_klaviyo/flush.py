"""Deliver the outbox to Klaviyo: claim due rows, group them into requests, send, record outcomes.

Delivery is at least once. Rows are claimed in a short transaction and leased to this
flusher (status ``sending``); Klaviyo is called outside any transaction; outcomes are
written in bulk afterwards. A flusher that dies mid-batch leaves its rows ``sending`` until
the lease expires and another flusher reclaims them, so a request may be repeated: events
carry a stable ``unique_id`` and profile, list and consent calls are idempotent upserts.

Outcome policy, per row:

- accepted by Klaviyo: ``sent``;
- retryable failure (429, 5xx, transport, ``error.retryable``): ``retrying`` with
  exponential back-off (at least Klaviyo's Retry-After), ``dead`` after MAX_ATTEMPTS;
- a 400 whose error pointer names an item: only that row is ``dead``, the rest of the
  request is sent again in the same run; a 400 (or client-side validation error) without
  a usable pointer splits the request in halves to isolate the bad rows, within a budget;
- any other client error: ``dead`` with Klaviyo's status, code and detail;
- a rejected API key (401, or 403 with JSON): the whole run stops with ``FlushAborted``,
  unsent rows go back to their previous state without counting the attempt.

Consent: subscribe jobs are asynchronous and may wait on double opt-in, so a sent
``subscribe`` row does not mark the local link subscribed (webhooks or a sync confirm it).
An ``unsubscribe`` takes effect without confirmation, so the local link is marked
``unsubscribed`` (a stronger ``suppressed`` is kept) as soon as Klaviyo accepts the job.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import secrets
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)
from django.db.models import F, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from django_klaviyo import payloads
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import (
    KlaviyoAPIError,
    KlaviyoAuthError,
    KlaviyoDuplicateProfileError,
    KlaviyoError,
    KlaviyoRateLimitError,
    KlaviyoServerError,
    KlaviyoTransportError,
    KlaviyoValidationError,
)
from django_klaviyo.identifiers import clean_profile, profile_key
from django_klaviyo.models import Consent, KlaviyoProfileLink, ListMembership, OutboxEvent

logger = logging.getLogger("django_klaviyo.flush")

Kind = OutboxEvent.Kind
Status = OutboxEvent.Status

EVENTS_PER_REQUEST = 1000
PROFILES_PER_IMPORT_JOB = 10_000
IDS_PER_LIST_REQUEST = 1000
PROFILES_PER_SUBSCRIBE_JOB = 1000
PROFILES_PER_UNSUBSCRIBE_JOB = 100
MAX_REQUEST_BYTES = 5 * 1024 * 1024
# Items are measured one by one; keep room for the JSON:API wrapping the client adds.
REQUEST_BYTES_BUDGET = MAX_REQUEST_BYTES - 256 * 1024
# Per-item wrapping ("type", "attributes", metric/profile "data" objects) the client adds.
ITEM_OVERHEAD_BYTES = 256
# More profile upserts than this in one claim go out as one bulk import job instead.
LARGE_PROFILE_BATCH = 100
# Extra requests one rejected request may cost while isolating its bad rows.
SPLIT_BUDGET = 64
# Keeps ``pk IN (...)`` lists far below SQLite's bound-variable limit.
IN_CHUNK = 500

# Upserts go first so later kinds find the Klaviyo ids they learn; deletions go last
# so nothing in the same batch re-creates a profile that is being erased.
KIND_ORDER = (
    Kind.PROFILE_UPSERT,
    Kind.LIST_ADD,
    Kind.LIST_REMOVE,
    Kind.SUBSCRIBE,
    Kind.UNSUBSCRIBE,
    Kind.EVENT,
    Kind.PROFILE_DELETION,
)

# Where an error names one item: Klaviyo's JSON pointers into the request body, and the
# client's validation ``field`` paths ("entries[3].events[0].time").
_ENTRY_POINTER = re.compile(r"events-bulk-create/data/(\d+)(?:/attributes/events/data/(\d+))?")
_ENTRY_FIELD = re.compile(r"^entries\[(\d+)\](?:\.events\[(\d+)\])?")
_PROFILES_POINTER = re.compile(r"/profiles/data/(\d+)")
_PROFILES_FIELD = re.compile(r"^profiles\[(\d+)\]")
_IDS_POINTER = re.compile(r"^/data/(\d+)")
_IDS_FIELD = re.compile(r"^profile_ids\[(\d+)\]")


class FlushAborted(KlaviyoError):
    """The flusher stopped: the API key was rejected or the database went away."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        # "auth" (a configuration problem) or "database".
        self.reason = reason


class StopSignal(Protocol):
    def is_set(self) -> bool: ...


# ---------------------------------------------------------------------------------------
# Reports


@dataclass
class KindCounts:
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    # Claimed but not attempted (run stopped, or throttled earlier in the batch).
    released: int = 0


@dataclass
class FlushReport:
    kinds: dict[str, KindCounts] = field(default_factory=dict)
    requests: int = 0
    batches: int = 0
    claimed: int = 0
    reclaimed: int = 0
    dry_run: bool = False
    # Dry run only: rows per kind that would be sent, and the requests that would take.
    planned: dict[str, int] = field(default_factory=dict)
    planned_requests: int = 0
    planned_invalid: int = 0
    # Why the run ended: "drained", "stopped", "max_seconds".
    ended: str = ""

    def counts(self, kind: str) -> KindCounts:
        return self.kinds.setdefault(str(kind), KindCounts())

    @property
    def sent(self) -> int:
        return sum(c.sent for c in self.kinds.values())

    @property
    def retrying(self) -> int:
        return sum(c.retrying for c in self.kinds.values())

    @property
    def dead(self) -> int:
        return sum(c.dead for c in self.kinds.values())

    def summary_lines(self) -> list[str]:
        if self.dry_run:
            total = sum(self.planned.values())
            lines = [
                f"Dry run: {total} due row(s) would be sent in {self.planned_requests} "
                f"request(s); {self.planned_invalid} would be dead-lettered as invalid."
            ]
            lines += [f"  {kind}: {n}" for kind, n in sorted(self.planned.items())]
            return lines
        lines = [
            f"Sent {self.sent}, retrying {self.retrying}, dead {self.dead} "
            f"({self.requests} request(s), {self.batches} batch(es)"
            + (f", {self.reclaimed} expired lease(s) reclaimed" if self.reclaimed else "")
            + ")."
        ]
        for kind, c in sorted(self.kinds.items()):
            line = f"  {kind}: sent {c.sent}, retrying {c.retrying}, dead {c.dead}"
            if c.released:
                line += f", released {c.released}"
            lines.append(line)
        return lines


# ---------------------------------------------------------------------------------------
# Claiming


def make_owner() -> str:
    """A lease owner id unique to this flusher: host, process and a random part."""
    return f"{socket.gethostname()[:180]}:{os.getpid()}:{secrets.token_hex(6)}"


def _due(now: datetime, kinds: Sequence[str] | None) -> Any:
    rows = OutboxEvent.objects.filter(status__in=OutboxEvent.DUE_STATUSES, next_attempt_at__lte=now)
    if kinds:
        rows = rows.filter(kind__in=list(kinds))
    return rows


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ClaimedRow:
    """What the flusher reads of a leased outbox row.

    A plain object rather than an ``OutboxEvent``: building a model instance (and
    converting its timestamps) for every row of every batch was a large share of the
    flush's CPU. ``size`` bounds the row's share of an encoded request (None: unknown).
    """

    __slots__ = (
        "attempts",
        "flush_item",
        "kind",
        "locked_at",
        "locked_by",
        "metric",
        "payload",
        "pk",
        "previous_status",
        "profile_key",
        "size",
        "status",
        "unique_id",
    )

    def __init__(
        self,
        pk: Any,
        kind: str,
        payload: Any,
        metric: str,
        unique_id: str,
        profile_key: str,
        attempts: int,
        *,
        status: str = Status.SENDING,
        locked_at: datetime | None = None,
        locked_by: str = "",
        size: int | None = None,
    ) -> None:
        self.pk = pk
        self.kind = kind
        self.payload = payload
        self.metric = metric
        self.unique_id = unique_id
        self.profile_key = profile_key
        self.attempts = attempts
        self.status = status
        self.locked_at = locked_at
        self.locked_by = locked_by
        # Every writer sets ``pending`` together with ``attempts = 0`` and the flusher counts
        # an attempt before a row can become ``retrying``: a first attempt was pending.
        self.previous_status = Status.PENDING if attempts <= 1 else Status.RETRYING
        self.size = size
        self.flush_item: Any = None

    @property
    def id(self) -> Any:
        return self.pk

    def __repr__(self) -> str:
        return f"<ClaimedRow {self.kind} {self.pk} attempts={self.attempts}>"


# The columns a ClaimedRow is built from, in this order.
CLAIMED_COLUMNS = ("id", "kind", "payload", "metric", "unique_id", "profile_key", "attempts")


def _escaped_size(text: str) -> int:
    """An upper bound of the bytes ``text`` (JSON) takes once re-encoded with
    ``ensure_ascii``: a non-ASCII character becomes at most 12 bytes (a \\u surrogate
    pair) and takes at least 2 bytes in UTF-8, hence 5 per extra UTF-8 byte."""
    if text.isascii():
        return len(text)
    return len(text) + 5 * (len(text.encode("utf-8")) - len(text))


def _claimed_rows(
    records: Iterable[Sequence[Any]], *, owner: str, now: datetime | None
) -> list[ClaimedRow]:
    rows = []
    loads = json.loads
    for pk, kind, payload, metric, unique_id, key, attempts in records:
        size = None
        if isinstance(payload, str):
            size = _escaped_size(payload) + len(unique_id)
            try:
                payload = loads(payload)
            except ValueError:
                payload = None  # prepare() dead-letters it with a clear reason
        if not isinstance(pk, uuid.UUID):
            pk = uuid.UUID(str(pk))  # SQLite stores the UUID as hex text
        rows.append(
            ClaimedRow(
                pk,
                kind,
                payload,
                metric,
                unique_id,
                key,
                attempts,
                locked_at=now,
                locked_by=owner,
                size=size,
            )
        )
    return rows


def _column(name: str) -> str:
    return connection.ops.quote_name(OutboxEvent._meta.get_field(name).column)


def _claim_postgres(
    *, owner: str, limit: int, kinds: Sequence[str] | None, now: datetime
) -> list[ClaimedRow]:
    """One statement: lock due rows (skipping those another flusher holds), lease them,
    and return what the flusher needs, oldest first."""
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    pk, status, due_at = _column("id"), _column("status"), _column("next_attempt_at")
    # The due statuses are written as literals so the partial index's predicate matches
    # whatever the parameter binding mode.
    due = ", ".join(f"'{s}'" for s in OutboxEvent.DUE_STATUSES)
    kind_filter = ""
    params: list[Any] = [now]
    if kinds:
        kind_filter = f" AND {_column('kind')} IN ({', '.join(['%s'] * len(kinds))})"
        params += list(kinds)
    params += [limit, Status.SENDING, now, owner, now]
    returned = ", ".join(f"{table}.{_column(c)}" for c in CLAIMED_COLUMNS)
    order = f"{due_at}, {_column('created_at')}"
    # Names come quoted from the model's meta; every value is a parameter.
    sql = (
        f"WITH locked AS (SELECT {pk} FROM {table} WHERE {status} IN ({due}) "  # noqa: S608
        f"AND {due_at} <= %s{kind_filter} ORDER BY {due_at} LIMIT %s FOR UPDATE SKIP LOCKED), "
        f"claimed AS (UPDATE {table} SET {status} = %s, {_column('locked_at')} = %s, "
        f"{_column('locked_by')} = %s, {_column('attempts')} = {_column('attempts')} + 1, "
        f"{_column('updated_at')} = %s FROM locked WHERE {table}.{pk} = locked.{pk} "
        f"AND {table}.{status} IN ({due}) "
        f"RETURNING {returned}, {table}.{due_at}, {table}.{_column('created_at')}) "
        f"SELECT {', '.join(_column(c) for c in CLAIMED_COLUMNS)} FROM claimed ORDER BY {order}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        records = cursor.fetchall()
    return _claimed_rows(records, owner=owner, now=now)


def _claim_sqlite(
    *, owner: str, limit: int, kinds: Sequence[str] | None, now: datetime
) -> list[ClaimedRow]:
    """SQLite 3.35+: one ``UPDATE ... RETURNING``. SQLite runs one writer at a time, so
    no other claimer can take the candidates between the subquery and the update.

    The unary ``+`` keeps SQLite from scanning the status index for the outer condition
    (every due row) instead of looking the subquery's ids up by key: half the cost."""
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    pk, status, due_at = _column("id"), _column("status"), _column("next_attempt_at")
    created_at = _column("created_at")
    due = ", ".join(f"'{s}'" for s in OutboxEvent.DUE_STATUSES)
    when = connection.ops.adapt_datetimefield_value(now)
    params: list[Any] = [Status.SENDING, when, owner, when, when]
    kind_filter = ""
    if kinds:
        kind_filter = f" AND {_column('kind')} IN ({', '.join(['%s'] * len(kinds))})"
        params += list(kinds)
    params.append(limit)
    # Names come quoted from the model's meta; every value is a parameter.
    sql = (
        f"UPDATE {table} SET {status} = %s, {_column('locked_at')} = %s, "  # noqa: S608
        f"{_column('locked_by')} = %s, {_column('attempts')} = {_column('attempts')} + 1, "
        f"{_column('updated_at')} = %s WHERE +{status} IN ({due}) AND {pk} IN "
        f"(SELECT {pk} FROM {table} WHERE {status} IN ({due}) AND {due_at} <= %s{kind_filter} "
        f"ORDER BY {due_at} LIMIT %s) "
        f"RETURNING {', '.join(_column(c) for c in CLAIMED_COLUMNS)}, {due_at}, {created_at}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        records = cursor.fetchall()
    # RETURNING has no order. Stored times are "YYYY-MM-DD HH:MM:SS[.ffffff]" in UTC,
    # so their text sorts as the times do.
    records.sort(key=lambda r: (r[-2], r[-1]))
    width = len(CLAIMED_COLUMNS)
    return _claimed_rows((r[:width] for r in records), owner=owner, now=now)


def _claim_elsewhere(
    *, owner: str, limit: int, kinds: Sequence[str] | None, now: datetime
) -> list[ClaimedRow]:
    """Without row locks: the UPDATE's ``status IN (due)`` condition keeps two claimers
    from taking the same row; the lease then names exactly this batch."""
    lease = {
        "status": Status.SENDING,
        "locked_at": now,
        "locked_by": owner,
        "attempts": F("attempts") + 1,
        "updated_at": now,
    }
    with transaction.atomic():
        pks = list(
            _due(now, kinds).order_by("next_attempt_at").values_list("pk", flat=True)[:limit]
        )
        if not pks:
            return []
        for chunk in _chunks(pks, IN_CHUNK):
            OutboxEvent.objects.filter(pk__in=chunk, status__in=OutboxEvent.DUE_STATUSES).update(
                **lease
            )
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    sql = (
        f"SELECT {', '.join(_column(c) for c in CLAIMED_COLUMNS)} FROM {table} "  # noqa: S608
        f"WHERE {_column('status')} = %s AND {_column('locked_by')} = %s "
        f"ORDER BY {_column('next_attempt_at')}, {_column('created_at')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [Status.SENDING, owner])
        records = cursor.fetchall()
    return _claimed_rows(records, owner=owner, now=now)


def claim_batch(
    *,
    owner: str,
    batch_size: int | None = None,
    kinds: Sequence[str] | None = None,
    now: datetime | None = None,
) -> list[ClaimedRow]:
    """Lease up to ``batch_size`` due rows to ``owner`` and return them (status ``sending``),
    oldest first. Each carries ``previous_status`` so an aborted run can put it back.

    PostgreSQL claims in one statement and skips rows another flusher has locked; SQLite
    (3.35+) in one ``UPDATE ... RETURNING``; elsewhere a conditional UPDATE keeps two
    claimers from taking the same row. An idle poll costs one indexed query.
    """
    now = now or timezone.now()
    limit = batch_size or klaviyo_settings.BATCH_SIZE
    kinds = list(kinds) if kinds else None
    if connection.vendor == "postgresql":
        return _claim_postgres(owner=owner, limit=limit, kinds=kinds, now=now)
    if connection.vendor == "sqlite" and _sqlite_returns_rows():
        return _claim_sqlite(owner=owner, limit=limit, kinds=kinds, now=now)
    return _claim_elsewhere(owner=owner, limit=limit, kinds=kinds, now=now)


def _sqlite_returns_rows() -> bool:
    # UPDATE ... RETURNING came with SQLite 3.35; Django 4.2 supports older ones.
    return connection.Database.sqlite_version_info >= (3, 35, 0)


def reclaim_expired_leases(
    *, now: datetime | None = None, lease_seconds: float | None = None
) -> int:
    """Put rows of crashed flushers (``sending`` past the lease) back to due; returns the count."""
    now = now or timezone.now()
    lease = lease_seconds if lease_seconds is not None else klaviyo_settings.LEASE_SECONDS
    expired = OutboxEvent.objects.filter(
        status=Status.SENDING, locked_at__lt=now - timedelta(seconds=lease)
    )
    if not expired.exists():
        return 0
    count = expired.update(
        status=Status.RETRYING,
        next_attempt_at=now,
        locked_at=None,
        locked_by="",
        updated_at=now,
    )
    if count:
        logger.warning("Reclaimed %d outbox row(s) whose flusher lease expired.", count)
    return count


# ---------------------------------------------------------------------------------------
# Outcomes


@dataclass(frozen=True)
class ErrorInfo:
    status: int | None
    code: str
    detail: str


def error_info(err: BaseException) -> ErrorInfo:
    """What a row records about a failure: Klaviyo's status, code and detail."""
    if isinstance(err, KlaviyoAPIError):
        detail = err.detail or err.title or str(err)
        if err.pointer:
            detail = f"{detail} (at {err.pointer})"
        if isinstance(err, KlaviyoDuplicateProfileError) and err.duplicate_profile_id:
            detail = f"{detail} duplicate_profile_id={err.duplicate_profile_id}"
        return ErrorInfo(err.status, (err.code or "")[:64], detail)
    if isinstance(err, KlaviyoTransportError):
        return ErrorInfo(None, "timeout" if err.timeout else "transport_error", str(err))
    if isinstance(err, KlaviyoValidationError):
        where = f" (field {err.field})" if err.field else ""
        return ErrorInfo(None, "invalid_input", f"{err}{where}")
    return ErrorInfo(None, type(err).__name__[:64], str(err))


def _item_error_info(item: Mapping[str, Any], fallback: ErrorInfo) -> ErrorInfo:
    status = item.get("status")
    try:
        status = int(status) if status is not None else fallback.status
    except (TypeError, ValueError):
        status = fallback.status
    detail = str(item.get("detail") or item.get("title") or fallback.detail)
    pointer = _pointer(item)
    if pointer:
        detail = f"{detail} (at {pointer})"
    return ErrorInfo(status, str(item.get("code") or fallback.code)[:64], detail)


def _pointer(item: Mapping[str, Any]) -> str:
    source = item.get("source")
    if isinstance(source, Mapping):
        return str(source.get("pointer") or "")
    return ""


def is_retryable(err: BaseException) -> bool:
    if isinstance(err, KlaviyoAuthError):
        return False
    if isinstance(err, (KlaviyoRateLimitError, KlaviyoServerError, KlaviyoTransportError)):
        return True
    return bool(getattr(err, "retryable", False))


def _splittable(err: BaseException) -> bool:
    """Errors about the request's content that a smaller request may avoid."""
    if isinstance(err, KlaviyoValidationError):
        return True
    return isinstance(err, KlaviyoAPIError) and err.status in (400, 413, 422)


@dataclass
class _Retry:
    rows: list[ClaimedRow]
    info: ErrorInfo
    retry_after: float


@dataclass
class Outcomes:
    """The fate of each claimed row of one batch, written to the database in bulk."""

    sent: list[ClaimedRow] = field(default_factory=list)
    dead: list[tuple[ClaimedRow, ErrorInfo]] = field(default_factory=list)
    retry: list[_Retry] = field(default_factory=list)
    # (row, next_attempt_at or None to keep it): back to the previous state, uncounted.
    release: list[tuple[ClaimedRow, datetime | None]] = field(default_factory=list)
    decided: set[Any] = field(default_factory=set)

    def _take(self, rows: Iterable[ClaimedRow]) -> list[ClaimedRow]:
        taken = [r for r in rows if r.pk not in self.decided]
        self.decided.update(r.pk for r in taken)
        return taken

    def mark_sent(self, rows: Iterable[ClaimedRow]) -> None:
        self.sent.extend(self._take(rows))

    def mark_dead(self, rows: Iterable[ClaimedRow], info: ErrorInfo) -> None:
        self.dead.extend((r, info) for r in self._take(rows))

    def mark_retry(self, rows: Iterable[ClaimedRow], err: BaseException) -> None:
        taken = self._take(rows)
        if taken:
            retry_after = float(getattr(err, "retry_after", None) or 0.0)
            self.retry.append(_Retry(taken, error_info(err), retry_after))

    def mark_release(self, rows: Iterable[ClaimedRow], until: datetime | None = None) -> None:
        self.release.extend((r, until) for r in self._take(rows))


def _fail(rows: list[ClaimedRow], err: BaseException, outcomes: Outcomes) -> bool:
    """Record a failed call for ``rows``; False when later calls should wait (retryable)."""
    if is_retryable(err):
        outcomes.mark_retry(rows, err)
        return False
    outcomes.mark_dead(rows, error_info(err))
    return True


# ---------------------------------------------------------------------------------------
# Requests per kind


# Rows an error points at, by pk, with what each records.
Located = dict[Any, tuple[ClaimedRow, ErrorInfo]]


class InvalidRow(KlaviyoError):
    """An outbox payload that cannot become a Klaviyo request."""


@dataclass
class Request:
    kind: str
    key: Any
    rows: list[ClaimedRow]
    # The client call's main argument, and the rows behind each of its items.
    body: Any = None
    index: list[list[ClaimedRow]] = field(default_factory=list)


def _is_mapping(value: Any) -> bool:
    # Payloads come from JSON: a dict, whose exact type test is far cheaper than the ABC's.
    return type(value) is dict or isinstance(value, Mapping)


def _require_mapping(payload: Any, key: str) -> Mapping[str, Any]:
    value = payload.get(key) if _is_mapping(payload) else None
    if not _is_mapping(value):
        raise InvalidRow(f"payload[{key!r}] must be an object.")
    return value


def _optional_str(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRow(f"payload[{key!r}] must be a string or null.")
    return value


def _encoded_size(value: Any) -> int:
    return len(json.dumps(value, default=str).encode())


def _rows_at(match: re.Match[str] | None, index: list[list[ClaimedRow]]) -> list[ClaimedRow]:
    """The rows behind item ``group(1)`` (narrowed to sub-item ``group(2)`` if any)."""
    if not match or int(match.group(1)) >= len(index):
        return []
    rows = index[int(match.group(1))]
    if match.re.groups >= 2 and match.group(2) is not None:
        sub = int(match.group(2))
        return [rows[sub]] if sub < len(rows) else []
    return rows


def locate_rows(
    err: KlaviyoError,
    index: list[list[ClaimedRow]],
    *,
    pointer: re.Pattern[str],
    field: re.Pattern[str],
) -> Located | None:
    """Map each error of ``err`` to the rows it names; None unless every error names rows."""
    if isinstance(err, KlaviyoValidationError):
        rows = _rows_at(field.match(err.field or ""), index)
        info = error_info(err)
        return {row.pk: (row, info) for row in rows} or None
    if not isinstance(err, KlaviyoAPIError):
        return None
    items = err.errors or [{"source": {"pointer": err.pointer or ""}}]
    fallback = error_info(err)
    located: Located = {}
    for item in items:
        if not isinstance(item, Mapping):
            return None
        rows = _rows_at(pointer.search(_pointer(item)), index)
        if not rows:
            return None
        for row in rows:
            located[row.pk] = (row, _item_error_info(item, fallback))
    return located


class Sender:
    """How one kind of row becomes Klaviyo requests."""

    kind: str = ""

    def prepare(self, row: ClaimedRow) -> Any:
        """Validate a row's payload and return what ``plan`` needs; raise to dead-letter it."""
        raise NotImplementedError

    def resolve(
        self, flusher: Flusher, rows: list[ClaimedRow], outcomes: Outcomes
    ) -> list[ClaimedRow]:
        """Look up what the requests need beyond the payload; returns the rows ready to plan."""
        return rows

    def lookups_needed(self, rows: list[ClaimedRow]) -> int:
        """Dry run: how many extra requests ``resolve`` would make."""
        return 0

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        raise NotImplementedError

    def send(self, client: Any, request: Request) -> Any:
        raise NotImplementedError

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        return None

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        return None


@dataclass(slots=True)
class _EventItem:
    profile: dict[str, Any]
    # The same identity the client uses to spot repeated unique_ids.
    identity: str
    # Rows with equal profiles share one entry of the bulk request.
    entry_key: Any
    # The row's own event, then those of its payload's "expand" (None: none), all for
    # this profile. Few objects per row: each one lives for the whole batch, and the
    # garbage collector's passes over them were a measurable share of the flush.
    event: dict[str, Any]
    expanded: list[dict[str, Any]] | None = None

    @property
    def count(self) -> int:
        return 1 + len(self.expanded) if self.expanded else 1

    def events(self) -> list[dict[str, Any]]:
        return [self.event, *self.expanded] if self.expanded else [self.event]

    def repeat_keys(self) -> list[tuple[str, str, str]]:
        """(profile, metric, unique_id) of each event with a unique_id: Klaviyo fails a
        whole request that holds one twice."""
        if not self.expanded:  # the common case, once per row and plan
            unique_id = self.event["unique_id"]
            return [(self.identity, self.event["metric"], unique_id)] if unique_id else []
        return [
            (self.identity, e["metric"], e["unique_id"]) for e in self.events() if e["unique_id"]
        ]


_EXPAND_KEYS = frozenset({"metric", "unique_id", "properties", "value"})


def _metric(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) >= 128:
        raise InvalidRow(f"{where} must be a non-empty string shorter than 128 characters.")
    return value


def _properties(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not _is_mapping(value):
        raise InvalidRow(f"{where} must be an object.")
    return value


def _event_value(value: Any, where: str) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRow(f"{where} must be a number or null.")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRow(f"{where} must be a finite number.")
    return value


def _event_time(value: Any) -> str | None:
    """An ISO-8601 time with an offset, as the bulk endpoint takes it (None: now)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidRow("payload['time'] must be an ISO-8601 string or null.")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        # Python 3.10's fromisoformat takes only its own output ("Z" is not in it).
        try:
            parsed = parse_datetime(value.strip())
        except ValueError:
            parsed = None
    if parsed is None:
        raise InvalidRow(f"payload['time'] {value!r} is not an ISO-8601 date-time.")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidRow(f"payload['time'] {value!r} has no UTC offset.")
    return value if value[10:11] == "T" else parsed.isoformat()


class EventSender(Sender):
    kind = Kind.EVENT

    def __init__(self) -> None:
        # The last cleaned profile per profile_key, with the raw dict it came from: an
        # order's events repeat one profile, and validating an email is the costliest
        # step of preparing an event. Rows whose profiles are equal share the cleaned
        # dict, and its identity groups them into one bulk entry.
        self._profiles: dict[str, tuple[Mapping[str, Any], dict[str, Any], str]] = {}

    def _clean_profile(self, key: str, raw: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
        cached = self._profiles.get(key)
        if cached is not None and cached[0] == raw:
            return cached[1], cached[2]
        profile = payloads.clean_event_profile(raw)
        # The same identity the client uses to spot repeated unique_ids.
        identity = profile_key(profile)
        if len(self._profiles) >= 10_000:
            self._profiles.clear()
        self._profiles[key] = (raw, profile, identity)
        return profile, identity

    def prepare(self, row: ClaimedRow) -> _EventItem:
        """Validate everything the client's trusted path does not check again."""
        payload = row.payload
        profile, identity = self._clean_profile(
            row.profile_key, _require_mapping(payload, "profile")
        )
        metric = _metric(payload.get("metric") or row.metric, "metric")
        time = _event_time(payload.get("time"))
        currency = _optional_str(payload, "value_currency")
        event = {
            "metric": metric,
            "properties": _properties(payload.get("properties"), "payload['properties']"),
            "time": time,
            "value": _event_value(payload.get("value"), "payload['value']"),
            "value_currency": currency,
            "unique_id": row.unique_id or None,
        }
        # Live rows keep their cleaned dicts alive, so ids cannot repeat within a batch.
        item = _EventItem(profile, identity, id(profile), event)
        expand = payload.get("expand")
        if expand is not None:
            item.expanded = self._expanded(expand, time, currency)
            keys = item.repeat_keys()
            if len(set(keys)) < len(keys):
                raise InvalidRow(
                    "two of the row's events share a metric and unique_id; Klaviyo would "
                    "reject every request carrying them."
                )
            if item.count > EVENTS_PER_REQUEST:
                raise InvalidRow(
                    f"the row carries {item.count} events; a request holds at most "
                    f"{EVENTS_PER_REQUEST}."
                )
        return item

    def _expanded(self, expand: Any, time: str | None, currency: str | None) -> list[dict]:
        """The extra events of an ``expand`` list: the row's profile, time and currency."""
        if not isinstance(expand, list):
            raise InvalidRow("payload['expand'] must be a list.")
        events = []
        for i, item in enumerate(expand):
            where = f"payload['expand'][{i}]"
            if not isinstance(item, Mapping):
                raise InvalidRow(f"{where} must be an object.")
            unknown = sorted(set(item) - _EXPAND_KEYS)
            if unknown:
                raise InvalidRow(f"{where} has an unknown key {unknown[0]!r}.")
            unique_id = item.get("unique_id")
            if not isinstance(unique_id, str) or not unique_id:
                raise InvalidRow(f"{where}['unique_id'] must be a non-empty string.")
            events.append(
                {
                    "metric": _metric(item.get("metric"), f"{where}['metric']"),
                    "properties": _properties(item.get("properties"), f"{where}['properties']"),
                    "time": time,
                    "value": _event_value(item.get("value"), f"{where}['value']"),
                    "value_currency": currency,
                    "unique_id": unique_id,
                }
            )
        return events

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        requests: list[Request] = []
        pending = rows
        while pending:
            # Klaviyo fails a whole bulk request that repeats (profile, metric, unique_id),
            # so a row holding a repeat waits for the next request.
            deferred: list[ClaimedRow] = []
            current: list[ClaimedRow] = []
            seen: set[tuple[str, str, str]] = set()
            events = 0
            for row in pending:
                item: _EventItem = row.flush_item
                keys = item.repeat_keys()
                if keys and not seen.isdisjoint(keys):
                    deferred.append(row)
                    continue
                count = item.count
                if events + count > EVENTS_PER_REQUEST:
                    requests.extend(self._sized(current))
                    current, seen, events = [], set(), 0
                current.append(row)
                events += count
                seen.update(keys)
            if current:
                requests.extend(self._sized(current))
            pending = deferred
        return requests

    def _sized(self, rows: list[ClaimedRow]) -> list[Request]:
        """One request for ``rows``, or halves of them until each fits in 5 MB.

        The rows' stored sizes bound the body's when known (each row's payload holds its
        events and its profile); only a request they cannot clear is measured, once per
        request rather than per event. A single row too large for any request still goes
        out alone, and the client's size check dead-letters it.
        """
        request = self._request(rows)
        if len(rows) == 1:
            return [request]
        overhead = ITEM_OVERHEAD_BYTES * (len(request.index) + sum(len(i) for i in request.index))
        sizes = [row.size for row in rows]
        if None not in sizes and sum(sizes) + overhead <= REQUEST_BYTES_BUDGET:
            return [request]
        size = len(json.dumps(request.body, separators=(",", ":"), default=str))
        if size + overhead <= REQUEST_BYTES_BUDGET:
            return [request]
        half = len(rows) // 2
        return self._sized(rows[:half]) + self._sized(rows[half:])

    def _request(self, rows: list[ClaimedRow]) -> Request:
        entries: dict[Any, list[ClaimedRow]] = {}
        for row in rows:
            entries.setdefault(row.flush_item.entry_key, []).append(row)
        body = []
        index = []
        ordered = []
        for entry_rows in entries.values():
            events = []
            # One row per event, so an error pointing at an event finds its row.
            event_rows = []
            for row in entry_rows:
                item = row.flush_item
                events.append(item.event)
                event_rows.append(row)
                if item.expanded:
                    events += item.expanded
                    event_rows += [row] * len(item.expanded)
            # A copy: entries must not share one mutable dict with the cache.
            body.append({"profile": dict(entry_rows[0].flush_item.profile), "events": events})
            index.append(event_rows)
            ordered.extend(entry_rows)
        return Request(self.kind, None, ordered, body, index)

    def send(self, client: Any, request: Request) -> Any:
        # Every profile and event was validated by prepare(): the client only wraps them.
        return client.bulk_create_events(request.body, validated=True)

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        return locate_rows(err, request.index, pointer=_ENTRY_POINTER, field=_ENTRY_FIELD)


def _link_for(identifiers: Mapping[str, Any]) -> KlaviyoProfileLink | None:
    """The local link that best matches a profile's identifiers (external_id, email, phone)."""
    for key, lookup in (
        ("external_id", "external_id"),
        ("email", "email__iexact"),
        ("phone_number", "phone_number"),
    ):
        value = identifiers.get(key)
        if value:
            link = KlaviyoProfileLink.objects.filter(**{lookup: value}).order_by("pk").first()
            if link is not None:
                return link
    return None


def remember_profile_id(identifiers: Mapping[str, Any], klaviyo_id: str | None) -> bool:
    """Store Klaviyo's profile id on the link matching ``identifiers``; True if stored."""
    if not klaviyo_id:
        return False
    link = _link_for(identifiers)
    if link is None or link.klaviyo_id == klaviyo_id:
        return link is not None
    try:
        with transaction.atomic():
            KlaviyoProfileLink.objects.filter(pk=link.pk).update(
                klaviyo_id=klaviyo_id, last_synced_at=timezone.now(), updated_at=timezone.now()
            )
    except IntegrityError:
        # Another link already holds this id (merged profiles); leave both as they are.
        logger.warning(
            "Klaviyo profile %s is already linked to another local profile; link %s not updated.",
            klaviyo_id,
            link.pk,
        )
        return False
    return True


def _profile_attributes(row: ClaimedRow) -> dict[str, Any]:
    return clean_profile(_require_mapping(row.payload, "profile"))


class ProfileUpsertSender(Sender):
    kind = Kind.PROFILE_UPSERT

    def prepare(self, row: ClaimedRow) -> tuple[dict[str, Any], int]:
        attributes = _profile_attributes(row)
        size = _encoded_size(attributes) + ITEM_OVERHEAD_BYTES
        if size > 100 * 1024:
            raise InvalidRow(f"profile is {size} bytes encoded; Klaviyo accepts at most 100 KB.")
        return attributes, size

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        if len(rows) <= LARGE_PROFILE_BATCH:
            return [Request(self.kind, "one", [r], r.flush_item[0], [[r]]) for r in rows]
        requests: list[Request] = []
        current: list[ClaimedRow] = []
        size = 0
        for row in rows:
            row_size = row.flush_item[1]
            if current and (
                len(current) >= PROFILES_PER_IMPORT_JOB or size + row_size > REQUEST_BYTES_BUDGET
            ):
                requests.append(self._bulk(current))
                current, size = [], 0
            current.append(row)
            size += row_size
        if current:
            requests.append(self._bulk(current))
        return requests

    def _bulk(self, rows: list[ClaimedRow]) -> Request:
        return Request(
            self.kind, "bulk", rows, [r.flush_item[0] for r in rows], [[r] for r in rows]
        )

    def send(self, client: Any, request: Request) -> Any:
        if request.key == "bulk":
            return client.bulk_import_profiles(request.body)
        return client.upsert_profile(request.body)

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        if request.key != "bulk":
            return None
        return locate_rows(err, request.index, pointer=_PROFILES_POINTER, field=_PROFILES_FIELD)

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        if request.key == "bulk":
            job_id = result.get("id") if isinstance(result, Mapping) else None
            logger.info(
                "Klaviyo accepted profile bulk import job %s for %d profile(s).",
                job_id,
                len(request.rows),
            )
            return
        profile_id = result.get("id") if isinstance(result, Mapping) else None
        remember_profile_id(request.body, profile_id)


@dataclass
class _ListItem:
    list_id: str
    identifiers: dict[str, Any]
    profile_key: str
    profile_id: str | None = None


class ListSender(Sender):
    """list_add / list_remove: Klaviyo takes profile ids only, so learn them first."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def prepare(self, row: ClaimedRow) -> _ListItem:
        list_id = _optional_str(row.payload, "list_id")
        if not list_id:
            raise InvalidRow("payload['list_id'] is required.")
        identifiers = _profile_attributes(row)
        klaviyo_id = identifiers.pop("id", None)
        key = row.profile_key or profile_key(identifiers)
        return _ListItem(list_id, identifiers, key, str(klaviyo_id) if klaviyo_id else None)

    def _known_ids(self, rows: list[ClaimedRow]) -> None:
        """Fill ids from local links, in one query per identifier kind."""
        missing = [r for r in rows if not r.flush_item.profile_id]
        for key, field_name in (
            ("external_id", "external_id"),
            ("email", "email"),
            ("phone_number", "phone_number"),
        ):
            values = {
                str(r.flush_item.identifiers[key])
                for r in missing
                if r.flush_item.identifiers.get(key)
            }
            if not values:
                continue
            known: dict[str, str] = {}
            for chunk in _chunks(sorted(values), IN_CHUNK):
                lookup = Q(**{f"{field_name}__in": chunk})
                if key == "email":
                    # Stored emails may differ in case from the payload's.
                    lookup = Q()
                    for value in chunk:
                        lookup |= Q(email__iexact=value)
                for value, klaviyo_id in (
                    KlaviyoProfileLink.objects.filter(lookup, klaviyo_id__isnull=False)
                    .order_by("-pk")
                    .values_list(field_name, "klaviyo_id")
                ):
                    known[value.lower() if key == "email" else value] = klaviyo_id
            for row in missing:
                value = row.flush_item.identifiers.get(key)
                if value and not row.flush_item.profile_id:
                    found = known.get(str(value).lower() if key == "email" else str(value))
                    row.flush_item.profile_id = found
            missing = [r for r in missing if not r.flush_item.profile_id]

    def lookups_needed(self, rows: list[ClaimedRow]) -> int:
        self._known_ids(rows)
        return len({r.flush_item.profile_key for r in rows if not r.flush_item.profile_id})

    def resolve(
        self, flusher: Flusher, rows: list[ClaimedRow], outcomes: Outcomes
    ) -> list[ClaimedRow]:
        self._known_ids(rows)
        unknown: dict[str, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            if not row.flush_item.profile_id:
                unknown[row.flush_item.profile_key].append(row)
        groups = deque(unknown.values())
        while groups:
            group = groups.popleft()
            identifiers = group[0].flush_item.identifiers
            try:
                profile_id = self._lookup(flusher, identifiers)
            except KlaviyoAuthError:
                raise
            except KlaviyoError as err:
                if not _fail(group, err, outcomes):
                    # Throttled or failing: the other lookups would fare no better now.
                    until = flusher.retry_at(1, getattr(err, "retry_after", None))
                    for rest in groups:
                        outcomes.mark_release(rest, until)
                    groups.clear()
                continue
            for row in group:
                row.flush_item.profile_id = profile_id
            if profile_id:
                remember_profile_id(identifiers, profile_id)
            else:
                # Removing a profile Klaviyo does not know: nothing is on the list.
                outcomes.mark_sent(group)
        return [r for r in rows if r.pk not in outcomes.decided]

    def _lookup(self, flusher: Flusher, identifiers: dict[str, Any]) -> str | None:
        flusher.report.requests += 1
        if self.kind == Kind.LIST_REMOVE:
            # Don't create a profile just to take it off a list.
            found = flusher.client.find_profile(
                email=identifiers.get("email"),
                phone_number=identifiers.get("phone_number"),
                external_id=identifiers.get("external_id"),
            )
            return str(found["id"]) if found and found.get("id") else None
        data = flusher.client.upsert_profile(identifiers)
        profile_id = data.get("id") if isinstance(data, Mapping) else None
        if not profile_id:
            raise KlaviyoValidationError("Klaviyo's profile-import answer carried no profile id.")
        return str(profile_id)

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        by_list: dict[str, dict[str, list[ClaimedRow]]] = {}
        for row in rows:
            item: _ListItem = row.flush_item
            by_list.setdefault(item.list_id, {}).setdefault(str(item.profile_id), []).append(row)
        requests = []
        for list_id, by_id in by_list.items():
            ids = list(by_id)
            for chunk in _chunks(ids, IDS_PER_LIST_REQUEST):
                index = [by_id[i] for i in chunk]
                rows_ = [r for group in index for r in group]
                requests.append(Request(self.kind, list_id, rows_, list(chunk), index))
        return requests

    def send(self, client: Any, request: Request) -> Any:
        if self.kind == Kind.LIST_ADD:
            return client.add_profiles_to_list(request.key, request.body)
        return client.remove_profiles_from_list(request.key, request.body)

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        return locate_rows(err, request.index, pointer=_IDS_POINTER, field=_IDS_FIELD)

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        ListMembership.objects.filter(
            klaviyo_list__klaviyo_id=request.key, profile__klaviyo_id__in=request.body
        ).update(synced_member=self.kind == Kind.LIST_ADD, synced_at=now, updated_at=now)


_CHANNELS = ("email", "sms")


@dataclass
class _ConsentItem:
    key: tuple[Any, ...]
    profile: dict[str, Any]


class SubscribeSender(Sender):
    kind = Kind.SUBSCRIBE
    per_job = PROFILES_PER_SUBSCRIBE_JOB

    def _contact(self, row: ClaimedRow) -> tuple[dict[str, Any], list[str]]:
        raw = _require_mapping(row.payload, "profile")
        contact = {k: raw[k] for k in ("email", "phone_number") if raw.get(k)}
        if not contact:
            raise InvalidRow("consent changes need the profile's email or phone_number.")
        contact = clean_profile(contact)
        channels = row.payload.get("channels")
        if (
            not isinstance(channels, list)
            or not channels
            or any(c not in _CHANNELS for c in channels)
        ):
            raise InvalidRow("payload['channels'] must list 'email' and/or 'sms'.")
        for channel, needs in (("email", "email"), ("sms", "phone_number")):
            if channel in channels and needs not in contact:
                raise InvalidRow(f"the {channel} channel needs the profile's {needs}.")
        return contact, list(dict.fromkeys(channels))

    def prepare(self, row: ClaimedRow) -> _ConsentItem:
        contact, channels = self._contact(row)
        list_id = _optional_str(row.payload, "list_id")
        source = _optional_str(row.payload, "custom_source")
        consented_at = _optional_str(row.payload, "consented_at")
        profile = {**contact, "channels": channels}
        if consented_at:
            profile["consented_at"] = consented_at
        return _ConsentItem((list_id, source, bool(consented_at)), profile)

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        groups: dict[tuple[Any, ...], list[ClaimedRow]] = {}
        for row in rows:
            groups.setdefault(row.flush_item.key, []).append(row)
        return [
            Request(
                self.kind,
                key,
                list(chunk),
                [r.flush_item.profile for r in chunk],
                [[r] for r in chunk],
            )
            for key, group in groups.items()
            for chunk in _chunks(group, self.per_job)
        ]

    def send(self, client: Any, request: Request) -> Any:
        list_id, source, historical = request.key
        return client.subscribe_profiles(
            request.body, list_id=list_id, custom_source=source, historical_import=historical
        )

    def locate(self, err: KlaviyoError, request: Request) -> Located | None:
        return locate_rows(err, request.index, pointer=_PROFILES_POINTER, field=_PROFILES_FIELD)


class UnsubscribeSender(SubscribeSender):
    kind = Kind.UNSUBSCRIBE
    per_job = PROFILES_PER_UNSUBSCRIBE_JOB

    def prepare(self, row: ClaimedRow) -> _ConsentItem:
        contact, channels = self._contact(row)
        list_id = _optional_str(row.payload, "list_id")
        return _ConsentItem((list_id,), {**contact, "channels": channels})

    def send(self, client: Any, request: Request) -> Any:
        return client.unsubscribe_profiles(request.body, list_id=request.key[0])

    def succeeded(self, request: Request, result: Any, now: datetime) -> None:
        for profile in request.body:
            link = _link_for(profile)
            if link is None:
                continue
            changes: dict[str, Any] = {}
            for channel in profile["channels"]:
                if getattr(link, f"{channel}_consent") != Consent.SUPPRESSED:
                    changes[f"{channel}_consent"] = Consent.UNSUBSCRIBED
                    changes[f"{channel}_consent_at"] = now
            if changes:
                KlaviyoProfileLink.objects.filter(pk=link.pk).update(**changes, updated_at=now)


class DeletionSender(Sender):
    kind = Kind.PROFILE_DELETION

    def prepare(self, row: ClaimedRow) -> dict[str, str]:
        raw = _require_mapping(row.payload, "profile")
        given = {k: raw[k] for k in ("email", "phone_number", "id") if raw.get(k)}
        if len(given) != 1:
            raise InvalidRow("a deletion names exactly one of email, phone_number or id.")
        if "id" in given:
            return {"profile_id": str(given["id"])}
        return clean_profile(given)

    def plan(self, rows: list[ClaimedRow]) -> list[Request]:
        return [Request(self.kind, None, [r], r.flush_item, [[r]]) for r in rows]

    def send(self, client: Any, request: Request) -> Any:
        return client.request_profile_deletion(**request.body)


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


def _prepare(
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


# ---------------------------------------------------------------------------------------
# The flusher


def validate_kinds(kinds: Iterable[str] | None) -> list[str] | None:
    if kinds is None:
        return None
    chosen = [str(k).strip() for k in kinds if str(k).strip()]
    unknown = sorted(set(chosen) - set(Kind.values))
    if unknown:
        raise KlaviyoValidationError(
            f"Unknown outbox kind(s): {', '.join(unknown)}. Choose from {', '.join(Kind.values)}.",
            field="kinds",
        )
    return chosen or None


class Flusher:
    """One flushing worker: its lease owner id, client, clock and back-off randomness."""

    def __init__(
        self,
        *,
        client: Any = None,
        batch_size: int | None = None,
        kinds: Iterable[str] | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
        jitter: Callable[[], float] | None = None,
        owner: str | None = None,
    ) -> None:
        size = batch_size if batch_size is not None else klaviyo_settings.BATCH_SIZE
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise KlaviyoValidationError(
                f"batch size must be a positive whole number, not {size!r}.", field="batch_size"
            )
        self.batch_size = size
        self.kinds = validate_kinds(kinds)
        self._client = client
        self.clock = clock or timezone.now
        self.sleep = sleep
        # A factor in [0.5, 1]: spreads retries of many rows without exceeding the cap.
        self.jitter = jitter or (lambda: random.uniform(0.5, 1.0))
        self.owner = owner or make_owner()
        self.senders = make_senders()
        self.report = FlushReport()

    @property
    def client(self) -> Any:
        if self._client is None:
            from django_klaviyo.client import get_client

            self._client = get_client()
        return self._client

    # -- back-off ------------------------------------------------------------------------

    def retry_delay(self, attempts: int, retry_after: float | None = None) -> float:
        base = float(klaviyo_settings.RETRY_BASE_SECONDS)
        cap = float(klaviyo_settings.RETRY_MAX_SECONDS)
        backoff = min(cap, base * 2 ** max(attempts - 1, 0)) * self.jitter()
        return max(float(retry_after or 0.0), backoff)

    def retry_at(self, attempts: int, retry_after: float | None = None) -> datetime:
        return self.clock() + timedelta(seconds=self.retry_delay(attempts, retry_after))

    # -- running -------------------------------------------------------------------------

    def run(
        self,
        *,
        dry_run: bool = False,
        stop: StopSignal | Callable[[], bool] | None = None,
        max_seconds: float | None = None,
        loop: bool = False,
        idle_sleep: float = 5.0,
        progress: Callable[[FlushReport], None] | None = None,
    ) -> FlushReport:
        if dry_run:
            return self.plan_due()
        _ = self.client  # fail on configuration before any row is claimed
        started = time.monotonic()

        def should_stop() -> bool:
            if stop is None:
                return False
            return stop.is_set() if hasattr(stop, "is_set") else bool(stop())

        while True:
            if should_stop():
                self.report.ended = "stopped"
                break
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                self.report.ended = "max_seconds"
                break
            if loop and not connection.in_atomic_block:
                close_old_connections()  # a long-running worker drops stale connections
            claimed = self.flush_batch()
            if claimed and progress is not None:
                progress(self.report)
            if claimed:
                continue
            if not loop:
                self.report.ended = "drained"
                break
            self._idle(idle_sleep, stop, max_seconds, started)
        return self.report

    def _idle(self, seconds: float, stop: Any, max_seconds: float | None, started: float) -> None:
        if max_seconds is not None:
            seconds = max(0.0, min(seconds, max_seconds - (time.monotonic() - started)))
        if self.sleep is not None:
            self.sleep(seconds)
        elif isinstance(stop, threading.Event):
            stop.wait(seconds)  # wakes at once when asked to stop
        else:
            time.sleep(seconds)

    def flush_batch(self) -> int:
        """Claim, send and mark one batch; returns the number of rows claimed."""
        try:
            self.report.reclaimed += reclaim_expired_leases(now=self.clock())
            rows = claim_batch(
                owner=self.owner, batch_size=self.batch_size, kinds=self.kinds, now=self.clock()
            )
        except (OperationalError, InterfaceError) as exc:
            raise FlushAborted(
                f"The database is unavailable ({type(exc).__name__}); flushing stopped.",
                reason="database",
            ) from exc
        if not rows:
            return 0
        self.report.batches += 1
        self.report.claimed += len(rows)
        outcomes = Outcomes()
        try:
            self._send(rows, outcomes)
        except KlaviyoAuthError as err:
            # Nothing unsent counts as an attempt: the key is the problem, not the rows.
            outcomes.mark_release(rows)
            self._persist(outcomes)
            raise FlushAborted(
                f"Klaviyo rejected the API key (HTTP {err.status}"
                + (f", {err.code}" if err.code else "")
                + "). Check KLAVIYO['PRIVATE_API_KEY'] and its scopes; flushing stopped and "
                "the claimed rows were put back.",
                reason="auth",
            ) from err
        except (OperationalError, InterfaceError) as exc:
            raise FlushAborted(
                f"The database went away mid-flush ({type(exc).__name__}); the claimed rows stay "
                "'sending' and are retried once their lease expires.",
                reason="database",
            ) from exc
        except BaseException:
            # An unexpected bug: keep what was decided; the rest is reclaimed after the lease.
            self._persist(outcomes)
            raise
        self._persist(outcomes, claimed=len(rows))
        return len(rows)

    def _send(self, rows: list[ClaimedRow], outcomes: Outcomes) -> None:
        by_kind: dict[str, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            by_kind[row.kind].append(row)
        for kind in KIND_ORDER:
            if kind not in by_kind:
                continue
            sender = self.senders[kind]
            ready, invalid = _prepare(sender, by_kind.pop(kind))
            for row, info in invalid:
                outcomes.mark_dead([row], info)
            ready = sender.resolve(self, ready, outcomes)
            self._deliver(sender, sender.plan(ready), outcomes)
        for kind, leftover in by_kind.items():  # a kind this version does not know
            outcomes.mark_dead(leftover, ErrorInfo(None, "unknown_kind", f"Unknown kind {kind!r}."))

    def _deliver(self, sender: Sender, requests: list[Request], outcomes: Outcomes) -> None:
        queue = deque(requests)
        budget = SPLIT_BUDGET
        while queue:
            request = queue.popleft()
            self.report.requests += 1
            try:
                result = sender.send(self.client, request)
            except KlaviyoAuthError:
                raise
            except KlaviyoError as err:
                if is_retryable(err):
                    outcomes.mark_retry(request.rows, err)
                    # The endpoint is throttled or failing: the rest waits, uncounted.
                    until = self.retry_at(1, getattr(err, "retry_after", None))
                    for rest in queue:
                        outcomes.mark_release(rest.rows, until)
                    return
                located = sender.locate(err, request)
                if located:
                    for row, info in located.values():
                        outcomes.mark_dead([row], info)
                    remaining = [r for r in request.rows if r.pk not in located]
                    if remaining and budget > 0:
                        budget -= 1
                        queue.extendleft(reversed(sender.plan(remaining)))
                    elif remaining:
                        outcomes.mark_retry(remaining, err)
                    continue
                if _splittable(err) and len(request.rows) > 1:
                    if budget >= 2:
                        budget -= 2
                        half = len(request.rows) // 2
                        halves = sender.plan(request.rows[:half]) + sender.plan(request.rows[half:])
                        queue.extendleft(reversed(halves))
                    else:
                        # Could not isolate the bad rows in this run; try again later.
                        outcomes.mark_retry(request.rows, err)
                    continue
                outcomes.mark_dead(request.rows, error_info(err))
            else:
                outcomes.mark_sent(request.rows)
                sender.succeeded(request, result, self.clock())

    # -- marking -------------------------------------------------------------------------

    def _persist(self, outcomes: Outcomes, claimed: int | None = None) -> None:
        """Write every outcome of a batch, one UPDATE per outcome group.

        ``claimed``: the batch size, when every claimed row has been decided."""
        now = self.clock()
        max_attempts = int(klaviyo_settings.MAX_ATTEMPTS)
        mine = OutboxEvent.objects.filter(status=Status.SENDING, locked_by=self.owner)
        lease_cleared = {"locked_at": None, "locked_by": "", "updated_at": now}

        def update(rows: Sequence[ClaimedRow], **values: Any) -> int:
            done = 0
            for chunk in _chunks([r.pk for r in rows], IN_CHUNK):
                done += mine.filter(pk__in=chunk).update(**values)
            return done

        dead: dict[ErrorInfo, list[ClaimedRow]] = defaultdict(list)
        for row, info in outcomes.dead:
            dead[info].append(row)
        retrying: dict[tuple[int, float, ErrorInfo], list[ClaimedRow]] = defaultdict(list)
        for retry in outcomes.retry:
            for row in retry.rows:
                if row.attempts >= max_attempts:
                    info = ErrorInfo(
                        retry.info.status,
                        retry.info.code,
                        f"Gave up after {row.attempts} attempts: {retry.info.detail}",
                    )
                    dead[info].append(row)
                else:
                    retrying[(row.attempts, retry.retry_after, retry.info)].append(row)
        released: dict[tuple[str, datetime | None], list[ClaimedRow]] = defaultdict(list)
        for row, until in outcomes.release:
            released[(row.previous_status, until)].append(row)

        # When every claimed row has an outcome, the sent ones are whatever is still
        # leased once the other groups are written: one UPDATE without a long IN list.
        sent_are_the_rest = claimed is not None and len(outcomes.decided) == claimed
        try:
            with transaction.atomic():
                if outcomes.sent and not sent_are_the_rest:
                    update(outcomes.sent, status=Status.SENT, sent_at=now, **lease_cleared)
                for info, rows in dead.items():
                    update(
                        rows,
                        status=Status.DEAD,
                        last_error_status=info.status,
                        last_error_code=info.code,
                        last_error_detail=info.detail,
                        **lease_cleared,
                    )
                for (attempts, retry_after, info), rows in retrying.items():
                    delay = timedelta(seconds=self.retry_delay(attempts, retry_after))
                    update(
                        rows,
                        status=Status.RETRYING,
                        next_attempt_at=now + delay,
                        last_error_status=info.status,
                        last_error_code=info.code,
                        last_error_detail=info.detail,
                        **lease_cleared,
                    )
                for (previous, until), rows in released.items():
                    values: dict[str, Any] = {"status": previous, "attempts": F("attempts") - 1}
                    if until is not None:
                        values["next_attempt_at"] = until
                    update(rows, **values, **lease_cleared)
                if outcomes.sent and sent_are_the_rest:
                    mine.update(status=Status.SENT, sent_at=now, **lease_cleared)
        except (OperationalError, InterfaceError) as exc:
            raise FlushAborted(
                f"The database went away while recording outcomes ({type(exc).__name__}); the "
                "claimed rows stay 'sending' and are retried once their lease expires.",
                reason="database",
            ) from exc

        for kind, n in Counter(row.kind for row in outcomes.sent).items():
            self.report.counts(kind).sent += n
        for kind, n in Counter(row.kind for rows in dead.values() for row in rows).items():
            self.report.counts(kind).dead += n
        for kind, n in Counter(row.kind for rows in retrying.values() for row in rows).items():
            self.report.counts(kind).retrying += n
        for kind, n in Counter(row.kind for row, _until in outcomes.release).items():
            self.report.counts(kind).released += n
        if dead:
            logger.warning("Dead-lettered %d outbox row(s).", sum(len(r) for r in dead.values()))

    # -- dry run -------------------------------------------------------------------------

    def plan_due(self) -> FlushReport:
        """Count what a flush would send now, claiming nothing."""
        report = FlushReport(dry_run=True)
        due = _due(self.clock(), self.kinds).order_by("next_attempt_at", "pk")
        batch: list[Sequence[Any]] = []
        for record in due.values_list(*CLAIMED_COLUMNS).iterator(chunk_size=self.batch_size):
            batch.append(record)
            if len(batch) >= self.batch_size:
                self._plan_batch(_claimed_rows(batch, owner="", now=None), report)
                batch = []
        if batch:
            self._plan_batch(_claimed_rows(batch, owner="", now=None), report)
        self.report = report
        return report

    def _plan_batch(self, rows: list[ClaimedRow], report: FlushReport) -> None:
        by_kind: dict[str, list[ClaimedRow]] = defaultdict(list)
        for row in rows:
            by_kind[row.kind].append(row)
        for kind, kind_rows in by_kind.items():
            sender = self.senders.get(kind)
            if sender is None:
                report.planned_invalid += len(kind_rows)
                continue
            ready, invalid = _prepare(sender, kind_rows)
            report.planned_invalid += len(invalid)
            report.planned[kind] = report.planned.get(kind, 0) + len(ready)
            report.planned_requests += sender.lookups_needed(ready)
            for row in ready:
                if isinstance(row.flush_item, _ListItem) and not row.flush_item.profile_id:
                    row.flush_item.profile_id = f"?{row.flush_item.profile_key}"
            report.planned_requests += len(sender.plan(ready))


def flush_outbox(
    *,
    batch_size: int | None = None,
    kinds: Iterable[str] | None = None,
    dry_run: bool = False,
    client: Any = None,
    stop: StopSignal | Callable[[], bool] | None = None,
    max_seconds: float | None = None,
    loop: bool = False,
    idle_sleep: float = 5.0,
    progress: Callable[[FlushReport], None] | None = None,
    clock: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] | None = None,
    jitter: Callable[[], float] | None = None,
) -> FlushReport:
    """Send due outbox rows to Klaviyo until none are due (or forever with ``loop``).

    ``stop`` (a callable or ``threading.Event``) is checked between batches, so the batch
    in hand always finishes. Raises ``FlushAborted`` when the API key is rejected or the
    database goes away; everything else is recorded on the rows.
    """
    flusher = Flusher(
        client=client, batch_size=batch_size, kinds=kinds, clock=clock, sleep=sleep, jitter=jitter
    )
    return flusher.run(
        dry_run=dry_run,
        stop=stop,
        max_seconds=max_seconds,
        loop=loop,
        idle_sleep=idle_sleep,
        progress=progress,
    )
