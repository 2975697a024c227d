"""The outbox's INSERT, written by hand: one statement for every row of a call,
``ON CONFLICT (dedupe_key) DO NOTHING`` when a row carries a dedupe key.

``bulk_create``'s per-call SQL compilation costs several times the statement itself, and
this runs inside every tracked checkout (docs/benchmarks.md). Values are prepared by the
model's fields, exactly as the ORM would; ``django_klaviyo.outbox`` cleans the rows and
builds their column values first.
"""

from __future__ import annotations

import datetime
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, NamedTuple

from django.db import transaction

from django_klaviyo.models import OutboxEvent

# The columns ``outbox._columns`` sets: a str, an int or None each, which their fields
# send unchanged, but the id, its UUID's 128-bit number (see insert_rows).
COLUMN_NAMES = (
    "id",
    "kind",
    "payload",
    "metric",
    "unique_id",
    "dedupe_key",
    "profile_key",
    "rules_version",
    "account",
)


# Column values every new row shares; the timestamps are filled in per call.
NEW_ROW = {
    "status": OutboxEvent.Status.PENDING.value,
    "attempts": 0,
    "locked_at": None,
    "locked_by": "",
    "last_error_status": None,
    "last_error_code": "",
    "last_error_detail": "",
    "sent_at": None,
}
TIMESTAMPS = ("next_attempt_at", "created_at", "updated_at")
# Key (not a column) carrying a row's JSON text from its check to the INSERT.
ENCODED = "__encoded__"
# Rows per statement: PostgreSQL takes at most 65535 parameters, old SQLite 999.
MAX_ROWS_PER_INSERT = 1000


class Layout(NamedTuple):
    """The model's columns as the writer fills them (see ``layout``)."""

    # The model's concrete fields, in the INSERT's column order.
    fields: tuple[Any, ...]
    # Those no writer step sets: a new row takes their default.
    defaulted: tuple[Any, ...]
    # A new row's value of every NEW_ROW column and constant default, as the INSERT
    # sends it (each is None, a str or an int, which the fields pass on unchanged).
    shared: dict[str, Any]
    # The defaulted fields whose default is made per row (a callable) or needs preparing.
    made_per_row: tuple[Any, ...]
    # One row's INSERT parameters, in column order, from its columns merged with
    # ``shared``: one C call per row. The payload's is its JSON text (under ENCODED),
    # encoded once for the size check and cast to jsonb in the SQL on PostgreSQL.
    parameters: Callable[[Mapping[str, Any]], tuple[Any, ...]]


_LAYOUT: Layout | None = None


def layout() -> Layout:
    """The model's columns as the writer fills them, computed once: a column added to the
    model later starts at its default."""
    global _LAYOUT
    if _LAYOUT is None:
        fields = tuple(OutboxEvent._meta.concrete_fields)
        known = {*COLUMN_NAMES, *NEW_ROW, *TIMESTAMPS}
        defaulted = tuple(f for f in fields if f.attname not in known)
        shared = dict(NEW_ROW)
        made_per_row = []
        for f in defaulted:
            if f.has_default() and callable(f.default):
                made_per_row.append(f)
                continue
            value = f.get_default()
            if _passed_as_is(value):
                shared[f.attname] = value
            else:
                made_per_row.append(f)
        sources = [ENCODED if f.attname == "payload" else f.attname for f in fields]
        _LAYOUT = Layout(fields, defaulted, shared, tuple(made_per_row), itemgetter(*sources))
    return _LAYOUT


def _passed_as_is(value: Any) -> bool:
    # What get_db_prep_save returns unchanged for the outbox's fields.
    return value is None or isinstance(value, (str, int))


def fields_by_name() -> dict[str, Any]:
    """The model's concrete fields by attname (computed once)."""
    global _FIELDS_BY_NAME
    if not _FIELDS_BY_NAME:
        _FIELDS_BY_NAME = {f.attname: f for f in layout().fields}
    return _FIELDS_BY_NAME


_FIELDS_BY_NAME: dict[str, Any] = {}


def prepared_timestamp(now: datetime.datetime, connection: Any) -> Any:
    """What DateTimeField.get_db_prep_save sends for ``now`` (timezone.now()), the same
    for every DateTimeField of the model."""
    if connection.vendor == "sqlite" and now.tzinfo is connection.timezone is not None:
        # SQLite's adapt_datetimefield_value: the time, naive in the connection's zone, as
        # text. ``now`` is already in that zone (UTC), so converting it changes nothing.
        # In situ, the general path costs the save ~7 us, this ~3.5.
        return str(now.replace(tzinfo=None))
    # A datetime is already what get_prep_value returns for it: only the backend adapts.
    return fields_by_name()[TIMESTAMPS[0]].get_db_prep_value(now, connection, prepared=True)


def insert_rows(
    connection: Any,
    values: list[dict[str, Any]],
    now: datetime.datetime,
    *,
    ignore_conflicts: bool,
    returning: bool,
) -> set[uuid.UUID] | None:
    """One INSERT ... VALUES (...), (...) [ON CONFLICT (dedupe_key) DO NOTHING]
    [RETURNING id]; returns the inserted ids when ``returning``.

    ``values``: the rows' columns as ``outbox._columns`` makes them (the COLUMN_NAMES,
    plus the payload's JSON text under ENCODED); every other column is a new row's:
    NEW_ROW, ``now`` for the TIMESTAMPS, the model's default for the rest (made per row
    unless already in the row's columns).

    Written by hand because ``bulk_create``'s per-call SQL compilation costs several
    times the statement itself, and this runs inside every tracked checkout. Values
    are what the model fields' ``get_db_prep_save`` returns, as the ORM would pass them.
    """
    fields, _, shared, made_per_row, parameters = layout()
    # The timestamps of one call share one value, prepared once.
    new_row = dict.fromkeys(TIMESTAMPS, prepared_timestamp(now, connection))
    new_row.update(shared)
    # The id (its 128-bit number) as UUIDField.get_db_prep_value sends a UUID: the UUID
    # where the database has a uuid type (PostgreSQL), else its 32 hex digits (SQLite).
    hex_ids = not connection.features.has_native_uuid_field
    params: list[Any] = []
    for columns in values:
        row = {**columns, **new_row}
        number = columns["id"]
        row["id"] = f"{number:032x}" if hex_ids else uuid.UUID(int=number)
        for f in made_per_row:
            name = f.attname
            value = row[name] if name in row else f.get_default()
            row[name] = value if _passed_as_is(value) else f.get_db_prep_save(value, connection)
        params += parameters(row)
    width = len(fields)
    max_params = connection.features.max_query_params or 65535
    per_statement = max(1, min(MAX_ROWS_PER_INSERT, max_params // width))
    inserted: set[uuid.UUID] = set()
    if len(values) <= per_statement and connection.in_atomic_block:
        # One statement in the caller's transaction (the save path): atomic() would group
        # nothing, so only its effect on a failure is kept, marking that transaction for
        # rollback (as atomic(savepoint=False) does in Atomic.__exit__).
        try:
            _execute(connection, params, len(values), ignore_conflicts, returning, inserted)
        except BaseException:
            if not connection.closed_in_transaction:
                connection.needs_rollback = True
            raise
        return inserted if returning else None
    with transaction.atomic(using=connection.alias, savepoint=False):
        for start in range(0, len(values), per_statement):
            count = min(per_statement, len(values) - start)
            chunk = params[start * width : (start + count) * width]
            _execute(connection, chunk, count, ignore_conflicts, returning, inserted)
    return inserted if returning else None


def _execute(
    connection: Any,
    params: list[Any],
    count: int,
    ignore_conflicts: bool,
    returning: bool,
    inserted: set[uuid.UUID],
) -> None:
    """One INSERT of ``count`` rows; the ids it inserted go in ``inserted`` when
    ``returning``."""
    sql = _insert_sql(connection, count, ignore_conflicts)
    if returning:
        sql += f" RETURNING {connection.ops.quote_name('id')}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if returning:
            # SQLite keeps a UUID as 32 hex digits.
            inserted.update(uuid.UUID(str(pk)) for (pk,) in cursor.fetchall())


def supports_returning(connection: Any) -> bool:
    return connection.vendor == "postgresql" or sqlite3.sqlite_version_info >= (3, 35)


def supports_fast_insert(connection: Any) -> bool:
    if connection.vendor == "postgresql":
        return True
    # SQLite understands ON CONFLICT (column) DO NOTHING from 3.24.
    return connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 24)


_SQL_CACHE: dict[tuple[str, int, bool], str] = {}


def _insert_sql(connection: Any, count: int, ignore_conflicts: bool) -> str:
    cache_key = (connection.vendor, count, ignore_conflicts)
    sql = _SQL_CACHE.get(cache_key)
    if sql is None:
        qn = connection.ops.quote_name
        fields = OutboxEvent._meta.concrete_fields
        columns = ", ".join(qn(f.column) for f in fields)
        json_placeholder = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
        row = (
            "("
            + ", ".join(json_placeholder if f.attname == "payload" else "%s" for f in fields)
            + ")"
        )
        # Names come from the model and are quoted; every value is a parameter.
        sql = f"INSERT INTO {qn(OutboxEvent._meta.db_table)} ({columns}) VALUES "  # noqa: S608
        sql += ", ".join([row] * count)
        if ignore_conflicts:
            # Only a repeated dedupe key is ignored; any other error still raises.
            sql += f" ON CONFLICT ({qn('dedupe_key')}) DO NOTHING"
        _SQL_CACHE[cache_key] = sql
    return sql
