"""Claiming: lease due outbox rows to one flusher, and take back leases of dead flushers."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import F
from django.utils import timezone

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.models import OutboxEvent

logger = logging.getLogger("django_klaviyo.flush")

Status = OutboxEvent.Status

# Keeps ``pk IN (...)`` lists far below SQLite's bound-variable limit.
IN_CHUNK = 500

# Read once per row of every batch.
_PENDING, _RETRYING = Status.PENDING, Status.RETRYING


def make_owner() -> str:
    """A lease owner id unique to this flusher: host, process and a random part."""
    return f"{socket.gethostname()[:180]}:{os.getpid()}:{secrets.token_hex(6)}"


def due_rows(
    now: datetime,
    kinds: Sequence[str] | None,
    using: str | None = None,
    account: str | None = None,
) -> Any:
    rows = OutboxEvent.objects.using(using).filter(
        status__in=OutboxEvent.DUE_STATUSES, next_attempt_at__lte=now
    )
    if kinds:
        rows = rows.filter(kind__in=list(kinds))
    if account is not None:
        rows = rows.filter(account=account)
    return rows


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
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
        "load_error",
        "locked_at",
        "locked_by",
        "metric",
        "payload",
        "pk",
        "previous_status",
        "profile_key",
        "rules_version",
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
        rules_version: int = 0,
        *,
        status: str = Status.SENDING,
        locked_at: datetime | None = None,
        locked_by: str = "",
        size: int | None = None,
        load_error: str = "",
    ) -> None:
        self.pk = pk
        self.kind = kind
        self.payload = payload
        self.metric = metric
        self.unique_id = unique_id
        self.profile_key = profile_key
        self.attempts = attempts
        # The rules the payload was cleaned with (see django_klaviyo.rules).
        self.rules_version = rules_version
        self.status = status
        self.locked_at = locked_at
        self.locked_by = locked_by
        # Every writer sets ``pending`` together with ``attempts = 0`` and the flusher counts
        # an attempt before a row can become ``retrying``: a first attempt was pending.
        self.previous_status = _PENDING if attempts <= 1 else _RETRYING
        self.size = size
        self.flush_item: Any = None
        # Why the stored payload could not be read (it is dead-lettered with this reason).
        self.load_error = load_error

    @property
    def id(self) -> Any:
        return self.pk

    def __repr__(self) -> str:
        return f"<ClaimedRow {self.kind} {self.pk} attempts={self.attempts}>"


# The columns a ClaimedRow is built from, in this order.
CLAIMED_COLUMNS = (
    "id",
    "kind",
    "payload",
    "metric",
    "unique_id",
    "profile_key",
    "attempts",
    "rules_version",
)


def _escaped_size(text: str) -> int:
    """An upper bound of the bytes ``text`` (JSON) takes once re-encoded with
    ``ensure_ascii``: a non-ASCII character becomes at most 12 bytes (a \\u surrogate
    pair) and takes at least 2 bytes in UTF-8, hence 5 per extra UTF-8 byte."""
    if text.isascii():
        return len(text)
    return len(text) + 5 * (len(text.encode("utf-8")) - len(text))


_UUID = uuid.UUID
_new_object, _set_attribute = object.__new__, object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def _uuid_of_hex(text: str) -> uuid.UUID:
    """``uuid.UUID(text)`` for the 32 hex digits a UUID is stored as in SQLite, at half
    the cost (every row of every batch has its id converted): the object is made as
    UUID's own constructor makes it (its ``int`` and ``is_safe``), without trying the
    other spellings it accepts. Any other text goes through ``uuid.UUID``."""
    if len(text) != 32 or not text.isalnum() or text[1] in "xX":
        return _UUID(text)
    value = _new_object(_UUID)
    _set_attribute(value, "int", int(text, 16))
    _set_attribute(value, "is_safe", _SAFE_UNKNOWN)
    return value


# json.loads's own decoder's scanner (the C one where available).
_scan_json = json.JSONDecoder().scan_once


def claimed_rows(
    records: Iterable[Sequence[Any]], *, owner: str, now: datetime | None
) -> list[ClaimedRow]:
    """``ClaimedRow``s of ``records`` (``CLAIMED_COLUMNS``, any further column ignored)."""
    rows: list[ClaimedRow] = []
    append = rows.append
    loads, scan = json.loads, _scan_json
    for record in records:
        pk, kind, payload, metric, unique_id, key, attempts, version = record[:8]
        size = None
        load_error = ""
        if isinstance(payload, str):
            size = _escaped_size(payload) + len(unique_id)
            try:
                # The decoder's scanner on the whole text, as json.loads ends up doing
                # without its two Python frames per row; anything else (surrounding
                # whitespace, extra data, no value) goes through json.loads, whose
                # answer or error is the one kept.
                try:
                    value, end = scan(payload, 0)
                except (StopIteration, ValueError, RecursionError):
                    end = -1
                payload = value if end == len(payload) else loads(payload)
            except (ValueError, RecursionError) as exc:
                # A payload written around the rules (by SQL) may be any text: this row
                # is dead-lettered with the reason, the rest of the batch goes on.
                payload = None
                load_error = f"the stored payload cannot be read ({type(exc).__name__}: {exc})"
        if not isinstance(pk, _UUID):
            pk = _uuid_of_hex(pk) if isinstance(pk, str) else _UUID(str(pk))  # SQLite: hex
        append(
            ClaimedRow(
                pk,
                kind,
                payload,
                metric,
                unique_id,
                key,
                attempts,
                version,
                locked_at=now,
                locked_by=owner,
                size=size,
                load_error=load_error,
            )
        )
    return rows


def _quoted_columns(connection: Any) -> Callable[[str], str]:
    """``col(field name)``: the field's column, quoted for ``connection``."""

    def col(name: str) -> str:
        return connection.ops.quote_name(OutboxEvent._meta.get_field(name).column)

    return col


def _account_filter(col: Callable[[str], str], account: str | None) -> tuple[str, list[Any]]:
    """The claim's condition on ``OutboxEvent.account`` (None: every account). The due
    index still leads the plan: its rows are walked in due order and this filters them."""
    if account is None:
        return "", []
    return f" AND {col('account')} = %s", [account]


def _claim_postgres(
    *,
    owner: str,
    limit: int,
    kinds: Sequence[str] | None,
    now: datetime,
    connection: Any,
    account: str | None = None,
) -> list[ClaimedRow]:
    """One statement: lock due rows (skipping those another flusher holds), lease them,
    and return what the flusher needs, oldest first."""
    col = _quoted_columns(connection)
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    pk, status, due_at = col("id"), col("status"), col("next_attempt_at")
    # The due statuses are written as literals so the partial index's predicate matches
    # whatever the parameter binding mode.
    due = ", ".join(f"'{s}'" for s in OutboxEvent.DUE_STATUSES)
    kind_filter = ""
    params: list[Any] = [now]
    if kinds:
        kind_filter = f" AND {col('kind')} IN ({', '.join(['%s'] * len(kinds))})"
        params += list(kinds)
    account_filter, account_params = _account_filter(col, account)
    kind_filter += account_filter
    params += account_params
    params += [limit, Status.SENDING, now, owner, now]
    # The payload comes back as text and is parsed row by row (claimed_rows): a driver
    # parsing it would fail the whole claim on one unreadable row.
    returned = ", ".join(
        f"{table}.{col(c)}::text AS {col(c)}" if c == "payload" else f"{table}.{col(c)}"
        for c in CLAIMED_COLUMNS
    )
    # Ties (rows written by one call share created_at; rows woken together share their
    # due time) in write order: the primary key is time-ordered.
    order = f"{due_at}, {col('created_at')}, {pk}"
    # Names come quoted from the model's meta; every value is a parameter.
    sql = (
        f"WITH locked AS (SELECT {pk} FROM {table} WHERE {status} IN ({due}) "  # noqa: S608
        f"AND {due_at} <= %s{kind_filter} ORDER BY {due_at} LIMIT %s FOR UPDATE SKIP LOCKED), "
        f"claimed AS (UPDATE {table} SET {status} = %s, {col('locked_at')} = %s, "
        f"{col('locked_by')} = %s, {col('attempts')} = {col('attempts')} + 1, "
        f"{col('updated_at')} = %s FROM locked WHERE {table}.{pk} = locked.{pk} "
        f"AND {table}.{status} IN ({due}) "
        f"RETURNING {returned}, {table}.{due_at}, {table}.{col('created_at')}) "
        f"SELECT {', '.join(col(c) for c in CLAIMED_COLUMNS)} FROM claimed ORDER BY {order}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # Row by row: no list of every record kept while the ClaimedRows are made.
        return claimed_rows(cursor, owner=owner, now=now)


def _claim_sqlite(
    *,
    owner: str,
    limit: int,
    kinds: Sequence[str] | None,
    now: datetime,
    connection: Any,
    account: str | None = None,
) -> list[ClaimedRow]:
    """SQLite: one ``UPDATE`` leases the due rows, then one ``SELECT`` reads back the
    rows leased to ``owner`` (of ``kinds`` and ``account``), in one transaction. The
    UPDATE comes first, so the transaction holds SQLite's write lock (one writer at a
    time) before it reads: no other claimer can take the candidates in between, and no
    read lock is ever upgraded (which SQLite refuses to a waiting writer at once).

    Not ``UPDATE ... RETURNING``: SQLite runs RETURNING as a trigger per row, which cost
    more than the UPDATE itself (5.0 vs 4.0 µs per row with the read-back, 1,000-row
    batches). The subquery picks ``rowid``s, so the UPDATE finds each row by its key
    without the primary-key index. The unary ``+`` keeps SQLite from scanning the status
    index for the outer condition (every due row) instead of looking the subquery's rows
    up by key.

    The read-back takes every row leased to ``owner`` of these kinds: a batch's owner
    claims each kind once (``FairClaim`` tops a batch up with other kinds only)."""
    col = _quoted_columns(connection)
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    status, due_at = col("status"), col("next_attempt_at")
    created_at = col("created_at")
    due = ", ".join(f"'{s}'" for s in OutboxEvent.DUE_STATUSES)
    when = connection.ops.adapt_datetimefield_value(now)
    kind_filter = ""
    kind_params: list[Any] = []
    if kinds:
        kind_filter = f" AND {col('kind')} IN ({', '.join(['%s'] * len(kinds))})"
        kind_params = list(kinds)
    account_filter, account_params = _account_filter(col, account)
    kind_filter += account_filter
    kind_params += account_params
    # Names come quoted from the model's meta; every value is a parameter.
    update = (
        f"UPDATE {table} SET {status} = %s, {col('locked_at')} = %s, "  # noqa: S608
        f"{col('locked_by')} = %s, {col('attempts')} = {col('attempts')} + 1, "
        f"{col('updated_at')} = %s WHERE +{status} IN ({due}) AND rowid IN "
        f"(SELECT rowid FROM {table} WHERE {status} IN ({due}) AND {due_at} <= %s{kind_filter} "
        f"ORDER BY {due_at} LIMIT %s)"
    )
    # Ties (rows written by one call share created_at; rows woken together share their
    # due time) in write order: the primary key is time-ordered.
    read = (
        f"SELECT {', '.join(col(c) for c in CLAIMED_COLUMNS)} FROM {table} "  # noqa: S608
        f"WHERE {status} = %s AND {col('locked_by')} = %s{kind_filter} "
        f"ORDER BY {due_at}, {created_at}, {col('id')}"
    )
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.execute(update, [Status.SENDING, when, owner, when, when, *kind_params, limit])
        if cursor.rowcount == 0:
            return []
        cursor.execute(read, [Status.SENDING, owner, *kind_params])
        # Row by row, sorted by SQLite: no list of every record kept for a sort (each
        # tuple is freed once its ClaimedRow is made).
        return claimed_rows(cursor, owner=owner, now=now)


def _claim_elsewhere(
    *,
    owner: str,
    limit: int,
    kinds: Sequence[str] | None,
    now: datetime,
    connection: Any,
    account: str | None = None,
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
    col = _quoted_columns(connection)
    with transaction.atomic(using=connection.alias):
        pks = list(
            due_rows(now, kinds, connection.alias, account)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        if not pks:
            return []
        for chunk in chunks(pks, IN_CHUNK):
            OutboxEvent.objects.using(connection.alias).filter(
                pk__in=chunk, status__in=OutboxEvent.DUE_STATUSES
            ).update(**lease)
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    sql = (
        f"SELECT {', '.join(col(c) for c in CLAIMED_COLUMNS)} FROM {table} "  # noqa: S608
        f"WHERE {col('status')} = %s AND {col('locked_by')} = %s "
        f"ORDER BY {col('next_attempt_at')}, {col('created_at')}, {col('id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [Status.SENDING, owner])
        records = cursor.fetchall()
    return claimed_rows(records, owner=owner, now=now)


def claim_batch(
    *,
    owner: str,
    batch_size: int | None = None,
    kinds: Sequence[str] | None = None,
    now: datetime | None = None,
    using: str | None = None,
    account: str | None = None,
) -> list[ClaimedRow]:
    """Lease up to ``batch_size`` due rows to ``owner`` and return them (status ``sending``),
    oldest first. Each carries ``previous_status`` so an aborted run can put it back.

    PostgreSQL claims in one statement and skips rows another flusher has locked; SQLite
    with an UPDATE and a read-back in one transaction; elsewhere a conditional UPDATE
    keeps two claimers from taking the same row. An idle poll costs one indexed query.
    ``owner`` names one batch: the rows come back by it, so claim each kind at most once
    under one owner. ``using``: the database alias the rows were written to (default:
    ``default``). ``account``: only rows of this ``OutboxEvent.account`` value (``""``:
    the default account; None: any).
    """
    now = now or timezone.now()
    limit = batch_size or klaviyo_settings.BATCH_SIZE
    kinds = list(kinds) if kinds else None
    connection = connections[using or DEFAULT_DB_ALIAS]
    claim = _claim_elsewhere
    if connection.vendor == "postgresql":
        claim = _claim_postgres
    elif connection.vendor == "sqlite" and _sqlite_claim(connection):
        claim = _claim_sqlite
    return claim(
        owner=owner, limit=limit, kinds=kinds, now=now, connection=connection, account=account
    )


def _sqlite_claim(connection: Any) -> bool:
    """Whether SQLite claims with ``_claim_sqlite`` (always; the tests turn it off to run
    the portable claim on SQLite too)."""
    return True


def reclaim_expired_leases(
    *, now: datetime | None = None, lease_seconds: float | None = None, using: str | None = None
) -> int:
    """Put rows of crashed flushers (``sending`` past the lease) back to due; returns the count.

    A row whose attempts already reached MAX_ATTEMPTS is dead instead: a row that kills
    every flusher holding it (or outlives every lease) must not be retried forever."""
    now = now or timezone.now()
    lease = lease_seconds if lease_seconds is not None else klaviyo_settings.LEASE_SECONDS
    max_attempts = int(klaviyo_settings.MAX_ATTEMPTS)
    cutoff = now - timedelta(seconds=lease)
    if not _any_expired(connections[using or DEFAULT_DB_ALIAS], cutoff):
        return 0
    expired = OutboxEvent.objects.using(using).filter(status=Status.SENDING, locked_at__lt=cutoff)
    released = {"locked_at": None, "locked_by": "", "updated_at": now}
    dead = expired.filter(attempts__gte=max_attempts).update(
        status=Status.DEAD,
        last_error_status=None,
        last_error_code="lease_expired",
        last_error_detail=(
            f"Gave up after {max_attempts} attempts: the flusher holding this row stopped "
            "(or outlived its lease) each time without recording an outcome."
        ),
        **released,
    )
    count = expired.update(status=Status.RETRYING, next_attempt_at=now, **released)
    if dead:
        logger.warning(
            "Dead-lettered %d outbox row(s) whose leases expired %d times.", dead, max_attempts
        )
    if count:
        logger.warning("Reclaimed %d outbox row(s) whose flusher lease expired.", count)
    return count + dead


def _any_expired(connection: Any, cutoff: datetime) -> bool:
    """Whether a lease older than ``cutoff`` is left: asked before every claim, and
    nearly always no. One small statement (through the ORM, building the query cost ten
    times as much as running it)."""
    col = _quoted_columns(connection)
    table = connection.ops.quote_name(OutboxEvent._meta.db_table)
    # Names come quoted from the model's meta; every value is a parameter.
    sql = (
        f"SELECT 1 FROM {table} WHERE {col('status')} = %s "  # noqa: S608
        f"AND {col('locked_at')} < %s {connection.ops.limit_offset_sql(0, 1)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [Status.SENDING, connection.ops.adapt_datetimefield_value(cutoff)])
        return cursor.fetchone() is not None
