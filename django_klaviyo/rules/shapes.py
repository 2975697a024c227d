"""The shapes of a client call's input, shared by the request rules of every kind: a
non-empty text (ids too: Klaviyo's ids are strings), an object, a list within one
request's limit, and the item an error concerns (``located``). Values themselves follow
``django_klaviyo.rules.values``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules.values import check_text


def text(value: Any, field: str, *, max_length: int | None = None) -> str:
    """A non-empty string that PostgreSQL can store, of at most ``max_length`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise KlaviyoValidationError(f"{field} must be a non-empty string.", field=field)
    check_text(value, field)
    if max_length is not None and len(value) > max_length:
        raise KlaviyoValidationError(
            f"{field} is {len(value)} characters long; Klaviyo accepts at most {max_length}.",
            field=field,
        )
    return value


def mapping(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise KlaviyoValidationError(
            f"{field} must be an object (a dict), not {type(value).__name__}.", field=field
        )
    return dict(value)


def batch(items: Any, field: str, limit: int) -> list[Any]:
    """A list of at most ``limit`` items (one request's worth)."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise KlaviyoValidationError(f"{field} must be a list.", field=field)
    items = list(items)
    if len(items) > limit:
        raise KlaviyoValidationError(
            f"{field} has {len(items)} items; Klaviyo accepts at most {limit} per request.",
            field=field,
        )
    return items


def unknown_keys(value: Mapping[str, Any], allowed: Iterable[str], field: str, what: str) -> None:
    """Refuse the first key of ``value`` outside ``allowed``; ``what`` says what is expected."""
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise KlaviyoValidationError(
            f"{field}.{unknown[0]} is not {what}.", field=f"{field}.{unknown[0]}"
        )


@contextmanager
def located(prefix: str) -> Iterator[None]:
    """Prefix errors of shared rules (identifiers) with the item they concern, so
    ``profile.email`` in item 3 reads ``profiles[3].email``."""
    try:
        yield
    except KlaviyoValidationError as exc:
        field = exc.field or ""
        if field.startswith(prefix):
            raise
        field = field.removeprefix("profile.").removeprefix("profile")
        where = f"{prefix}.{field}" if field else prefix
        raise KlaviyoValidationError(f"{prefix}: {exc}", field=where) from None
