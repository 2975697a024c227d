"""System checks of the order integration: the declarative mapping, the status values,
the mapper's Placed Order, the placed signal and the metric names (ids E030-E036, W030),
the default paths the store did not set that are not on its models (W033: every path the
default mapper reads is reported, with what is sent instead), and a configuration that
can place an order before its lines exist (W034).

Registered by ``django_klaviyo.checks``; each function returns check messages and never
raises for a bad setting.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from django.apps import apps
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import FieldDoesNotExist
from django.utils.module_loading import import_string

from django_klaviyo.conf import setting_as_written as _get
from django_klaviyo.orders import fields as mapping
from django_klaviyo.rules.limits import METRIC_MAX_LENGTH


def did_you_mean(key: str, known: Any) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"Did you mean {close[0]!r}? " if close else ""


def is_metric_name(name: Any) -> bool:
    """A name Klaviyo takes as a metric: text of 1 to METRIC_MAX_LENGTH characters."""
    return isinstance(name, str) and bool(name.strip()) and len(name) <= METRIC_MAX_LENGTH


def _order_model() -> Any:
    label = _get("ORDER_MODEL")
    if not label or not isinstance(label, str):
        return None
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):
        return None  # E009


def check_mapping_settings() -> list[CheckMessage]:
    """Each mapping setting is a dict of known keys (E030)."""
    messages: list[CheckMessage] = []
    for setting, defaults in mapping.MAPPINGS.items():
        given = _get(setting)
        if not isinstance(given, Mapping):
            messages.append(
                Error(
                    f"KLAVIYO['{setting}'] must be a dict, not {type(given).__name__}.",
                    hint=f"Give only the keys that differ, e.g. {{'{next(iter(defaults))}': ...}}"
                    " (docs/mapping.md).",
                    id="django_klaviyo.E030",
                )
            )
            continue
        for key in given:
            if key not in defaults:
                messages.append(
                    Error(
                        f"KLAVIYO['{setting}'] has an unknown key {key!r}.",
                        hint=f"{did_you_mean(str(key), defaults)}Known keys: "
                        f"{', '.join(defaults)}.",
                        id="django_klaviyo.E030",
                    )
                )
        if setting == "METRIC_NAMES":
            for key, name in given.items():
                if not is_metric_name(name):
                    messages.append(
                        Error(
                            f"KLAVIYO['METRIC_NAMES'][{key!r}] must be a metric name "
                            f"(1 to {METRIC_MAX_LENGTH} characters).",
                            hint="Klaviyo's reports and CLV look for its default names "
                            f"({mapping.METRIC_NAMES.get(key, 'see docs')!r}); change them "
                            "only for an account that already uses others.",
                            id="django_klaviyo.E030",
                        )
                    )
    return messages


def check_mapping_paths() -> list[CheckMessage]:
    """ORDER_FIELDS paths exist on ORDER_MODEL, ORDER_LINE_FIELDS on its lines (E031)."""
    model = _order_model()
    if model is None:
        return []
    fields, line_fields = mapping.mapping("ORDER_FIELDS"), mapping.mapping("ORDER_LINE_FIELDS")
    given = _get("ORDER_FIELDS") if isinstance(_get("ORDER_FIELDS"), Mapping) else {}
    messages = _paths(model, "ORDER_FIELDS", fields, given, mapping.REQUIRED_ORDER_FIELDS)
    messages += _default_paths(model, "ORDER_FIELDS", fields, given)
    line_model = mapping.related_model(model, fields.get("lines"))
    if line_model is not None:
        given = _get("ORDER_LINE_FIELDS")
        given = given if isinstance(given, Mapping) else {}
        messages += _paths(
            line_model, "ORDER_LINE_FIELDS", line_fields, given, mapping.REQUIRED_LINE_FIELDS
        )
        messages += _default_paths(line_model, "ORDER_LINE_FIELDS", line_fields, given)
        if line_fields.get("unit_price") is None and line_fields.get("row_total") is None:
            messages.append(
                Error(
                    "ORDER_LINE_FIELDS maps neither 'unit_price' nor 'row_total': items "
                    "would have no price.",
                    hint="Map one of them to the line's price field.",
                    id="django_klaviyo.E031",
                )
            )
    if not fields.get("email") and not fields.get("customer_id"):
        messages.append(
            Error(
                "ORDER_FIELDS maps neither 'email' nor 'customer_id': order events would "
                "have no profile.",
                hint="Map 'email' to the order's (guest) email field.",
                id="django_klaviyo.E031",
            )
        )
    return messages


def _paths(
    model: Any, setting: str, resolved: dict[str, Any], given: Mapping[str, Any], required: Any
) -> list[CheckMessage]:
    """Paths the project gave, and the required ones even when left at their default
    (a default that misses says more than an empty event would)."""
    messages: list[CheckMessage] = []
    for key, path in resolved.items():
        if key not in given and key not in required:
            continue
        if key in required and path is None:
            problem = "it is required and set to None"
        else:
            problem = mapping.path_problem(model, path)
        if problem:
            messages.append(
                Error(
                    f"KLAVIYO['{setting}']['{key}'] = {path!r}: {problem}.",
                    hint=f"{_field_hint(model, path)}Map it to a field, a dotted path or a "
                    "callable of your model (docs/mapping.md).",
                    id="django_klaviyo.E031",
                )
            )
    return messages


# What the default mapper sends when an optional path is not on the model.
INSTEAD = {
    "ORDER_FIELDS": {
        "number": "OrderId and the unique_id will be the primary key",
        "currency": "events will carry no currency (Klaviyo assumes the account's)",
        "email": "profiles will have no email of the order's own (only the customer's)",
        "customer_email": "orders without an email of their own will have none",
        "customer_id": "profiles will have no external_id",
        "phone": "profiles will have no phone_number of the order's own (only an address's Phone)",
        "billing_address": "events will have no BillingAddress",
        "shipping_address": "events will have no ShippingAddress",
        "discount_code": "events will have no DiscountCode",
        "discount_value": "events will have no DiscountValue",
        "tracking_number": "Fulfilled Order will have no TrackingNumber",
        "tracking_url": "Fulfilled Order will have no TrackingURL",
        "carrier": "Fulfilled Order will have no Carrier",
        "cancel_reason": "Cancelled and Refunded Orders will have an empty Reason",
    },
    "ORDER_LINE_FIELDS": {
        "product_id": "ProductID will be the SKU",
        "sku": "SKU will be empty",
        "unit_price": "ItemPrice will be row_total / quantity",
        "row_total": "RowTotal will be unit_price x quantity",
        "product_url": "items will have no ProductURL",
        "image_url": "items will have no ImageURL",
        "categories": "Categories will be empty",
        "brand": "Brand and Brands will be empty",
    },
}
TIME_KEYS = ("placed_at", "fulfilled_at", "cancelled_at", "refunded_at", "updated_at")


def _default_paths(
    model: Any, setting: str, resolved: dict[str, Any], given: Mapping[str, Any]
) -> list[CheckMessage]:
    """One Warning naming each default path the store did not set that is not on
    ``model``, with what the default mapper sends instead (W033)."""
    missing: list[str] = []
    for key, path in resolved.items():
        if key in given or path is None or not isinstance(path, str):
            continue
        if mapping.path_problem(model, path) is None or _dated_by_fallback(model, key, resolved):
            continue
        missing.append(f"{key}: no field `{path}`; {_instead(setting, key)}")
    if not missing:
        return []
    return [
        Warning(
            f"KLAVIYO['{setting}'] reads default paths that are not on "
            f"{model._meta.label}: " + ". ".join(missing) + ".",
            hint="Map each to a field, a dotted path or a callable of your model, or set it "
            "to None to send without it (docs/mapping.md).",
            id="django_klaviyo.W033",
        )
    ]


def _dated_by_fallback(model: Any, key: str, resolved: dict[str, Any]) -> bool:
    """An event time whose own field is missing but ``updated_at`` is on the model: the
    documented fallback (the time of the save that changed the status), not reported."""
    if key not in TIME_KEYS or key == "updated_at":
        return False
    fallback = resolved.get("updated_at")
    return fallback is not None and mapping.path_problem(model, fallback) is None


def _instead(setting: str, key: str) -> str:
    if setting == "ORDER_FIELDS" and key in TIME_KEYS:
        return "events will be dated at save time"
    return INSTEAD.get(setting, {}).get(key, "it will be left out")


def _field_hint(model: Any, path: Any) -> str:
    if not isinstance(path, str):
        return ""
    names = [f.name for f in model._meta.get_fields()]
    return did_you_mean(path.split(".")[0], names)


def check_status_field() -> list[CheckMessage]:
    """ORDER_STATUS_FIELD is a field of ORDER_MODEL (E032) and every ORDER_STATUS_*
    value one of its choices (E033)."""
    model = _order_model()
    if model is None:
        return []
    name = _get("ORDER_STATUS_FIELD")
    try:
        field = model._meta.get_field(name)
    except (FieldDoesNotExist, TypeError):
        names = [f.name for f in model._meta.concrete_fields]
        return [
            Error(
                f"KLAVIYO['ORDER_STATUS_FIELD'] = {name!r} is not a field of "
                f"{model._meta.label}: no order event would ever be sent.",
                hint=f"{did_you_mean(str(name), names)}Name the field holding the order's status.",
                id="django_klaviyo.E032",
            )
        ]
    choices = {str(value) for value, _label in field.flatchoices} if field.choices else None
    if not choices:
        return []
    messages: list[CheckMessage] = []
    for key in ("PLACED", "FULFILLED", "CANCELLED", "REFUNDED"):
        for value in mapping.status_values(key):
            if value is not None and str(value) not in choices:
                messages.append(
                    Error(
                        f"KLAVIYO['ORDER_STATUS_{key}'] = {value!r} is not a choice of "
                        f"{model._meta.label}.{name}: that event would never fire.",
                        hint=f"{did_you_mean(str(value), choices)}Choices: "
                        f"{', '.join(sorted(choices))}.",
                        id="django_klaviyo.E033",
                    )
                )
    return messages


def check_placed_order_mapper() -> list[CheckMessage]:
    """A custom ORDER_EVENTS_MAPPER, asked for an empty, unsaved order in the placed
    status, returns a Placed Order (E034) with a value (W030). The package's own mapper
    is checked through its mapping (E031) instead. Lines cannot exist on an unsaved
    order: a Placed Order without items is caught when enqueued (a dead row)."""
    from django_klaviyo.orders.placement import order_mapper

    model = _order_model()
    if model is None:
        return []
    try:
        mapper, own = order_mapper()
    except Exception:
        return []  # E008
    if own:
        return []
    order = model()
    placed = mapping.status_values("placed")[0]
    try:
        setattr(order, _get("ORDER_STATUS_FIELD"), placed)
        specs = list(mapper(order, None, False) or [])
    except Exception:
        return []  # this mapper needs a saved order: the enqueue-time guard applies
    name = mapping.metric("placed_order")
    found = [s for s in specs if isinstance(s, Mapping) and s.get("metric") == name]
    if not found:
        return [
            Error(
                f"KLAVIYO['ORDER_EVENTS_MAPPER'] maps an order in status {placed!r} to no "
                f"{name!r} event.",
                hint="Return the Placed Order when the order enters the placed status "
                "(and when previous_status is None: order_placed() asks that way).",
                id="django_klaviyo.E034",
            )
        ]
    if any(s.get("value") is None for s in found):
        return [
            Warning(
                f"KLAVIYO['ORDER_EVENTS_MAPPER'] maps an empty placed order to a {name!r} "
                "without a value.",
                hint="Klaviyo's revenue and CLV need the order total as the event value.",
                id="django_klaviyo.W030",
            )
        ]
    return []


def check_placed_signal() -> list[CheckMessage]:
    """ORDER_PLACED_SIGNAL imports and is a Signal (E035)."""
    value = _get("ORDER_PLACED_SIGNAL")
    if not value:
        return []
    signal = value
    if isinstance(value, str):
        try:
            signal = import_string(value)
        except ImportError as exc:
            return [
                Error(
                    f"KLAVIYO['ORDER_PLACED_SIGNAL'] = {value!r} does not import: {exc}",
                    hint="e.g. 'oscar.apps.order.signals.order_placed'.",
                    id="django_klaviyo.E035",
                )
            ]
    if not callable(getattr(signal, "connect", None)):
        return [
            Error(
                "KLAVIYO['ORDER_PLACED_SIGNAL'] is not a django.dispatch.Signal.",
                hint="Name a signal sent with order=<the order> once its lines exist.",
                id="django_klaviyo.E035",
            )
        ]
    return []


def check_placement_without_lines() -> list[CheckMessage]:
    """W034: what happens to an order placed before its lines exist: created in the
    placed status (the status field's default), or with lines no save can be traced to."""
    model = _order_model()
    if model is None or _get("ORDER_PLACED_SIGNAL"):
        return []
    lines = mapping.mapping("ORDER_FIELDS").get("lines")
    link = mapping.line_link(model)
    if link is None:
        return [
            Warning(
                f"KLAVIYO['ORDER_FIELDS']['lines'] = {lines!r} is not a reverse foreign key "
                f"of {model._meta.label}: an order created in its placed status gets a dead "
                "Placed Order (empty_placed_order) that the saves of its lines cannot "
                "complete.",
                hint="Move the order to the placed status after saving its lines, set "
                "ORDER_PLACED_SIGNAL, or call django_klaviyo.order_placed(order) after "
                "them (docs/mapping.md, Orders created in their final status).",
                id="django_klaviyo.W034",
            )
        ]
    try:
        field = model._meta.get_field(_get("ORDER_STATUS_FIELD"))
    except (FieldDoesNotExist, TypeError):
        return []  # E032
    default = field.get_default() if field.has_default() else None
    if default is None or default not in mapping.status_values("placed"):
        return []
    default = str(default)  # a TextChoices member reads as its value
    return [
        Warning(
            f"{model._meta.label}.{field.name} defaults to the placed status "
            f"{default!r}: every order is placed when created, before its lines. "
            f"Its Placed Order is completed by the saves of its lines "
            f"({link[0]._meta.label}) in the same transaction; lines written by bulk_create "
            "or raw SQL leave it dead (empty_placed_order).",
            hint="Save the lines one by one inside the order's transaction.atomic(), or "
            "call django_klaviyo.order_placed(order) after writing them (docs/mapping.md, "
            "Orders created in their final status).",
            id="django_klaviyo.W034",
        )
    ]


ORDER_CHECKS = (
    check_mapping_settings,
    check_mapping_paths,
    check_status_field,
    check_placed_order_mapper,
    check_placed_signal,
    check_placement_without_lines,
)
