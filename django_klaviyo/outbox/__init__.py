"""The one writer of outbox rows: clean, dedupe, insert.

Rows are written in the caller's transaction (the same connection as the store's own
writes), so a rolled-back order leaves no row and a committed one always has its row.
``transaction.on_commit`` is used only to send the ``outbox_ready`` wake-up hint, never
to write: a crash between commit and the hook would otherwise lose events.

Every row is cleaned once by its kind's rules (``django_klaviyo.rules``) before any SQL
runs, so a bad value raises :class:`KlaviyoValidationError` naming the field and never
reaches the database (where, on PostgreSQL, it would abort the caller's transaction).
Rows record the rules version they passed.

Every row of one call goes in ONE ``INSERT`` (``django_klaviyo.outbox.insert``). Rows
carrying a ``dedupe_key`` are inserted with ``ON CONFLICT DO NOTHING`` on its unique
constraint, so saving the same state again adds nothing.

The rest of the outbox package: ``insert`` (the hand-written INSERT), ``refused`` (dead
rows for what the save path could not enqueue, and the save receivers' failure policy),
``transitions`` (a saved object's status change, for the save receivers),
``actions`` (operator actions shared by the admin and the commands), ``purge`` (deleting
old finished rows), ``backfill`` (history into the outbox), ``tasks`` and ``task_queue``
(the flush as a task of Django's Tasks framework).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone

from django_klaviyo import rules
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.models.outbox import new_outbox_id_int
from django_klaviyo.outbox.insert import (
    ENCODED,
    NEW_ROW,
    TIMESTAMPS,
    insert_rows,
    layout,
    supports_fast_insert,
    supports_returning,
)
from django_klaviyo.rules import values
from django_klaviyo.rules.events import clean_event_fields
from django_klaviyo.rules.identifiers import profile_key
from django_klaviyo.rules.profiles import deletion_payload
from django_klaviyo.rules.values import to_json  # noqa: F401  (re-exported for mappers)
from django_klaviyo.signals import outbox_ready

Kind = OutboxEvent.Kind
_KINDS = frozenset(Kind.values)


@dataclass(frozen=True)
class OutboxRow:
    """One row to insert. ``rules_version`` says which rules already cleaned ``payload``
    (the ``build_*`` functions set the current one); the writer cleans any other row
    with ``rules.clean`` before inserting it, so every row is cleaned exactly once."""

    kind: str
    payload: dict[str, Any]
    unique_id: str = ""
    dedupe_key: str | None = None
    metric: str = ""
    rules_version: int = field(default=0, repr=False, compare=False)


def payload_digest(payload: Mapping[str, Any]) -> str:
    """A short stable hash of a payload, for dedupe keys."""
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:24]


# --- row builders: assemble a payload, clean it with the kind's rules -----------------


def _row(
    kind: str,
    payload: Mapping[str, Any],
    *,
    unique_id: str = "",
    dedupe_key: Any = None,
    profiles: dict[Any, dict[str, Any]] | None = None,
) -> OutboxRow:
    cleaned = rules.clean(kind, payload, unique_id=unique_id, profiles=profiles)
    return OutboxRow(
        kind=kind,
        payload=cleaned,
        unique_id=unique_id,
        dedupe_key=None if dedupe_key is None else values.key(dedupe_key, "dedupe_key"),
        metric=cleaned["metric"] if kind == Kind.EVENT else "",
        rules_version=rules.RULES_VERSION,
    )


def build_event(
    *,
    metric: Any,
    profile: Any,
    properties: Any = None,
    value: Any = None,
    value_currency: Any = None,
    time: Any = None,
    unique_id: Any = None,
    dedupe_key: Any = None,
    item_events: Any = None,
    expand: Any = None,
    backfill: Any = False,
    _profiles: dict[Any, dict[str, Any]] | None = None,
) -> OutboxRow:
    """One ``event`` row; ``item_events`` (one event per entry of ``properties["Items"]``)
    and ``expand`` (events in full) are further events sent with it, sharing its profile,
    time and currency (``django_klaviyo.rules.events``). ``backfill=True``: a historical
    event, recorded by Klaviyo without triggering flows (the row and its expansions)."""
    spec = {
        "metric": metric,
        "profile": profile,
        "properties": properties,
        "time": time,
        "value": value,
        "value_currency": value_currency,
        "unique_id": unique_id,
        "dedupe_key": dedupe_key,
        "item_events": item_events,
        "expand": expand,
        "backfill": backfill,
    }
    return _event_row(spec, _profiles)


def build_events(specs: Iterable[Mapping[str, Any]]) -> list[OutboxRow]:
    """``build_event`` for a mapper's event specs; the events of one order share their
    profile, so each distinct flat profile is cleaned once."""
    profiles: dict[Any, dict[str, Any]] = {}
    rows = []
    for spec in specs:
        if type(spec) is not dict and not isinstance(spec, Mapping):
            raise KlaviyoValidationError("an event spec must be a dict.", field="event")
        if not _SPEC_KEYS.issuperset(spec):
            unknown = sorted(str(k) for k in spec if k not in _SPEC_KEYS)
            raise KlaviyoValidationError(
                f"an event spec has no field {unknown[0]!r}.", field=unknown[0]
            )
        rows.append(_event_row(spec, profiles))
    return rows


def _event_row(spec: Mapping[str, Any], profiles: dict[Any, dict[str, Any]] | None) -> OutboxRow:
    """The ``event`` row of a spec whose keys are ``_SPEC_KEYS`` (``build_event``'s
    arguments): the spec is cleaned as it is, without a payload built from it."""
    unique_id = spec.get("unique_id")
    # Generated once here and stored, so every retry sends the same idempotency key.
    unique_id = uuid.uuid4().hex if unique_id is None else values.key(unique_id, "unique_id")
    cleaned = clean_event_fields(spec, unique_id, profiles)
    dedupe_key = spec.get("dedupe_key")
    return OutboxRow(
        _EVENT,
        cleaned,
        unique_id,
        None if dedupe_key is None else values.key(dedupe_key, "dedupe_key"),
        cleaned["metric"],
        rules.RULES_VERSION,
    )


_EVENT = Kind.EVENT
_SPEC_KEYS = frozenset(
    {
        "metric",
        "profile",
        "properties",
        "value",
        "value_currency",
        "time",
        "unique_id",
        "dedupe_key",
        "item_events",
        "expand",
        "backfill",
    }
)


def build_profile_upsert(profile: Any, *, dedupe_key: Any = None) -> OutboxRow:
    return _row(Kind.PROFILE_UPSERT, {"profile": profile}, dedupe_key=dedupe_key)


def build_list_change(
    kind: str, list_id: Any, profile: Any, *, dedupe_key: Any = None
) -> OutboxRow:
    return _row(kind, {"list_id": list_id, "profile": profile}, dedupe_key=dedupe_key)


def build_subscribe(
    profile: Any,
    *,
    channels: Any = ("email",),
    list_id: Any = None,
    custom_source: Any = None,
    consented_at: Any = None,
    dedupe_key: Any = None,
) -> OutboxRow:
    payload = {
        "profile": profile,
        "channels": channels,
        "list_id": list_id,
        "custom_source": custom_source,
        "consented_at": consented_at,
    }
    return _row(Kind.SUBSCRIBE, payload, dedupe_key=dedupe_key)


def build_unsubscribe(
    profile: Any, *, channels: Any = ("email",), list_id: Any = None, dedupe_key: Any = None
) -> OutboxRow:
    payload = {"profile": profile, "channels": channels, "list_id": list_id}
    return _row(Kind.UNSUBSCRIBE, payload, dedupe_key=dedupe_key)


def build_profile_deletion(
    *, email: Any = None, phone_number: Any = None, profile_id: Any = None
) -> OutboxRow:
    payload = deletion_payload(email=email, phone_number=phone_number, profile_id=profile_id)
    return _row(Kind.PROFILE_DELETION, payload)


# --- the writer -----------------------------------------------------------------------


def _columns(row: OutboxRow) -> dict[str, Any]:
    """The row's column values (those that differ from the model defaults): its payload
    cleaned by the kind's rules unless a builder already did, encoded once (the INSERT
    reuses the text) and measured against Klaviyo's size limits."""
    if row.kind not in _KINDS:
        raise KlaviyoValidationError(f"unknown outbox kind {row.kind!r}.", field="kind")
    unique_id = values.key(row.unique_id, "unique_id") if row.unique_id else ""
    payload = row.payload
    if row.rules_version != rules.RULES_VERSION:
        if row.kind == Kind.EVENT and row.metric and isinstance(payload, Mapping):
            payload = {"metric": row.metric, **payload}
        payload = rules.clean(row.kind, payload, unique_id=unique_id)
    profile = payload.get("profile")
    key = profile_key(profile) if isinstance(profile, Mapping) else ""
    if not key and row.kind not in rules.PROFILELESS_KINDS:
        raise KlaviyoValidationError(
            "payload['profile'] needs at least one identifier.", field="profile"
        )
    encoded = _encode(payload)
    rules.check_size(row.kind, payload, encoded)
    return {
        # The id's number: the INSERT makes of it what the id field would send.
        "id": new_outbox_id_int(),
        "kind": row.kind,
        "payload": payload,
        "metric": payload["metric"] if row.kind == Kind.EVENT else "",
        "unique_id": unique_id,
        "dedupe_key": values.key(row.dedupe_key, "dedupe_key") if row.dedupe_key else None,
        "profile_key": key[:320],
        "rules_version": rules.RULES_VERSION,
        "account": "",
        ENCODED: encoded,
    }


def _encode(payload: Mapping[str, Any]) -> str:
    # Compact, and ASCII-only: its length is its size in bytes, an upper bound of what the
    # client sends for it.
    return _ENCODER.encode(payload)


# Built once (json.dumps builds an encoder per call with these options). No circular
# check: payloads come from the rules' walk, which copies every container and refuses
# nesting past limits.MAX_DEPTH, so they hold no cycle.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), check_circular=False)


def enqueue_many(
    rows: Iterable[OutboxRow], *, using: str | None = None, account: str = ""
) -> list[OutboxEvent]:
    """Insert ``rows`` in one statement in the caller's transaction.

    Returns the saved rows: for a ``dedupe_key`` that already existed, nothing is
    inserted and the row already in the database is returned. Returns ``[]`` when
    ``ENABLED`` is False. ``account``: the rows' ``OutboxEvent.account`` (from
    ``accounts.account_for``; ``""`` is the default account).
    """
    if not klaviyo_settings.ENABLED:
        return []
    return _write(rows, using, build_objects=True, account=account)


def enqueue_rows(rows: Iterable[OutboxRow], *, using: str | None = None, account: str = "") -> int:
    """:func:`enqueue_many` for callers that need no model instances back (the save
    signal's hot path); returns how many rows were written (0 when ``ENABLED`` is False)."""
    if not klaviyo_settings.ENABLED:
        return 0
    return len(_write(rows, using, build_objects=False, account=account))


def account_dedupe_key(key: str, account: str) -> str:
    """``key`` within ``account``: the same order or profile change in two accounts is two
    rows. The default account's keys are unchanged (single-account stores see no change)."""
    return values.key(f"@{account}:{key}", "dedupe_key") if account else key


def _write(
    rows: Iterable[OutboxRow], using: str | None, *, build_objects: bool, account: str = ""
) -> list[Any]:
    """Validate and insert; returns OutboxEvent instances, or the column dicts when
    ``build_objects`` is off and the fast INSERT needs no instances."""
    alias = using or DEFAULT_DB_ALIAS
    values: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in rows:
        columns = _columns(row)
        if account:
            # ``account`` comes from accounts.account_for, which validated the name.
            columns["account"] = account
            if columns["dedupe_key"]:
                columns["dedupe_key"] = account_dedupe_key(columns["dedupe_key"], account)
        key = columns["dedupe_key"]
        if key:
            if key in seen:
                continue
            seen.add(key)
        values.append(columns)
    if not values:
        return []
    now = timezone.now()
    connection = connections[alias]
    fast = supports_fast_insert(connection)
    objs: list[Any] = values
    if build_objects or not fast:
        objs = _instances(values, now)
    # Which deduplicated rows went in: needed only to hand the caller the stored rows.
    returning = build_objects and bool(seen) and supports_returning(connection)
    inserted: set[uuid.UUID] | None = None
    if fast:
        inserted = insert_rows(
            connection, values, now, ignore_conflicts=bool(seen), returning=returning
        )
    else:
        OutboxEvent.objects.using(alias).bulk_create(objs, ignore_conflicts=bool(seen))
    # transaction.on_commit(..., using=alias), on the connection already at hand.
    connection.on_commit(partial(_send_ready, len(values), frozenset(map(_kind, values))))
    if build_objects:
        objs = _saved(objs, alias, inserted)
    return objs


_kind = itemgetter("kind")


def _instances(values: list[dict[str, Any]], now: datetime.datetime) -> list[OutboxEvent]:
    """Model instances of the rows about to be inserted (``values``: their columns, which
    take every other column's value too, so the INSERT sends what the instances hold)."""
    fields, defaulted, *_ = layout()
    shared = dict.fromkeys(TIMESTAMPS, now)
    shared.update(NEW_ROW)
    objs = []
    for columns in values:
        columns.update(shared)
        for f in defaulted:
            columns[f.attname] = f.get_default()
        obj = OutboxEvent(*(columns[f.attname] for f in fields))
        obj.id = uuid.UUID(int=columns["id"])  # the columns hold the id's number
        objs.append(obj)
    return objs


def _saved(
    objs: list[OutboxEvent], alias: str, inserted: set[uuid.UUID] | None
) -> list[OutboxEvent]:
    """The rows as stored: an instance whose dedupe key was already taken is replaced by
    the row holding it (its own was not inserted). ``inserted``: the ids the INSERT
    reported (None: unknown, so every deduplicated row is looked up)."""
    for obj in objs:
        obj._state.adding = False
        obj._state.db = alias
    refused = [
        o.dedupe_key for o in objs if o.dedupe_key and (inserted is None or o.pk not in inserted)
    ]
    if not refused:
        return objs
    stored = OutboxEvent.objects.using(alias).in_bulk(refused, field_name="dedupe_key")
    return [stored.get(obj.dedupe_key, obj) if obj.dedupe_key else obj for obj in objs]


def enqueue(
    kind: str,
    payload: Mapping[str, Any],
    *,
    unique_id: str = "",
    dedupe_key: str | None = None,
    metric: str = "",
    using: str | None = None,
    account: str = "",
) -> OutboxEvent | None:
    """Insert one row (see :func:`enqueue_many`); None when ``ENABLED`` is False."""
    written = enqueue_many(
        [
            OutboxRow(
                kind=kind,
                payload=payload,  # type: ignore[arg-type]
                unique_id=unique_id,
                dedupe_key=dedupe_key,
                metric=metric,
            )
        ],
        using=using,
        account=account,
    )
    return written[0] if written else None


def _send_ready(count: int, kinds: frozenset[str]) -> None:
    outbox_ready.send(sender=OutboxEvent, count=count, kinds=kinds)
