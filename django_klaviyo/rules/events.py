"""Event rules: metric, profile, properties, time, value, currency, and the further events
a row carries, which share its profile, time and currency:

- ``item_events``: ``{"metric": "Ordered Product", "unique_ids": [...]}``, one event per
  entry of ``properties["Items"]`` (Klaviyo's Ordered Product: see ``item_event``). Stored
  by reference: a Placed Order's row holds each line once (in ``Items``), not twice, and
  the flusher derives each event when it assembles the request.
- ``expand``: further events written out in full (``metric``, ``unique_id``,
  ``properties``, ``value``), for any other event a mapper adds.

``expansions(payload)`` lists both, in the order they are sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from django.utils import timezone

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits
from django_klaviyo.rules.profiles import clean_profile_attributes
from django_klaviyo.rules.values import check_text, iso_time, key, number, to_json

EVENT_KEYS = frozenset(
    {
        "metric",
        "profile",
        "properties",
        "time",
        "value",
        "value_currency",
        "item_events",
        "expand",
        "backfill",
    }
)
EXPAND_KEYS = frozenset({"metric", "unique_id", "properties", "value"})
ITEM_EVENTS_KEYS = frozenset({"metric", "unique_ids"})
# What an event derived from one of the row's Items adds to the row's own text: key names
# ("metric", "properties", "OrderId", "ProductBrand", "value", ...) and a float's ".0".
# Everything else it holds (the item, the metric, its unique_id, the time) is in the row.
DERIVED_EVENT_EXTRA_BYTES = 256
_MAX_PROPERTIES = limits.MAX_PROPERTIES
_KEY_MAX_LENGTH = limits.KEY_MAX_LENGTH


def clean_metric(metric: Any, path: str = "metric") -> str:
    if not isinstance(metric, str) or not metric.strip():
        raise KlaviyoValidationError(f"{path} must be a non-empty string.", field=path)
    metric = metric.strip()
    if len(metric) > limits.METRIC_MAX_LENGTH:
        raise KlaviyoValidationError(
            f"{path} must be shorter than {limits.METRIC_MAX_LENGTH + 1} characters "
            f"(got {len(metric)}).",
            field=path,
        )
    if metric.isascii() and "\x00" not in metric:  # check_text's usual case, without a call
        return metric
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
    if type(properties) is not dict and not isinstance(properties, Mapping):
        raise KlaviyoValidationError(
            f"{path} must be a dict, not {type(properties).__name__}.", field=path
        )
    if len(properties) > limits.MAX_PROPERTIES:
        raise KlaviyoValidationError(
            f"{path} has {len(properties)} keys; Klaviyo accepts at most {limits.MAX_PROPERTIES}.",
            field=path,
        )
    return to_json(properties, path)


def item_event_properties(order_id: Any, item: Mapping[str, Any]) -> dict[str, Any]:
    """An Ordered Product's properties from its order's id and one of the order's Items:
    the item's own keys after ``OrderId``, with ``Brand`` named ``ProductBrand`` (last)."""
    properties = {"OrderId": order_id, **item}
    if "Brand" in properties:
        properties["ProductBrand"] = properties.pop("Brand")
    return properties


def item_event(payload: Mapping[str, Any], index: int) -> tuple[str, str, dict[str, Any], Any]:
    """(metric, unique_id, properties, value) of the ``index``-th event of a cleaned row's
    ``item_events``: the properties of ``item_event_properties``, the value the item's
    ``RowTotal`` (a float, as ``number`` makes every event value)."""
    spec = payload["item_events"]
    properties = payload["properties"]
    item = properties["Items"][index]
    value = item.get("RowTotal")
    return (
        spec["metric"],
        spec["unique_ids"][index],
        item_event_properties(properties["OrderId"], item),
        None if value is None else float(value),
    )


def expansions(payload: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], Any]]:
    """(metric, unique_id, properties, value) of every further event of a cleaned row, in
    the order they are sent: those derived from its Items, then its ``expand``."""
    spec = payload.get("item_events")
    if spec:
        for index in range(len(spec["unique_ids"])):
            yield item_event(payload, index)
    for event in payload.get("expand") or ():
        yield event["metric"], event["unique_id"], event["properties"], event["value"]


def expansion_count(payload: Mapping[str, Any]) -> int:
    """How many further events a row carries."""
    spec = payload.get("item_events")
    return (len(spec["unique_ids"]) if spec else 0) + len(payload.get("expand") or ())


def clean_item_events(
    spec: Any, properties: dict[str, Any], seen: set[tuple[str, str]]
) -> dict[str, Any]:
    """``{"metric", "unique_ids"}``: one unique_id per entry of the (cleaned)
    ``properties["Items"]``, each item a dict whose ``RowTotal`` is a number or None, and
    ``properties["OrderId"]`` a string. The items themselves were checked with the
    properties: the events derived from them (``item_event``) need no walk of their own."""
    path = "item_events"
    if type(spec) is dict:  # the usual case, without a set or an ABC check
        exact = spec.keys() == ITEM_EVENTS_KEYS
    else:
        exact = isinstance(spec, Mapping) and set(spec) == ITEM_EVENTS_KEYS
    if not exact:
        raise KlaviyoValidationError(
            f"{path} must be a dict with exactly the keys metric and unique_ids.", field=path
        )
    metric = clean_metric(spec["metric"], "item_events.metric")
    unique_ids = spec["unique_ids"]
    if type(unique_ids) is not list and (
        isinstance(unique_ids, (str, bytes, Mapping)) or not isinstance(unique_ids, (list, tuple))
    ):
        raise KlaviyoValidationError(
            f"{path}.unique_ids must be a list of strings.", field=f"{path}.unique_ids"
        )
    items = properties.get("Items")
    if not isinstance(items, list) or len(items) != len(unique_ids):
        count = len(items) if isinstance(items, list) else 0
        raise KlaviyoValidationError(
            f"{path}.unique_ids has {len(unique_ids)} entries for {count} properties.Items; "
            "each item needs one.",
            field=f"{path}.unique_ids",
        )
    if not isinstance(properties.get("OrderId"), str):
        raise KlaviyoValidationError(
            "properties.OrderId must be a string: each event of item_events carries it.",
            field="properties.OrderId",
        )
    cleaned = []
    for i, item in enumerate(items):  # as many as unique_ids (checked above)
        unique_id = unique_ids[i]
        if type(item) is not dict:
            raise KlaviyoValidationError(
                f"properties.Items[{i}] must be a dict: {path} makes an event of it.",
                field=f"properties.Items[{i}]",
            )
        if len(item) >= _MAX_PROPERTIES:  # plus OrderId
            raise KlaviyoValidationError(
                f"properties.Items[{i}] has {len(item)} keys; its event's properties "
                f"(with OrderId) may have at most {limits.MAX_PROPERTIES}.",
                field=f"properties.Items[{i}]",
            )
        # The usual values (a float total, a short ASCII id) pass without a call, the
        # rest through the same rules; an error's path is only formatted when needed.
        total = item.get("RowTotal")
        if total is not None and type(total) is not float:
            number(total, f"properties.Items[{i}].RowTotal")
        if not (
            type(unique_id) is str
            and 0 < len(unique_id) <= _KEY_MAX_LENGTH
            and unique_id.isascii()
            and "\x00" not in unique_id
        ):
            unique_id = key(unique_id, f"{path}.unique_ids[{i}]")
        pair = (metric, unique_id)
        if pair in seen:
            raise KlaviyoValidationError(
                f"{path}.unique_ids[{i}] repeats metric {metric!r} with unique_id {unique_id!r}.",
                field=f"{path}.unique_ids[{i}]",
            )
        seen.add(pair)
        cleaned.append(unique_id)
    return {"metric": metric, "unique_ids": cleaned}


def clean_expand(expand: Any, seen: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """``[{"metric", "unique_id", "properties", "value"}, ...]``. No two events of the row
    may repeat a (metric, unique_id) (``seen``: the row's own and its item events'):
    Klaviyo would keep one."""
    if isinstance(expand, (str, bytes, Mapping)) or not isinstance(expand, (list, tuple)):
        raise KlaviyoValidationError("expand must be a list of event dicts.", field="expand")
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
    return clean_event_fields(payload, unique_id, profiles)


def clean_event_fields(
    payload: Mapping[str, Any], unique_id: str, profiles: dict[Any, dict[str, Any]] | None
) -> dict[str, Any]:
    """``clean_event`` of a mapping whose keys the caller has checked: it reads the
    event's fields and ignores any other key (an event spec's ``unique_id`` and
    ``dedupe_key``, which ``outbox.build_events`` cleans itself)."""
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
    seen = {(metric, unique_id)}
    item_events = payload.get("item_events")
    if item_events:
        cleaned["item_events"] = clean_item_events(item_events, cleaned["properties"], seen)
    expand = payload.get("expand")
    if expand:
        cleaned["expand"] = clean_expand(expand, seen)
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
    if memo is not None and (type(profile) is dict or isinstance(profile, Mapping)):
        try:
            memo_key = tuple(sorted(profile.items()))
            cached = memo.get(memo_key)  # TypeError when a value is unhashable
        except TypeError:  # nested values (location, properties): not memoised
            memo_key = None
        else:
            if cached is not None:
                return cached
    cleaned = clean_profile_attributes(profile, for_event=True)
    if memo_key is not None:
        memo[memo_key] = cleaned  # type: ignore[index]
    return cleaned


def event_sizes(payload: Mapping[str, Any], encoded: str) -> None:
    """Refuse an event Klaviyo would refuse for its size: each event (with its profile)
    must fit in one request; a row's further events may be split across requests."""
    budget = limits.REQUEST_BYTES_BUDGET - limits.ITEM_OVERHEAD_BYTES
    derived = DERIVED_EVENT_EXTRA_BYTES if payload.get("item_events") else 0
    if len(encoded) + derived <= budget:
        return
    if not derived and not payload.get("expand"):
        raise KlaviyoValidationError(
            f"the event is {len(encoded)} bytes encoded; Klaviyo accepts at most "
            f"{budget} bytes per event.",
            field="properties",
        )
    # Rare: only rows over 4.7 MB are measured event by event.
    profile = len(json.dumps(payload["profile"]))
    own = {k: v for k, v in payload.items() if k not in ("expand", "item_events", "profile")}
    count = len(payload["item_events"]["unique_ids"]) if derived else 0
    paths = [f"properties.Items[{i}]" for i in range(count)]
    paths += [f"expand[{i}].properties" for i in range(len(payload.get("expand") or ()))]
    events = [("properties", own)] + [
        (path, {"metric": m, "unique_id": u, "properties": p, "value": v})
        for path, (m, u, p, v) in zip(paths, expansions(payload), strict=True)
    ]
    for path, event in events:
        size = profile + len(json.dumps(event)) + derived
        if size > budget:
            raise KlaviyoValidationError(
                f"{path.split('.')[0]}: the event is {size} bytes encoded; Klaviyo accepts "
                f"at most {budget} bytes per event.",
                field=path,
            )
