"""Rows for what the save receivers could not enqueue: nothing is dropped.

A store's save has no caller to hear about a bad email or currency, so when a mapper or
the rulebook refuses what a save produced, the receiver writes a *dead* outbox row instead
of a valid one: ``last_error_code`` "invalid_on_save" (or "mapper_error" when the mapper
itself crashed), the reason naming the field in ``last_error_detail``, and the payload as
far as it could be stored. The admin's status filter, error-code filter and dashboard count
these rows like any dead row. Requeueing them does nothing (the payload was altered to be
storable and would fail again, or worse, be sent altered).

The payload is made storable by :func:`storable` (NUL and lone surrogates replaced,
non-JSON values turned into text, nesting and size cut with a visible marker), so the
INSERT cannot fail on the value and no savepoint is needed: the store's transaction is
never aborted by it. Public API calls (``track()`` ...) still raise
``KlaviyoValidationError`` to their caller instead.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from django_klaviyo import accounts
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.rules import limits
from django_klaviyo.rules.identifiers import profile_key

logger = logging.getLogger("django_klaviyo.receivers")

INVALID_ON_SAVE = "invalid_on_save"
MAPPER_ERROR = "mapper_error"
# Error codes of rows that never were a valid payload: requeueing them is refused.
REFUSED_ON_SAVE_CODES = (INVALID_ON_SAVE, MAPPER_ERROR)

# Deeper than the rules allow, so a cut payload still fails the rules if re-cleaned.
MAX_STORED_DEPTH = limits.MAX_DEPTH + 2
MAX_STORED_STRING = 10_000
MAX_STORED_ENTRIES = 1_000
# Values kept in all: bounds the row whatever the input's size.
MAX_STORED_NODES = 20_000
# Integers beyond this are kept as text (a jsonb number has a finite precision).
MAX_STORED_INT = 10**300


def _text(value: str) -> str:
    if len(value) > MAX_STORED_STRING:
        value = value[:MAX_STORED_STRING] + f"[… cut: {len(value)} characters]"
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    # A lone surrogate cannot be encoded to UTF-8 (nor stored): replace it.
    return value.encode("utf-8", errors="replace").decode("utf-8")


class _Budget:
    def __init__(self) -> None:
        self.left = MAX_STORED_NODES


def storable(value: Any, *, _depth: int = 0, _budget: _Budget | None = None) -> Any:
    """A JSON copy of ``value`` that every database accepts, as close to it as possible.

    Over-deep nesting becomes the string ``"[… cut: nested deeper than N levels]"``, long
    strings and containers are shortened with a similar marker, and values JSON has no
    type for become text (``Decimal('1.5')`` → ``"1.5"``, an object → ``"<Order: …>"``).
    """
    budget = _budget or _Budget()
    budget.left -= 1
    if budget.left < 0:
        return "[… cut: payload too large]"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -MAX_STORED_INT < value < MAX_STORED_INT else _text(str(value))
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _text(str(value))
    if isinstance(value, (Mapping, list, tuple)):
        if _depth >= MAX_STORED_DEPTH:
            return f"[… cut: nested deeper than {MAX_STORED_DEPTH} levels]"
        entries = list(value.items()) if isinstance(value, Mapping) else list(enumerate(value))
        kept = entries[:MAX_STORED_ENTRIES]
        if isinstance(value, Mapping):
            result: Any = {
                _text(k if isinstance(k, str) else str(k)): storable(
                    v, _depth=_depth + 1, _budget=budget
                )
                for k, v in kept
            }
            if len(entries) > len(kept):
                result["[… cut]"] = f"{len(entries) - len(kept)} more keys"
        else:
            result = [storable(v, _depth=_depth + 1, _budget=budget) for _, v in kept]
            if len(entries) > len(kept):
                result.append(f"[… cut: {len(entries) - len(kept)} more items]")
        return result
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        shown = str(value)
    except Exception:  # a broken __str__ must not cost the row
        shown = "?"
    return _text(f"<{type(value).__name__}: {shown[:200]}>")


def source_label(instance: Any) -> str:
    """``"shop.order:42"``: which saved object the row came from."""
    meta = getattr(instance, "_meta", None)
    label = meta.label_lower if meta is not None else type(instance).__name__
    return f"{label}:{getattr(instance, 'pk', '?')}"


def _profile_key(payload: Any) -> str:
    profile = payload.get("profile") if isinstance(payload, Mapping) else None
    if not isinstance(profile, Mapping):
        return ""
    try:
        return profile_key(profile)[:320]
    except Exception:  # an unusable profile is part of why the row is invalid
        return ""


def reason(exc: BaseException) -> str:
    """Klaviyo-style text: the message, and the field it is about."""
    field = getattr(exc, "field", None)
    if isinstance(exc, KlaviyoValidationError):
        return f"Invalid input: {exc}" + (f" (field {field})" if field else "")
    return f"{type(exc).__name__}: {exc}"


def record_refused(
    kind: str,
    payload: Any,
    exc: BaseException,
    *,
    source: str,
    using: str | None = None,
    account: str = "",
) -> OutboxEvent:
    """Write one dead row for ``payload`` refused on the save path, in the caller's
    transaction (a rolled-back save leaves no trace, as for valid rows)."""
    code = INVALID_ON_SAVE if isinstance(exc, KlaviyoValidationError) else MAPPER_ERROR
    stored = storable(payload)
    if not isinstance(stored, dict):
        stored = {"value": stored}
    metric = stored.get("metric") if kind == OutboxEvent.Kind.EVENT else ""
    now = timezone.now()
    detail = reason(exc)
    row = OutboxEvent.objects.using(using).create(
        kind=kind,
        account=account,
        payload=stored,
        metric=metric[:128] if isinstance(metric, str) else "",
        profile_key=_profile_key(stored),
        status=OutboxEvent.Status.DEAD,
        next_attempt_at=now,
        created_at=now,
        last_error_code=code,
        last_error_detail=_text(detail),
        outcome_note=_text(f"refused on save ({source}); never sent")[:255],
    )
    logger.warning(
        "django-klaviyo: %s from %s refused on save and kept as dead outbox row %s: %s",
        kind,
        source,
        row.pk,
        detail,
    )
    return row


def raise_or_log(exc: Exception, log: logging.Logger, message: str, *args: Any) -> None:
    """The save receivers' answer to an error that is not a refusal by the rules (a bug in
    a mapper or a mapping): re-raised when DEBUG is on, so a developer sees it at once,
    else logged with its traceback, and the caller keeps a dead row. Call it in the
    ``except`` block that caught ``exc``."""
    if settings.DEBUG:
        raise exc
    log.exception(message, *args)


def run_mapper(
    setting: str, *args: Any, mapper: Any = None, kind: str | None = None, using: Any = None
) -> Any:
    """Call the configured mapper (or ``mapper``, already resolved from that setting)
    under the save receivers' failure policy (``django_klaviyo.orders.receivers``);
    returns None when the update is to be skipped. With ``kind``, a refusal is kept as a
    dead row of that kind."""
    try:
        return (mapper or klaviyo_settings.callable(setting))(*args)
    except DatabaseError:
        raise
    except Exception as exc:
        if not isinstance(exc, KlaviyoValidationError):
            name = type(args[0]).__name__
            raise_or_log(exc, logger, "django-klaviyo: %s failed for %s.", setting, name)
        if kind is not None:
            source = source_label(args[0])
            refused = {"mapper": setting, "source": source}
            record_refused(kind, refused, exc, source=source, using=using)
        else:
            logger.warning("django-klaviyo: %s failed: %s", setting, exc)
    return None


def keep_refused_specs(
    specs: Any,
    instance: Any,
    enqueue: Callable[[list[Any], str], Any],
    *,
    using: str | None,
) -> None:
    """Enqueue a save's event ``specs`` with ``enqueue(specs, account)`` for ``instance``'s
    Klaviyo account (``accounts.account_for``), all in one INSERT; if any is refused (or no
    account can be named), each valid one is enqueued alone and each refused one kept as a
    dead row (:func:`record_refused`). ``enqueue`` checks its rows before any INSERT, so a
    refusal leaves nothing behind; dedupe keys keep a row the first attempt wrote from
    doubling."""
    every = specs if isinstance(specs, (list, tuple)) else [specs]
    try:
        account = accounts.account_for(instance)
    except KlaviyoValidationError as exc:
        # An unknown account or a failing ACCOUNT_RESOLVER: the save goes on, and the
        # events are kept dead with the reason (docs/accounts.md).
        source = source_label(instance)
        for spec in every:
            record_refused(OutboxEvent.Kind.EVENT, spec, exc, source=source, using=using)
        return
    try:
        enqueue(list(every), account)
        return
    except KlaviyoValidationError:
        pass
    source = source_label(instance)
    for spec in every:
        try:
            enqueue([spec], account)
        except KlaviyoValidationError as exc:
            record_refused(
                OutboxEvent.Kind.EVENT, spec, exc, source=source, using=using, account=account
            )
