"""Viewed Category and Searched Site: the writers (``django_klaviyo.viewed_category``,
``django_klaviyo.searched_site``), their properties, the search term as stored, and
the keys that make a repeat the same view or search.

Property names are those of Klaviyo's Salesforce Commerce Cloud integration, which sends
both metrics: Searched Site ``Search Term`` and ``Search Results Count``; Viewed Category
``Viewed Category`` (the category id), with ``CategoryID``, ``CategoryName`` and ``URL``
beside it in the names of Klaviyo's guide (``ProductID``, ``ProductName``, ``URL``).

A category is a dict: ``category_id`` (required), ``name``, ``url``. A search term is
what a visitor typed: untrusted text, its whitespace collapsed, control characters
dropped, cut to ``limits.MAX_SEARCH_TERM_CHARS``.

Repeats (``BROWSE_REPEAT_AFTER``): a view of the same category id, or a search of the
same term (case and spacing aside), by the same profile. The unique_id is the subject's
digest plus the Unix time of the first view, so browser mode's ``$event_id`` (the
template tags) and the server's agree.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
import uuid
from collections.abc import Mapping
from typing import Any

from django.utils import timezone

from django_klaviyo import outbox
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import fields, repeats
from django_klaviyo.profiles.argument import as_profile
from django_klaviyo.rules import limits, values
from django_klaviyo.rules.identifiers import profile_key

CATEGORY_KEYS = {"category_id": "CategoryID", "name": "CategoryName", "url": "URL"}
# Klaviyo's SFCC integration names the category id "Viewed Category".
SFCC_CATEGORY = "Viewed Category"
SEARCH_TERM = "Search Term"
SEARCH_RESULTS_COUNT = "Search Results Count"
MAX_RESULT_COUNT = 10**9
MAX_CATEGORY_FIELD = {"category_id": 255, "name": 500, "url": 2000}


def category_properties(category: Mapping[str, Any]) -> dict[str, Any]:
    """A category dict → Viewed Category's properties."""
    if not isinstance(category, Mapping):
        raise KlaviyoValidationError("category must be a dict.", field="category")
    unknown = sorted(str(k) for k in category if k not in CATEGORY_KEYS)
    if unknown:
        raise KlaviyoValidationError(
            f"category has no field {unknown[0]!r} (it takes category_id, name, url).",
            field=f"category.{unknown[0]}",
        )
    result: dict[str, Any] = {}
    for key, name in CATEGORY_KEYS.items():
        value = category.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and key == "category_id":
            value = str(value)
        if value is None or value == "":
            if key == "category_id":
                raise KlaviyoValidationError(
                    "category_id is required.", field="category.category_id"
                )
            continue
        if not isinstance(value, str) or not value.strip():
            raise KlaviyoValidationError(
                f"category {key} must be a non-empty string.", field=f"category.{key}"
            )
        if len(value) > MAX_CATEGORY_FIELD[key]:
            raise KlaviyoValidationError(
                f"category {key} must be at most {MAX_CATEGORY_FIELD[key]} characters.",
                field=f"category.{key}",
            )
        result[name] = value.strip()
    return {SFCC_CATEGORY: result["CategoryID"], **result}


def search_term(term: Any) -> str:
    """The term as stored: whitespace collapsed, control characters dropped, at most
    ``MAX_SEARCH_TERM_CHARS`` characters. An empty term is no search (refused)."""
    if not isinstance(term, str):
        raise KlaviyoValidationError("term must be a string.", field="term")
    visible = "".join(c if unicodedata.category(c) != "Cc" else " " for c in term)
    cleaned = " ".join(visible.split())[: limits.MAX_SEARCH_TERM_CHARS].strip()
    if not cleaned:
        raise KlaviyoValidationError("term must not be empty.", field="term")
    return cleaned


def search_properties(term: Any, result_count: Any) -> dict[str, Any]:
    """Searched Site's properties."""
    if (
        isinstance(result_count, bool)
        or not isinstance(result_count, int)
        or not 0 <= result_count <= MAX_RESULT_COUNT
    ):
        raise KlaviyoValidationError(
            f"result_count must be a whole number from 0 to {MAX_RESULT_COUNT}.",
            field="result_count",
        )
    return {SEARCH_TERM: search_term(term), SEARCH_RESULTS_COUNT: result_count}


def subject(event: str, properties: Mapping[str, Any]) -> str:
    """What makes two events the same view or search, as a short digest."""
    if event == "viewed_category":
        what = properties["CategoryID"]
    else:
        what = properties[SEARCH_TERM].casefold()
    return outbox.payload_digest({"e": event, "s": what})[:16]


def unique_id(event: str, properties: Mapping[str, Any], unix: int) -> str:
    return f"{subject(event, properties)}-{unix}"


def build_row(
    event: str,
    profile: Any,
    properties: dict[str, Any],
    *,
    time: Any = None,
    given_unique_id: str | None = None,
    backfill: bool = False,
) -> tuple[outbox.OutboxRow, str]:
    """The event's row and the dedupe-key prefix its repeats share. With ``time=None``
    ("now") each row's key is unique (the window decides what repeats); with an explicit
    time (an import) the same subject at the same second is the same row."""
    when = values.iso_time(timezone.now() if time is None else time)
    unix = int(dt.datetime.fromisoformat(when).timestamp())
    who = profile_key(profile) if isinstance(profile, Mapping) else ""
    person = outbox.payload_digest({"p": who})[:12]
    prefix = f"event:{event.replace('_', '-')}:{subject(event, properties)}:{person}:"
    row = outbox.build_event(
        metric=fields.metric(event),
        profile=profile,
        properties=properties,
        time=when,
        unique_id=given_unique_id or unique_id(event, properties, unix),
        dedupe_key=f"{prefix}{unix}" + ("" if time is not None else f":{uuid.uuid4().hex[:8]}"),
        backfill=backfill,
    )
    return row, prefix


def viewed_category(
    profile: Mapping[str, Any] | Any,
    category: Mapping[str, Any],
    *,
    time: Any = None,
    unique_id: str | None = None,
    backfill: bool = False,
    using: str | None = None,
    account: str | None = None,
) -> OutboxEvent | None:
    """**Viewed Category**; ``category`` is ``{"category_id": ..., "name": ..., "url": ...}``
    (the id required). A view of the same category by the same profile within
    ``BROWSE_REPEAT_AFTER`` seconds enqueues nothing and returns the earlier row."""
    properties = category_properties(category)
    return _write("viewed_category", profile, properties, time, unique_id, backfill, using, account)


def searched_site(
    profile: Mapping[str, Any] | Any,
    term: str,
    result_count: int,
    *,
    time: Any = None,
    unique_id: str | None = None,
    backfill: bool = False,
    using: str | None = None,
    account: str | None = None,
) -> OutboxEvent | None:
    """**Searched Site**: ``Search Term`` (what the visitor typed, cut to 100 characters)
    and ``Search Results Count``. The same term (case and spacing aside) searched again by
    the same profile within ``BROWSE_REPEAT_AFTER`` seconds (a reload, the next page of
    results) enqueues nothing and returns the earlier row."""
    properties = search_properties(term, result_count)
    return _write("searched_site", profile, properties, time, unique_id, backfill, using, account)


def _write(
    event: str,
    profile: Any,
    properties: dict[str, Any],
    time: Any,
    given_unique_id: str | None,
    backfill: bool,
    using: str | None,
    account: str | None,
) -> OutboxEvent | None:
    """The event's row, unless the same subject from the same profile is already in the
    outbox within ``BROWSE_REPEAT_AFTER`` seconds."""
    row, prefix = build_row(
        event,
        as_profile(profile),
        properties,
        time=time,
        given_unique_id=given_unique_id,
        backfill=backfill,
    )
    seconds = klaviyo_settings.BROWSE_REPEAT_AFTER
    return repeats.write_once_per_window(row, prefix, seconds, time, using, account, profile)
