"""Build Klaviyo ``filter`` query expressions that user data cannot break out of.

Klaviyo filters look like ``equals(email,"a@x.com")`` or
``and(any(id,["a","b"]),greater-than(updated,2026-01-01T00:00:00+00:00))``. Values are
rendered here, never pasted: strings are double-quoted with ``\\`` and ``"`` escaped, so a
hostile value such as ``x",y)`` stays one string literal. Field names are checked against
a strict pattern for the same reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError

FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
# Klaviyo documents no escapes beyond \\ and \" inside string literals, so control
# characters are refused rather than guessed at.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")

__all__ = [
    "Filter",
    "and_",
    "any_",
    "contains",
    "ends_with",
    "equals",
    "greater_or_equal",
    "greater_than",
    "has",
    "less_or_equal",
    "less_than",
    "starts_with",
]


@dataclass(frozen=True)
class Filter:
    """One rendered filter expression; ``str(f)`` is the ``filter`` query value."""

    expression: str

    def __str__(self) -> str:
        return self.expression


def _field(name: Any) -> str:
    if not isinstance(name, str) or not FIELD_NAME.match(name):
        raise KlaviyoValidationError(
            f"Filter field name {name!r} is not valid: use letters, digits, '_', '.' or '-', "
            "starting with a letter or '_'.",
            field="filter",
        )
    return name


def _string(value: str) -> str:
    if _CONTROL_CHARACTERS.search(value):
        raise KlaviyoValidationError(
            "Filter values cannot contain control characters (newlines, tabs, NUL).",
            field="filter",
        )
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_value(value: Any) -> str:
    """Render one scalar filter value in Klaviyo's literal syntax."""
    # bool before int: True is an int in Python.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise KlaviyoValidationError(
                f"Filter datetime {value.isoformat()} has no time zone; Klaviyo would read "
                "it ambiguously. Pass an aware datetime.",
                field="filter",
            )
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (float, Decimal)):
        if isinstance(value, float) and not math.isfinite(value):
            raise KlaviyoValidationError(
                "Filter numbers must be finite (no NaN or infinity).", field="filter"
            )
        if isinstance(value, Decimal) and not value.is_finite():
            raise KlaviyoValidationError(
                "Filter numbers must be finite (no NaN or infinity).", field="filter"
            )
        return str(value)
    raise KlaviyoValidationError(
        f"Filter values must be str, number, bool, None, date or datetime, not "
        f"{type(value).__name__}.",
        field="filter",
    )


def _list(values: Any) -> str:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise KlaviyoValidationError(
            "any() takes a list of values, not a single value.", field="filter"
        )
    rendered = [render_value(v) for v in values]
    if not rendered:
        raise KlaviyoValidationError("any() needs at least one value.", field="filter")
    return "[" + ",".join(rendered) + "]"


def _comparison(operator: str, field: str, value: Any) -> Filter:
    return Filter(f"{operator}({_field(field)},{render_value(value)})")


def equals(field: str, value: Any) -> Filter:
    return _comparison("equals", field, value)


def any_(field: str, values: Iterable[Any]) -> Filter:
    return Filter(f"any({_field(field)},{_list(values)})")


def greater_than(field: str, value: Any) -> Filter:
    return _comparison("greater-than", field, value)


def greater_or_equal(field: str, value: Any) -> Filter:
    return _comparison("greater-or-equal", field, value)


def less_than(field: str, value: Any) -> Filter:
    return _comparison("less-than", field, value)


def less_or_equal(field: str, value: Any) -> Filter:
    return _comparison("less-or-equal", field, value)


def contains(field: str, value: Any) -> Filter:
    return _comparison("contains", field, value)


def starts_with(field: str, value: Any) -> Filter:
    return _comparison("starts-with", field, value)


def ends_with(field: str, value: Any) -> Filter:
    return _comparison("ends-with", field, value)


def has(field: str, value: Any) -> Filter:
    return _comparison("has", field, value)


def and_(*filters: Filter) -> Filter:
    """All of ``filters``. Only built ``Filter`` objects are accepted, never raw strings,
    so the combined expression keeps the structure its parts were built with."""
    if not filters:
        raise KlaviyoValidationError("and_() needs at least one filter.", field="filter")
    for item in filters:
        if not isinstance(item, Filter):
            raise KlaviyoValidationError(
                f"and_() combines Filter objects built by this module, not {type(item).__name__}.",
                field="filter",
            )
    if len(filters) == 1:
        return filters[0]
    return Filter("and(" + ",".join(f.expression for f in filters) + ")")
