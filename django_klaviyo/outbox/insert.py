"""The outbox's INSERT, written by hand: one statement for every row of a call,
``ON CONFLICT (dedupe_key) DO NOTHING`` when a row carries a dedupe key.

``bulk_create``'s per-call SQL compilation costs several times the statement itself, and
this runs inside every tracked checkout (docs/benchmarks.md). Values are prepared by the
model's fields, exactly as the ORM would; ``django_klaviyo.outbox`` cleans the rows and
builds their column values first.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from django.db import transaction

from django_klaviyo.models import OutboxEvent

# The columns ``outbox._columns`` sets.
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


_LAYOUT: tuple[Any, ...] = ()


def layout() -> tuple[Any, ...]:
    """(the model's concrete fields, those no writer step sets), computed once: a column
    added to the model later starts at its default."""
    global _LAYOUT
    if not _LAYOUT:
        fields = tuple(OutboxEvent._meta.concrete_fields)
        known = {*COLUMN_NAMES, *NEW_ROW, *TIMESTAMPS}
        _LAYOUT = (fields, tuple(f for f in fields if f.attname not in known))
    return _LAYOUT


def fields_by_name() -> dict[str, Any]:
    """The model's concrete fields by attname (computed once)."""
    global _FIELDS_BY_NAME
    if not _FIELDS_BY_NAME:
        _FIELDS_BY_NAME = {f.attname: f for f in layout()[0]}
    return _FIELDS_BY_NAME


_FIELDS_BY_NAME: dict[str, Any] = {}


def insert_rows(
    connection: Any, values: list[dict[str, Any]], *, ignore_conflicts: bool, returning: bool
) -> set[uuid.UUID] | None:
    """One INSERT ... VALUES (...), (...) [ON CONFLICT (dedupe_key) DO NOTHING]
    [RETURNING id]; returns the inserted ids when ``returning``.

    Written by hand because ``bulk_create``'s per-call SQL compilation costs several
    times the statement itself, and this runs inside every tracked checkout. Values
    are prepared by the model fields, exactly as the ORM would.
    """
    fields = layout()[0]
    # The timestamps of one call share one value: prepared once.
    now = values[0][TIMESTAMPS[0]]
    prepared_now = fields_by_name()[TIMESTAMPS[0]].get_db_prep_save(now, connection)
    params: list[Any] = []
    for columns in values:
        for f in fields:
            name = f.attname
            if name in TIMESTAMPS:
                value = prepared_now
            elif name == "payload":
                # JSON text, cast to jsonb in the SQL on PostgreSQL: encoded once.
                value = columns[ENCODED]
            else:
                value = columns[name]
                if value is not None and not isinstance(value, (str, int)):
                    value = f.get_db_prep_save(value, connection)  # uuid
            params.append(value)
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
