"""The declarative catalog mapping: ``KLAVIYO["CATALOG"]`` → catalog outbox rows.

::

    KLAVIYO["CATALOG"] = {
        "ITEMS": {"model": "shop.Product", "external_id": "sku", "title": "name",
                  "url": "url", "image_url": "image_url", "price": "price",
                  "categories": "categories"},
        "VARIANTS": {"model": "shop.Product", "external_id": "sku", "item": "sku",
                     "title": "name", "sku": "sku", "url": "url", "price": "price",
                     "inventory_quantity": "inventory"},
        "CATEGORIES": {"model": "shop.Category", "external_id": "slug", "name": "name"},
    }

Each value is an attribute path (``"product.sku"``; a manager gives its objects, a
method is called), a callable taking the object, or the dotted import path of such a
callable. A variant's ``item`` is its item's external id. An item's ``categories`` may
be category objects (mapped by CATEGORIES) or names: a name's external id is its slug,
and a row creating the category travels with the item.

ITEMS and VARIANTS also take ``prices``: a path to ``{currency: amount}`` for a store
selling in several currencies, sent in ``custom_metadata`` as ``price_<CODE>`` entries
(``currency_prices``). A variant not mapping ``inventory_policy`` gets
``KLAVIYO["CATALOG_INVENTORY_POLICY"]`` (1: out of stock, out of recommendations).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Model
from django.utils.module_loading import import_string
from django.utils.text import slugify

from django_klaviyo import rules
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.orders import fields as order_mapping
from django_klaviyo.orders.convert import money
from django_klaviyo.outbox import OutboxRow
from django_klaviyo.rules.events import clean_currency

Kind = OutboxEvent.Kind

SECTIONS = {
    "ITEMS": Kind.CATALOG_ITEM,
    "VARIANTS": Kind.CATALOG_VARIANT,
    "CATEGORIES": Kind.CATALOG_CATEGORY,
}
# Mapping keys → Klaviyo attribute names, per section.
FIELDS = {
    "ITEMS": {
        "title": "title",
        "description": "description",
        "url": "url",
        "price": "price",
        "image_url": "image_full_url",
        "thumbnail_url": "image_thumbnail_url",
        "images": "images",
        "published": "published",
        "custom_metadata": "custom_metadata",
    },
    "VARIANTS": {
        "title": "title",
        "description": "description",
        "sku": "sku",
        "url": "url",
        "price": "price",
        "inventory_quantity": "inventory_quantity",
        "inventory_policy": "inventory_policy",
        "image_url": "image_full_url",
        "thumbnail_url": "image_thumbnail_url",
        "images": "images",
        "published": "published",
        "custom_metadata": "custom_metadata",
    },
    "CATEGORIES": {"name": "name"},
}
_SPECIAL = {
    "ITEMS": ("model", "external_id", "categories", "prices"),
    "VARIANTS": ("model", "external_id", "item", "prices"),
    "CATEGORIES": ("model", "external_id"),
}


def catalog_config() -> dict[str, dict[str, Any]]:
    """The configured sections, checked; ``{}`` when there is no catalog mapping."""
    config = klaviyo_settings.CATALOG or {}
    if not isinstance(config, Mapping):
        raise ImproperlyConfigured("KLAVIYO['CATALOG'] must be a dict.")
    sections = {}
    for section, spec in config.items():
        if section not in SECTIONS:
            raise ImproperlyConfigured(
                f"KLAVIYO['CATALOG'] has no section {section!r}; use ITEMS, VARIANTS, CATEGORIES."
            )
        if not isinstance(spec, Mapping) or not spec.get("model") or not spec.get("external_id"):
            raise ImproperlyConfigured(
                f"KLAVIYO['CATALOG']['{section}'] needs 'model' and 'external_id'."
            )
        unknown = sorted(set(spec) - set(FIELDS[section]) - set(_SPECIAL[section]))
        if unknown:
            raise ImproperlyConfigured(
                f"KLAVIYO['CATALOG']['{section}'] has no key {unknown[0]!r}."
            )
        sections[section] = dict(spec)
    return sections


def sections_for(model: type[Model]) -> list[str]:
    """The sections mapping ``model`` (a product may be both item and variant)."""
    label = model._meta.label
    return [s for s, spec in catalog_config().items() if model_label(spec["model"]) == label]


def section_model(section: str) -> type[Model]:
    spec = catalog_config().get(section)
    if spec is None:
        raise ImproperlyConfigured(f"KLAVIYO['CATALOG'] maps no {section}.")
    return apps.get_model(model_label(spec["model"]))


def model_label(model: Any) -> str:
    return model if isinstance(model, str) else model._meta.label


def is_import_path(obj_or_model: Any, spec: Any) -> bool:
    """A dotted path whose first step is not an attribute: a callable to import."""
    return isinstance(spec, str) and "." in spec and not hasattr(obj_or_model, spec.split(".")[0])


def resolve(obj: Any, spec: Any) -> Any:
    """The value ``spec`` (path, callable or import path) names for ``obj``: attribute
    paths are read like the order mapping's (``django_klaviyo.orders.fields.resolve``); a
    related manager gives its objects."""
    if is_import_path(obj, spec):
        return _import(spec)(obj)
    value = order_mapping.resolve(obj, spec)
    if hasattr(value, "all") and callable(value.all) and not isinstance(value, Model):
        return list(value.all())
    return value


def _import(path: str) -> Callable[[Any], Any]:
    try:
        return import_string(path)  # type: ignore[no-any-return]
    except ImportError as exc:
        raise ImproperlyConfigured(f"catalog mapping {path!r} does not import: {exc}") from exc


def _text(value: Any) -> Any:
    """Model values Klaviyo takes as text (an ImageField file, a lazy URL) as str."""
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    if hasattr(value, "url") and not isinstance(value, Model):
        try:
            return value.url
        except ValueError:  # an empty FileField
            return None
    if isinstance(value, Decimal):
        return value  # the rules make it a number
    return str(value)


def external_id_of(obj: Any, section: str) -> str:
    return _id(resolve(obj, catalog_config()[section]["external_id"]), "external_id")


def _id(value: Any, field: str) -> str:
    """An id as text; a missing one is refused (never sent as "None")."""
    if value is None or value == "":
        raise KlaviyoValidationError(f"the mapped {field} is empty.", field=field)
    return str(value)


def _cleaned(kind: str, payload: dict[str, Any], dedupe_key: str | None = None) -> OutboxRow:
    """A row cleaned now, so a bad value is reported for this object alone."""
    return OutboxRow(
        kind=kind,
        payload=rules.clean(kind, payload),
        dedupe_key=dedupe_key,
        rules_version=rules.RULES_VERSION,
    )


def upsert_rows(obj: Any, section: str, *, create: bool) -> list[OutboxRow]:
    """The rows that bring Klaviyo's copy of ``obj`` up to date; raises
    ``KlaviyoValidationError`` naming the field Klaviyo would refuse."""
    spec = catalog_config()[section]
    attributes = {
        FIELDS[section][key]: _text(resolve(obj, path))
        for key, path in spec.items()
        if key in FIELDS[section]
    }
    if "prices" in spec:
        prices = currency_prices(resolve(obj, spec["prices"]))
        metadata = attributes.get("custom_metadata")
        if prices and (metadata is None or isinstance(metadata, Mapping)):
            # Beside the mapped metadata; a price_<CODE> key of both takes the price.
            attributes["custom_metadata"] = {**(metadata or {}), **prices}
    if section == "VARIANTS" and "inventory_policy" not in spec:
        policy = klaviyo_settings.CATALOG_INVENTORY_POLICY
        if policy is not None:
            attributes["inventory_policy"] = policy
    payload: dict[str, Any] = {
        "op": "upsert",
        "external_id": external_id_of(obj, section),
        "create": create,
        "attributes": attributes,
    }
    rows: list[OutboxRow] = []
    if section == "ITEMS" and "categories" in spec:
        ids, category_rows = _categories(resolve(obj, spec["categories"]) or [])
        payload["categories"] = ids
        rows += category_rows
    if section == "VARIANTS":
        payload["item"] = _id(resolve(obj, spec.get("item", spec["external_id"])), "item")
    rows.append(_cleaned(SECTIONS[section], payload))
    return rows


def currency_prices(prices: Any) -> dict[str, float]:
    """A mapped ``prices`` value, ``{currency: amount}``, as the ``custom_metadata``
    entries Klaviyo's templates read: ``{"price_EUR": 12.5, "price_GBP": 10.9}``
    (3-letter ISO 4217 codes, upper-cased; amounts rounded to the cent). None or ``{}``
    adds nothing; anything else is refused naming ``prices``."""
    if prices is None:
        return {}
    if not isinstance(prices, Mapping):
        raise KlaviyoValidationError(
            f"the mapped prices must be a dict of currency to amount, not {type(prices).__name__}.",
            field="prices",
        )
    entries: dict[str, float] = {}
    for currency, amount in prices.items():
        try:
            code = clean_currency(currency)
        except KlaviyoValidationError:
            code = None
        if code is None:
            raise KlaviyoValidationError(
                f"prices: {currency!r} is not a 3-letter ISO 4217 currency code.",
                field="prices",
            )
        try:
            value = money(amount)
        except KlaviyoValidationError:
            value = None
        if value is None or value < 0:
            raise KlaviyoValidationError(
                f"prices.{code}: {amount!r} is not an amount of zero or more.",
                field=f"prices.{code}",
            )
        entries[f"price_{code}"] = value
    return entries


def delete_row(obj: Any, section: str) -> OutboxRow:
    payload = {"op": "delete", "external_id": external_id_of(obj, section)}
    return _cleaned(SECTIONS[section], payload)


def _categories(values: Iterable[Any]) -> tuple[list[str], list[OutboxRow]]:
    ids: list[str] = []
    rows: list[OutboxRow] = []
    for value in values:
        if isinstance(value, Model):
            ids.append(external_id_of(value, "CATEGORIES"))
            continue
        name = str(value).strip()
        if not name:
            continue
        category_id = slugify(name) or name
        ids.append(category_id)
        payload = {
            "op": "upsert",
            "external_id": category_id,
            "create": True,
            "attributes": {"name": name},
        }
        # A named category is created once; renaming it means a new name (id).
        rows.append(
            _cleaned(Kind.CATALOG_CATEGORY, payload, f"catalog_category:{category_id}"[:255])
        )
    return ids, rows
