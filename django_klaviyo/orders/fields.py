"""The declarative mapping: where the default order mapper reads each value.

A store describes its models in settings instead of writing a mapper::

    KLAVIYO = {
        "ORDER_MODEL": "shop.Order",
        "ORDER_STATUS_FIELD": "state",
        "ORDER_FIELDS": {"total": "grand_total", "lines": "items", "email": "guest_email"},
        "ORDER_LINE_FIELDS": {"unit_price": "price", "name": "product.title"},
    }

Each entry is a dotted attribute path (``"product.brand.name"``; a zero-argument method at
the end of a path is called, a related manager gives its ``.all()``), a callable taking
the object, or None (not mapped). Only the keys given replace the defaults below. A path
that does not resolve at run time gives None (the value is left out); the system checks
(``django_klaviyo.E03x``) report at startup every path that is not on the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MethodType
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist
from django.db import models
from django.db.models import QuerySet

from django_klaviyo.conf import klaviyo_settings

__all__ = ["mapping", "metric", "read", "resolve", "resolve_many", "status_values"]

ORDER_FIELDS: dict[str, Any] = {
    # OrderId and the unique_id of the order's events; the primary key when unset or empty.
    "number": "number",
    # Placed Order's value (and Cancelled Order's).
    "total": "total",
    "currency": "currency",
    # The profile: email (a guest's only identifier), else the customer's email, and the
    # customer's id as external_id.
    "email": "email",
    "customer_email": "customer.email",
    "customer_id": "customer_id",
    # The profile's phone_number (SMS-only customers have no email), by default the
    # billing address's phone (a dict key or an attribute; most stores keep it there):
    # cleaned to E.164 ("+1 (415) 555-0100" -> "+14155550100"); one that is not E.164 is
    # left out, the event kept on the other identifiers, and the row's outcome_note says so.
    "phone": "billing_address.phone",
    # The storefront visitor's anonymous id (docs/storefront.md), so the order's events
    # land on the profile of the visitor's earlier browse events; None: not mapped.
    "anonymous_id": None,
    # The order's lines: a related manager or any iterable.
    "lines": "lines",
    # A dict with snake_case keys (first_name, address1, country_code, ...) or an object
    # with such attributes (django-oscar's line1/line4/state/postcode are understood too).
    "billing_address": "billing_address",
    "shipping_address": "shipping_address",
    "discount_code": "discount_code",
    "discount_value": "discount_value",
    # Event times; updated_at when the status's own time is not mapped or empty.
    "placed_at": "placed_at",
    "fulfilled_at": "fulfilled_at",
    "cancelled_at": "cancelled_at",
    "refunded_at": "refunded_at",
    "updated_at": "updated_at",
    "tracking_number": "tracking_number",
    "tracking_url": "tracking_url",
    "carrier": "carrier",
    # The Reason of a Cancelled Order (and of a Refunded Order sent by status).
    "cancel_reason": "cancel_reason",
}

ORDER_LINE_FIELDS: dict[str, Any] = {
    # Ordered Product's unique_id is "<order id>-<line id>".
    "id": "pk",
    "product_id": "product_id",
    "sku": "sku",
    "name": "name",
    "quantity": "quantity",
    "unit_price": "unit_price",
    # The line's total; unit_price x quantity when unset or empty.
    "row_total": None,
    "product_url": "product_url",
    "image_url": "image_url",
    # A list or a comma-separated string.
    "categories": "categories",
    "brand": "brand",
}

REFUND_FIELDS: dict[str, Any] = {
    # Identifies the refund: its events' dedupe key and, after the first refund, unique_id.
    "id": "pk",
    "amount": "amount",
    "reason": "reason",
    # The refunded lines; an empty list means "the amount, no particular items".
    "lines": "lines",
    "created_at": "created_at",
}

REFUND_LINE_FIELDS: dict[str, Any] = {
    # The order line refunded (mapped with ORDER_LINE_FIELDS).
    "line": "line",
    "quantity": "quantity",
    # The amount refunded for this line; the order line's unit price x quantity when unset.
    "amount": "amount",
}

METRIC_NAMES: dict[str, str] = {
    "placed_order": "Placed Order",
    "ordered_product": "Ordered Product",
    "fulfilled_order": "Fulfilled Order",
    "cancelled_order": "Cancelled Order",
    "refunded_order": "Refunded Order",
    "viewed_product": "Viewed Product",
    "added_to_cart": "Added to Cart",
    "started_checkout": "Started Checkout",
    "viewed_category": "Viewed Category",
    "searched_site": "Searched Site",
}

# Which setting holds which defaults.
MAPPINGS: dict[str, dict[str, Any]] = {
    "ORDER_FIELDS": ORDER_FIELDS,
    "ORDER_LINE_FIELDS": ORDER_LINE_FIELDS,
    "REFUND_FIELDS": REFUND_FIELDS,
    "REFUND_LINE_FIELDS": REFUND_LINE_FIELDS,
    "METRIC_NAMES": METRIC_NAMES,
}

# Paths a Placed Order cannot do without: checked at startup even when left at the default.
REQUIRED_ORDER_FIELDS = ("total", "lines")
REQUIRED_LINE_FIELDS = ("name", "quantity")


def mapping(setting: str) -> dict[str, Any]:
    """The defaults of ``setting`` with the project's entries over them (a fresh dict)."""
    return dict(merged_mapping(setting))


def merged_mapping(setting: str) -> dict[str, Any]:
    """``mapping(setting)``, merged once until a setting changes; read-only for callers."""

    def merge() -> dict[str, Any]:
        given = klaviyo_settings.get(setting)
        if not isinstance(given, Mapping):
            given = {}  # reported by the django_klaviyo.E030 check
        return {**MAPPINGS[setting], **given}

    return klaviyo_settings.memo(("mapping", setting), merge)


def metric(name: str) -> str:
    """The configured Klaviyo metric name of ``name`` (a key of METRIC_NAMES)."""
    return merged_mapping("METRIC_NAMES")[name]


def status_values(key: str) -> tuple[Any, ...]:
    """The status values of ``ORDER_STATUS_<KEY>`` (one value or a list of them)."""

    def values() -> tuple[Any, ...]:
        value = klaviyo_settings.get(f"ORDER_STATUS_{key.upper()}")
        if isinstance(value, (list, tuple, set, frozenset)):
            return tuple(value)
        return (value,)

    return klaviyo_settings.memo(("status_values", key), values)


def status_table() -> tuple[tuple[Any, ...], ...]:
    """``status_values`` of placed, fulfilled, cancelled and refunded, in that order: one
    look-up for the save receiver, which asks on every save of an order."""
    return klaviyo_settings.memo(
        "status_table",
        lambda: tuple(
            status_values(key) for key in ("placed", "fulfilled", "cancelled", "refunded")
        ),
    )


def maps_status(status: Any) -> bool:
    """Whether ``status`` is one of the ORDER_STATUS_* values (placed, fulfilled,
    cancelled or refunded): the default mapper sends nothing for any other."""
    placed, fulfilled, cancelled, refunded = status_table()
    return status in placed or status in fulfilled or status in cancelled or status in refunded


def resolve(obj: Any, path: Any) -> Any:
    """The value at ``path`` (dotted attributes, a callable, or None) on ``obj``."""
    if path is None or obj is None:
        return None
    parts = _PATHS.get(path) if type(path) is str else None
    if parts is None:
        if callable(path):
            return path(obj)
        parts = tuple(str(path).split("."))
        if type(path) is str:
            _PATHS[path] = parts
    value = obj
    for part in parts:
        try:
            # A dict (a refund given as data, an address) is read by key.
            kind = type(value)
            mapping_type = _MAPPING_TYPES.get(kind)
            if mapping_type is None:
                mapping_type = _MAPPING_TYPES[kind] = isinstance(value, Mapping)
            value = value.get(part) if mapping_type else getattr(value, part)
        except (AttributeError, ValueError, ObjectDoesNotExist):
            # ValueError: a relation of an unsaved instance (a check on an empty order).
            return None
        if value is None:
            return None
        if type(value) is MethodType:
            value = value()
    return value


# Dotted paths split once per process (the paths come from settings: a handful).
_PATHS: dict[str, tuple[str, ...]] = {}
# Whether a type is a Mapping, looked up once per type (an ABC check costs more).
_MAPPING_TYPES: dict[type, bool] = {}


def resolve_many(obj: Any, path: Any) -> list[Any]:
    """A list from a related manager, queryset or iterable at ``path`` ([] when unset)."""
    cached = getattr(obj, "_prefetched_objects_cache", None)
    if cached and type(path) is str and path in cached:
        # Prefetched (or handed over by the store, as the example shop's checkout does):
        # what the related manager's all() would return, without building the manager.
        found = cached[path]
        rows = getattr(found, "_result_cache", None)
        if (
            type(rows) is list
            and getattr(found, "_prefetch_done", False)
            and type(found).__iter__ is QuerySet.__iter__
        ):
            # What iterating the filled queryset gives, without its fetch machinery.
            return list(rows)
        return list(found)
    try:
        value = resolve(obj, path)
    except ValueError:
        return []
    if value is None:
        return []
    if hasattr(value, "all") and callable(value.all):
        try:
            return list(value.all())
        except ValueError:  # an unsaved instance has no related rows yet
            return []
    if isinstance(value, (str, bytes, Mapping)):
        return []
    return list(value)


def read(obj: Any, setting: str, key: str, resolved: dict[str, Any] | None = None) -> Any:
    return resolve(obj, (resolved or mapping(setting)).get(key))


# --- checking paths against models ----------------------------------------------------


def path_problem(model: type[models.Model], path: Any) -> str | None:
    """Why ``path`` does not resolve on ``model`` (None when it does or cannot be told:
    a callable, a property, or a step past a non-relational attribute)."""
    if path is None or callable(path):
        return None
    if not isinstance(path, str) or not path:
        return f"{path!r} is not a dotted path, a callable or None"
    current: Any = model
    for part in path.split("."):
        if current is None:
            return None
        try:
            field = current._meta.get_field(part)
        except FieldDoesNotExist:
            if hasattr(current, part):
                return None  # a property, method or manager: its result is not known here
            return f"{current._meta.label} has no field or attribute {part!r}"
        current = field.related_model if field.is_relation else None
    return None


def field_path(model: type[models.Model], path: Any) -> bool:
    """Whether ``path`` is a chain of fields of ``model``: what a query can filter on or
    read as a value (a callable, a property or a method is not)."""
    if not isinstance(path, str) or not path:
        return False
    current: Any = model
    for part in path.split("."):
        if current is None:
            return False
        try:
            field = current._meta.get_field(part)
        except FieldDoesNotExist:
            return False
        current = field.related_model if field.is_relation else None
    return True


def related_model(model: type[models.Model], path: Any) -> type[models.Model] | None:
    """The model reached by a relation path (the lines of an order), when known."""
    if not isinstance(path, str) or not path:
        return None
    current: Any = model
    for part in path.split("."):
        try:
            field = current._meta.get_field(part)
        except (FieldDoesNotExist, AttributeError):
            return None
        if not field.is_relation:
            return None
        current = field.related_model
    return current


def line_link(model: type[models.Model]) -> tuple[type[models.Model], str] | None:
    """The line model of ``model`` and the attribute of a line holding its order's
    primary key, when ORDER_FIELDS["lines"] is one reverse foreign key (``"lines"``,
    ``"items"``); None otherwise (a longer path, a many-to-many, a property): saves of
    such lines cannot be told apart, so they do not complete an order created placed."""

    def link() -> tuple[type[models.Model], str] | None:
        path = merged_mapping("ORDER_FIELDS").get("lines")
        if not isinstance(path, str) or not path or "." in path:
            return None
        try:
            field = model._meta.get_field(path)
        except FieldDoesNotExist:
            return None
        if not field.one_to_many or field.concrete:
            return None
        return field.related_model, field.field.attname

    return klaviyo_settings.memo(("line_link", model._meta.label_lower), link)
