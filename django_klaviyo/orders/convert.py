"""Small converters of order values: money (a float rounded half-up to 2 decimals),
times (ISO 8601 in UTC) and category lists, shared by the order, refund and browse
mappers."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.utils import timezone

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules.values import utc_iso

CENT = Decimal("0.01")
# Numbers are never None or "": comparing a Decimal with a str or None takes Decimal's
# slow path (an ABC check per comparison), and the save path asks this of every amount.
_NUMBERS = frozenset({Decimal, int, float})


def blank(value: Any) -> bool:
    """``value in (None, "")``, without comparing a number to a str."""
    return value is None or (type(value) not in _NUMBERS and value in (None, ""))


def money(amount: Any) -> float | None:
    """A Decimal/number as a float rounded half-up to 2 decimals (None stays None)."""
    try:
        if type(amount) is Decimal:  # most amounts: nothing to convert
            value = amount.quantize(CENT, ROUND_HALF_UP)
        elif blank(amount):
            return None
        else:
            value = as_decimal(amount).quantize(CENT, ROUND_HALF_UP)
    except (InvalidOperation, ValueError) as exc:
        raise KlaviyoValidationError(f"{amount!r} is not an amount.", field="value") from exc
    return float(value)


def as_decimal(value: Any) -> Decimal:
    """``Decimal(str(value))``, without the round trip through text for a Decimal or an
    int (the same number either way)."""
    kind = type(value)
    if kind is Decimal:
        return value  # immutable: the same number
    if kind is int:
        return Decimal(value)
    return Decimal(str(value))


def iso_utc(value: dt.datetime | None) -> str:
    """``value`` (None: now) as Klaviyo gets every time (``rules.values.utc_iso``)."""
    if value is None:
        value = timezone.now()
    if type(value) is dt.datetime and value.tzinfo is dt.timezone.utc:
        # What Django gives (now, and times read back) with USE_TZ: already in UTC, so
        # utc_iso would give its isoformat() unchanged; this skips the conversion's calls.
        return value.isoformat()
    return utc_iso(value)


def categories_list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(item) for item in value]
