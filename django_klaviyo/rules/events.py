"""Event rules: metric, profile, properties, time, value, currency, and the row's
``expand`` list (further events sharing its profile, time and currency, such as an
order's Ordered Product events)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.utils import timezone

from django_klaviyo import limits
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules.profiles import clean_profile_attributes
from django_klaviyo.values import check_text, iso_time, key, number, to_json

EVENT_KEYS = frozenset(
    {"metric", "profile", "properties", "time", "value", "value_currency", "expand", "backfill"}
)
EXPAND_KEYS = frozenset({"metric", "unique_id", "properties", "value"})


def clean_metric(metric: Any, path: str = "metric") -> str:
    if not isinstance(metric, str) or not metric.strip():
        raise KlaviyoValidationError(f"{path} must be a non-empty string.", field=path)
    metric = metric.strip()
    if len(metric) > limits.METRIC_MAX_LENGTH:
        raise KlaviyoValidationError(
            f"{path} must be shorter than 128 characters (got {len(metric)}).", field=path
        )
    return check_text(metric, path)


def clean_currency(currency: Any) -> str | None:
    if currency is None or currency == "":
        return None
    if (
        not isinstance(currency, str)
        or len(currency) != 3
        or not currency.isascii()
        or not currency.isalpha()
    ):
        raise KlaviyoValidationError(
            f"value_currency must be a 3-letter ISO 4217 code, not {currency!r}.",
            field="value_currency",
        )
    return currency.upper()


def clean_properties(properties: Any, path: str = "properties") -> dict[str, Any]:
    if properties is None:
        return {}
    if not isinstance(properties, Mapping):
        raise KlaviyoValidationError(
            f"{path} must be a dict, not {type(properties).__name__}.", field=path
        )
    if len(properties) > limits.MAX_PROPERTIES:
        raise KlaviyoValidationError(
            f"{path} has {len(properties)} keys; Klaviyo accepts at most {limits.MAX_PROPERTIES}.",
            field=path,
        )
    return to_json(properties, path)


def clean_expand(expand: Any, metric: str, unique_id: str) -> list[dict[str, Any]]:
    """``[{"metric", "unique_id", "properties", "value"}, ...]``. No two events of the row
    may repeat a (metric, unique_id), the row's own included: Klaviyo would keep one."""
    if isinstance(expand, (str, bytes, Mapping)) or not isinstance(expand, (list, tuple)):
        raise KlaviyoValidationError("expand must be a list of event dicts.", field="expand")
    seen = {(metric, unique_id)}
    cleaned = []
    for i, item in enumerate(expand):
        path = f"expand[{i}]"
        if not isinstance(item, Mapping):
            raise KlaviyoValidationError(f"{path} must be a dict.", field=path)
        if not EXPAND_KEYS.issuperset(item):
            unknown = sorted(str(k) for k in item if k not in EXPAND_KEYS)
            raise KlaviyoValidationError(
                f"{path} has unknown key(s) {', '.join(unknown)}; expanded events share the "
                "row's profile, time and value_currency.",
                field=f"{path}.{unknown[0]}",
            )
        event = {
            "metric": clean_metric(item.get("metric"), f"{path}.metric"),
            "unique_id": key(item.get("unique_id"), f"{path}.unique_id"),
            "properties": clean_properties(item.get("properties"), f"{path}.properties"),
            "value": number(item.get("value"), f"{path}.value"),
        }
        pair = (event["metric"], event["unique_id"])
        if pair in seen:
            raise KlaviyoValidationError(
                f"{path} repeats metric {pair[0]!r} with unique_id {pair[1]!r}.",
                field=f"{path}.unique_id",
            )
        seen.add(pair)
        cleaned.append(event)
    return cleaned


def clean_event(
    payload: Mapping[str, Any],
    *,
    unique_id: str,
    profiles: dict[Any, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An ``event`` row's payload. ``profiles`` memoises cleaned flat profiles across the
    events of one call (an order's events share one profile)."""
    if not isinstance(payload, Mapping):
        raise KlaviyoValidationError("payload must be a dict.", field="payload")
    if not EVENT_KEYS.issuperset(payload):
        unknown = sorted(str(k) for k in payload if k not in EVENT_KEYS)
        raise KlaviyoValidationError(f"an event has no field {unknown[0]!r}.", field=unknown[0])
    metric = clean_metric(payload.get("metric"))
    time = payload.get("time")
    cleaned = {
        "metric": metric,
        "profile": _event_profile(payload.get("profile"), profiles),
        "properties": clean_properties(payload.get("properties")),
        "time": iso_time(timezone.now() if time is None else time),
        "value": number(payload.get("value")),
        "value_currency": clean_currency(payload.get("value_currency")),
    }
    expand = payload.get("expand")
    if expand:
        cleaned["expand"] = clean_expand(expand, metric, unique_id)
    backfill = payload.get("backfill", False)
    if not isinstance(backfill, bool):
        raise KlaviyoValidationError(
            f"backfill must be True or False, not {backfill!r}.", field="backfill"
        )
    if backfill:
        # Kept only when set, so rows of ordinary events are unchanged.
        cleaned["backfill"] = True
    return cleaned


def _event_profile(profile: Any, memo: dict[Any, dict[str, Any]] | None) -> dict[str, Any]:
    memo_key: Any = None
    if memo is not None and isinstance(profile, Mapping):
        try:
            memo_key = tuple(sorted(profile.items()))
            hash(memo_key)
        except TypeError:  # nested values (location, properties): not memoised
            memo_key = None
    if memo_key is not None and memo_key in memo:  # type: ignore[operator]
        return memo[memo_key]  # type: ignore[index]
    cleaned = clean_profile_attributes(profile, for_event=True)
    if memo_key is not None:
        memo[memo_key] = cleaned  # type: ignore[index]
    return cleaned


def event_sizes(payload: Mapping[str, Any], encoded: str) -> None:
    """Refuse an event Klaviyo would refuse for its size: each event (with its profile)
    must fit in one request; a row's expansions may be split across requests."""
    budget = limits.REQUEST_BYTES_BUDGET - limits.ITEM_OVERHEAD_BYTES
    if len(encoded) <= budget:
        return
    expand = payload.get("expand")
    if not expand:
        raise KlaviyoValidationError(
            f"the event is {len(encoded)} bytes encoded; Klaviyo accepts at most "
            f"{budget} bytes per event.",
            field="properties",
        )
    # Rare: only rows over 4.7 MB are measured event by event.
    profile = len(json.dumps(payload["profile"]))
    own = {k: v for k, v in payload.items() if k not in ("expand", "profile")}
    for path, event in [("properties", own)] + [
        (f"expand[{i}].properties", item) for i, item in enumerate(expand)
    ]:
        size = profile + len(json.dumps(event))
        if size > budget:
            raise KlaviyoValidationError(
                f"{path.split('.')[0]}: the event is {size} bytes encoded; Klaviyo accepts "
                f"at most {budget} bytes per event.",
                field=path,
            )
