"""Leaf value rules shared by the rulebook, the mappers and the client.

``to_json`` is the one walk over a payload: it converts Python values to plain JSON and
checks every limit that applies to a value (nesting, array length, string size, text
PostgreSQL can store). ``aware`` is the one rule for naive datetimes (read in the
current Django time zone), ``utc_iso`` the one way a datetime is stored and sent (ISO 8601
in UTC), and ``iso_time`` the rule for event times (those, inside Klaviyo's window), at
enqueue, in the mappers and in the client.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.functional import Promise

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits


def check_text(value: str, path: str) -> str:
    """Refuse text that PostgreSQL cannot store (NUL, a lone surrogate) or Klaviyo refuses
    (over 100 KB). Such text would abort the caller's transaction with a DataError at
    INSERT time, so it is refused before, with the field named."""
    if value.isascii():
        size = len(value)
        if "\x00" in value:
            raise KlaviyoValidationError(
                f"{path} contains a NUL character, which cannot be stored.", field=path
            )
    else:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise KlaviyoValidationError(
                f"{path} contains a lone surrogate (invalid Unicode text).", field=path
            ) from None
        if "\x00" in value:
            raise KlaviyoValidationError(
                f"{path} contains a NUL character, which cannot be stored.", field=path
            )
    if size > limits.MAX_STRING_BYTES:
        raise KlaviyoValidationError(
            f"{path} is {size} bytes; Klaviyo accepts strings of at most "
            f"{limits.MAX_STRING_BYTES} bytes.",
            field=path,
        )
    return value


_MAX_STRING_BYTES = limits.MAX_STRING_BYTES
_MAX_DEPTH = limits.MAX_DEPTH
_MAX_ARRAY_ITEMS = limits.MAX_ARRAY_ITEMS
_INF = math.inf
# Short dict keys already found to be plain text (see ``_container``); bounded, so
# payloads with ever-new keys cannot grow it without end.
_PLAIN_KEYS: set[str] = set()
_PLAIN_KEYS_MAX = 4096
# Leaf types returned as they are (exact types: subclasses take the general path).
_PLAIN_LEAVES = frozenset({type(None), bool, int})


def to_json(value: Any, path: str, *, _depth: int = 0) -> Any:
    """``value`` as plain JSON types (Decimal → float, datetime → ISO string), or raise.

    One walk that converts and checks; the error names the exact path of the offending
    value ("properties.Items[2].Price"). Plain leaves (ASCII text, ints, finite floats)
    are checked inline in their container's loop, and a child's path is only formatted
    when the child needs a call of its own: this walk runs inside every tracked save.
    """
    kind = type(value)
    if kind is str:
        return check_text(value, path)
    if kind in _PLAIN_LEAVES:
        return value
    if kind is float:
        if not math.isfinite(value):
            raise KlaviyoValidationError(f"{path} is {value!r}, not valid JSON.", field=path)
        return value
    if kind is dict or kind is list:
        return _container(value, path, _depth)
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise KlaviyoValidationError(f"{path} is {value!r}, not valid JSON.", field=path)
        return value
    if isinstance(value, str):  # a str subclass (SafeString)
        return check_text(str(value), path)
    if isinstance(value, (Mapping, list, tuple)):
        return _container(value, path, _depth)
    if _depth > limits.MAX_DEPTH:
        raise KlaviyoValidationError(
            f"{path} is nested more than {limits.MAX_DEPTH} levels deep.", field=path
        )
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise KlaviyoValidationError(f"{path} is {value}, not a number.", field=path)
        return float(value)
    if isinstance(value, dt.datetime):
        return utc_iso(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Promise):
        return check_text(str(value), path)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    raise KlaviyoValidationError(
        f"{path} holds a {type(value).__name__}, which is not JSON-serialisable; "
        "convert it to a string, number, list or dict.",
        field=path,
    )


def _container(value: Any, path: str, _depth: int) -> Any:
    """``to_json`` of a mapping, list or tuple: a copy (made in one call), in which the
    values that are not plain leaves are replaced by their ``to_json``.

    Plain leaves (an exact str that is ASCII without NUL and within the size limit, an
    int, bool, None, a finite float) are checked inline and nested dicts and lists
    walked directly, because this loop runs for every tracked save; anything else goes
    through ``to_json``, and a child's path is only formatted when it needs a call."""
    if _depth > _MAX_DEPTH:
        raise KlaviyoValidationError(
            f"{path} is nested more than {_MAX_DEPTH} levels deep.", field=path
        )
    depth = _depth + 1
    keyed = type(value) is dict or (type(value) is not list and isinstance(value, Mapping))
    if keyed:
        result: Any = value.copy() if type(value) is dict else dict(value.items())
        entries: Any = result.items()  # values replaced in place: the keys do not change
    else:
        if len(value) > _MAX_ARRAY_ITEMS:
            raise KlaviyoValidationError(
                f"{path} has {len(value)} items; Klaviyo accepts at most {_MAX_ARRAY_ITEMS}.",
                field=path,
            )
        result = list(value)
        entries = enumerate(result)
    for key, item in entries:
        if keyed and key not in _PLAIN_KEYS:
            _check_key(key, path)
        leaf = type(item)
        if leaf is str:
            if item.isascii() and len(item) <= _MAX_STRING_BYTES and "\x00" not in item:
                continue
        elif leaf is int or leaf is bool or item is None:
            continue
        elif leaf is float:
            if -_INF < item < _INF:  # finite: NaN compares false
                continue
        elif leaf is dict or leaf is list:
            if item or depth > _MAX_DEPTH:
                result[key] = _container(item, _child(path, key, keyed), depth)
            else:
                result[key] = leaf()  # empty (Categories, Brands): nothing to walk
            continue
        result[key] = to_json(item, _child(path, key, keyed), _depth=depth)
    return result


def _child(path: str, key: Any, keyed: bool) -> str:
    """The path of a container's entry: ``properties.Items`` or ``Items[2]``."""
    return f"{path}.{key}" if keyed else f"{path}[{key}]"


def _check_key(key: Any, path: str) -> None:
    """Refuse a dict key that is not text JSON and PostgreSQL can hold. Keys repeat from
    payload to payload (a store's property names): a short one that passed is kept in
    ``_PLAIN_KEYS`` and not checked again."""
    if type(key) is str and key.isascii() and len(key) <= _MAX_STRING_BYTES and "\x00" not in key:
        if len(_PLAIN_KEYS) < _PLAIN_KEYS_MAX and len(key) <= 64:
            _PLAIN_KEYS.add(key)
        return
    if not isinstance(key, str):
        raise KlaviyoValidationError(f"{path} has a key {key!r} that is not a string.", field=path)
    check_text(key, f"{path} key")


def aware(value: dt.datetime) -> dt.datetime:
    """The one rule for naive datetimes: they are in the current Django time zone."""
    return timezone.make_aware(value) if timezone.is_naive(value) else value


def in_utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC, a naive one read in the current Django time zone (``aware``)."""
    return aware(value).astimezone(dt.timezone.utc)


def utc_iso(value: dt.datetime) -> str:
    """The one way a datetime is stored and sent: ISO 8601 in UTC (``in_utc``)."""
    return in_utc(value).isoformat()


def parse_iso(text: str, path: str) -> dt.datetime:
    """An ISO-8601 string (with or without offset) as a datetime, or a
    ``KlaviyoValidationError`` naming the field."""
    try:
        parsed = parse_datetime(text.strip())
    except ValueError:
        parsed = None
    if parsed is None:
        raise KlaviyoValidationError(f"{path} {text!r} is not an ISO-8601 date-time.", field=path)
    return parsed


def iso_time(value: Any, path: str = "time", *, allow_future: bool = True) -> str:
    """An aware or naive datetime, or an ISO-8601 string (with or without offset) → an
    ISO-8601 UTC string inside Klaviyo's window (after 1990, at most a year ahead)."""
    written = None  # ``value`` itself when it is a string as utc_iso writes one
    if type(value) is str:
        # As utc_iso writes a time with microseconds, "2026-12-06T20:10:54.349428+00:00"
        # (separators at 4, 7, 10, 13, 16 and 19, UTC's offset): once fromisoformat has
        # read it as a time in UTC with microseconds, isoformat() would write it again.
        if len(value) == 32 and value[4:20:3] == "--T::." and value.endswith("+00:00"):
            written = value
        try:
            # parse_iso's first step (parse_datetime tries fromisoformat first), without
            # its two calls; fromisoformat takes no surrounding spaces, which parse_iso
            # strips, so a string it parses parse_iso parses the same.
            value = _fromisoformat(value)
        except ValueError:
            value = parse_iso(value, path)
            written = None
    elif isinstance(value, str):
        value = parse_iso(value, path)
    elif not isinstance(value, dt.datetime):
        raise KlaviyoValidationError(
            f"{path} must be a datetime or an ISO-8601 string, not {type(value).__name__}.",
            field=path,
        )
    if value.tzinfo is not _UTC:  # one in UTC (as the mappers give it) is as in_utc makes it
        value = in_utc(value)
        written = None
    if value < _EARLIEST_EVENT_TIME:
        raise KlaviyoValidationError(f"{path} must be after 1990.", field=path)
    # Aware, whatever USE_TZ says: ``value`` is in UTC by now (timezone.now() is naive
    # with USE_TZ = False, and comparing the two would raise out of the store's save).
    now = dt.datetime.now(_UTC)
    latest = now + _LATEST_EVENT_TIME_AHEAD if allow_future else now
    if value > latest:
        which = "more than a year in the future" if allow_future else "in the future"
        raise KlaviyoValidationError(f"{path} must not be {which}.", field=path)
    return written if written is not None and value.microsecond else value.isoformat()


_fromisoformat = dt.datetime.fromisoformat
_UTC = dt.timezone.utc
_EARLIEST_EVENT_TIME = limits.EARLIEST_EVENT_TIME
_LATEST_EVENT_TIME_AHEAD = limits.LATEST_EVENT_TIME_AHEAD


def number(value: Any, path: str = "value") -> float | None:
    """A finite number (Decimal and int become float), or None."""
    if value is None:
        return None
    if type(value) is float and -_INF < value < _INF:  # the usual: as float() leaves it
        return value
    # bool is an int subclass, but True is not an amount of money.
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise KlaviyoValidationError(
            f"{path} must be a number, not {type(value).__name__}.", field=path
        )
    result = float(value)
    if not math.isfinite(result):
        raise KlaviyoValidationError(f"{path} must be a finite number.", field=path)
    return result


def key(value: Any, path: str) -> str:
    """A non-empty string column value (unique_id, dedupe_key) of at most 255 characters."""
    if not isinstance(value, str) or not value:
        raise KlaviyoValidationError(f"{path} must be a non-empty string.", field=path)
    if len(value) > limits.KEY_MAX_LENGTH:
        raise KlaviyoValidationError(
            f"{path} must be at most {limits.KEY_MAX_LENGTH} characters.", field=path
        )
    if value.isascii() and "\x00" not in value:  # check_text's usual case, without a call
        return value
    return check_text(value, path)
