"""Catalog and back-in-stock rules: ``catalog_item``, ``catalog_variant``,
``catalog_category`` and ``back_in_stock`` rows.

A catalog row is ``{"op": "upsert" | "delete", "external_id", "create", "attributes",
...}``: ``create`` says which job to try first (the store just created the object), and
the flusher falls back to the other one when Klaviyo answers "already exists" or "does
not exist". Attributes are the ones Klaviyo's create jobs require, so a row can always
become either job.

The client's calls of these kinds are cleaned by the same rules, errors naming their
arguments: ``clean_catalog_resources`` (the resources of ``start_catalog_job`` and
``run_catalog_job``) and ``clean_back_in_stock_request``
(``create_back_in_stock_subscription``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits
from django_klaviyo.rules.identifiers import PROFILE_IDENTIFIERS, clean_profile
from django_klaviyo.rules.shapes import batch, located, mapping, unknown_keys
from django_klaviyo.rules.values import check_text, number, to_json

BACK_IN_STOCK_CHANNELS = ("EMAIL", "PUSH", "SMS", "WHATSAPP")
# Klaviyo's external ids end up in resource ids ("$custom:::$default:::<id>").
EXTERNAL_ID_MAX_LENGTH = 255

_TEXT = ("title", "description", "url", "image_full_url", "image_thumbnail_url", "sku")
# What each kind carries, and what Klaviyo's create job requires of it.
ATTRIBUTES = {
    "item": frozenset(
        {
            "title",
            "description",
            "url",
            "price",
            "image_full_url",
            "image_thumbnail_url",
            "images",
            "custom_metadata",
            "published",
        }
    ),
    "variant": frozenset(
        {
            "title",
            "description",
            "sku",
            "url",
            "price",
            "inventory_quantity",
            "inventory_policy",
            "image_full_url",
            "image_thumbnail_url",
            "images",
            "custom_metadata",
            "published",
        }
    ),
    "category": frozenset({"name"}),
}
REQUIRED = {
    "item": ("title", "url"),
    "variant": ("title", "sku", "url", "price", "inventory_quantity"),
    "category": ("name",),
}


def external_id(value: Any, path: str = "external_id") -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise KlaviyoValidationError(f"{path} must be a non-empty string.", field=path)
    value = value.strip()
    if len(value) > EXTERNAL_ID_MAX_LENGTH:
        raise KlaviyoValidationError(
            f"{path} must be at most {EXTERNAL_ID_MAX_LENGTH} characters.", field=path
        )
    return check_text(value, path)


def _attribute(kind: str, name: str, value: Any) -> Any:
    path = f"attributes.{name}"
    if value is None:
        return None
    if name in _TEXT or name == "name":
        if not isinstance(value, str):
            raise KlaviyoValidationError(f"{path} must be a string.", field=path)
        return check_text(value, path)
    if name in ("price", "inventory_quantity"):
        result = number(value, path)
        if result is not None and result < 0 and name == "price":
            raise KlaviyoValidationError(f"{path} must not be negative.", field=path)
        return result
    if name == "inventory_policy":
        if value not in limits.CATALOG_INVENTORY_POLICIES or isinstance(value, bool):
            raise KlaviyoValidationError(f"{path} must be 0, 1 or 2.", field=path)
        return value
    if name == "published":
        if not isinstance(value, bool):
            raise KlaviyoValidationError(f"{path} must be true or false.", field=path)
        return value
    if name == "images":
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise KlaviyoValidationError(f"{path} must be a list of URLs.", field=path)
        return [check_text(v, path) for v in value]
    if name == "custom_metadata":
        return _custom_metadata(value, path)
    raise KlaviyoValidationError(f"a catalog {kind} has no attribute {name!r}.", field=path)


def _custom_metadata(value: Any, path: str) -> dict[str, Any]:
    """Klaviyo's "flat JSON blob" of at most 100kb: a dict whose values are not dicts."""
    if not isinstance(value, Mapping):
        raise KlaviyoValidationError(f"{path} must be a dict.", field=path)
    cleaned = to_json(dict(value), path)
    for key, item in cleaned.items():
        if isinstance(item, dict):
            where = f"{path}.{key}"
            raise KlaviyoValidationError(
                f"{where} is a dict; Klaviyo takes custom_metadata flat (one level of keys).",
                field=where,
            )
    size = len(json.dumps(cleaned, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limits.CATALOG_CUSTOM_METADATA_MAX_BYTES:
        raise KlaviyoValidationError(
            f"{path} is {size:,} bytes of JSON; Klaviyo takes at most "
            f"{limits.CATALOG_CUSTOM_METADATA_MAX_BYTES:,}.",
            field=path,
        )
    return cleaned


def _clean_attributes(kind: str, attributes: Any, *, complete: bool = True) -> dict[str, Any]:
    """``complete``: what Klaviyo's create job requires is there (a row can become
    either job; an update job's resource may carry only what changes)."""
    if not isinstance(attributes, Mapping):
        raise KlaviyoValidationError("attributes must be a dict.", field="attributes")
    cleaned = {}
    for name, value in attributes.items():
        if name not in ATTRIBUTES[kind]:
            raise KlaviyoValidationError(
                f"a catalog {kind} has no attribute {name!r}.", field=f"attributes.{name}"
            )
        value = _attribute(kind, name, value)
        if value is not None:
            cleaned[name] = value
    if not complete:
        return cleaned
    for name in REQUIRED[kind]:
        if cleaned.get(name) in (None, ""):
            raise KlaviyoValidationError(
                f"a catalog {kind} needs attributes.{name}.", field=f"attributes.{name}"
            )
    if kind != "category":
        cleaned.setdefault("description", "")
    return cleaned


def _catalog_cleaner(kind: str) -> Any:
    def clean(payload: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(payload, Mapping):
            raise KlaviyoValidationError("payload must be a dict.", field="payload")
        op = payload.get("op")
        if op not in ("upsert", "delete"):
            raise KlaviyoValidationError("op must be 'upsert' or 'delete'.", field="op")
        cleaned: dict[str, Any] = {"op": op, "external_id": external_id(payload.get("external_id"))}
        if op == "delete":
            return cleaned
        cleaned["create"] = bool(payload.get("create", False))
        cleaned["attributes"] = _clean_attributes(kind, payload.get("attributes"))
        if kind == "item":
            categories = payload.get("categories") or []
            if not isinstance(categories, (list, tuple)):
                raise KlaviyoValidationError(
                    "categories must be a list of external ids.", field="categories"
                )
            cleaned["categories"] = sorted(
                {external_id(c, f"categories[{i}]") for i, c in enumerate(categories)}
            )
        if kind == "variant":
            cleaned["item"] = external_id(payload.get("item"), "item")
        return cleaned

    clean.__name__ = f"clean_catalog_{kind}"
    clean.__doc__ = f"A ``catalog_{kind}`` row's payload."
    return clean


clean_catalog_item = _catalog_cleaner("item")
clean_catalog_variant = _catalog_cleaner("variant")
clean_catalog_category = _catalog_cleaner("category")


# --- the client's catalog jobs (``KlaviyoClient.start_catalog_job``) ---------------------

# Klaviyo's JSON:API type of each kind, and the id of a $custom catalog resource:
# integration, catalog, then the store's external id.
RESOURCE_TYPES = {
    "item": "catalog-item",
    "variant": "catalog-variant",
    "category": "catalog-category",
}
CATALOG_ID_PREFIX = "$custom:::$default:::"
CATALOG_OPS = ("create", "update", "delete")
# Create attributes naming the catalog the prefix above names, and nothing else.
_CATALOG_NAMES = {"integration_type": "$custom", "catalog_type": "$default"}
# What a job's resource may relate to: name -> (the related kind, to-many).
RELATIONSHIPS: dict[tuple[str, str], dict[str, tuple[str, bool]]] = {
    ("item", "create"): {"categories": ("category", True)},
    ("item", "update"): {"categories": ("category", True)},
    ("variant", "create"): {"item": ("item", False)},
    ("category", "create"): {"items": ("item", True)},
    ("category", "update"): {"items": ("item", True)},
}


def check_job(kind: str, op: str) -> None:
    """Refuse a catalog kind or job operation Klaviyo does not have."""
    if kind not in RESOURCE_TYPES:
        raise KlaviyoValidationError(f"unknown catalog kind {kind!r}.", field="kind")
    if op not in CATALOG_OPS:
        raise KlaviyoValidationError(f"unknown catalog operation {op!r}.", field="op")


def clean_catalog_resources(kind: str, op: str, resources: Any) -> list[dict[str, Any]]:
    """The resources of a client's catalog ``op`` job (as ``catalog_resource`` builds
    them), by the catalog rows' rules: external ids, then each attribute as a row's; a
    create carries what Klaviyo requires, an update only known attributes. Errors name
    the resource (``resources[3].attributes.price``)."""
    check_job(kind, op)
    return [
        _resource(kind, op, resource, f"resources[{i}]")
        for i, resource in enumerate(
            batch(resources, "resources", limits.CATALOG_RESOURCES_PER_JOB)
        )
    ]


def _resource(kind: str, op: str, resource: Any, field: str) -> dict[str, Any]:
    resource = mapping(resource, field)
    keys = {"create": ("type", "attributes", "relationships"), "delete": ("type", "id")}
    unknown_keys(
        resource,
        keys.get(op, ("type", "id", "attributes", "relationships")),
        field,
        f"part of a catalog {kind} {op} resource",
    )
    if resource.get("type") != RESOURCE_TYPES[kind]:
        raise KlaviyoValidationError(
            f"{field}.type must be {RESOURCE_TYPES[kind]!r}.", field=f"{field}.type"
        )
    cleaned: dict[str, Any] = {"type": RESOURCE_TYPES[kind]}
    if op != "create":
        cleaned["id"] = _catalog_id(resource.get("id"), f"{field}.id")
    if op == "delete":
        return cleaned
    attributes = mapping(resource.get("attributes"), f"{field}.attributes")
    if op == "create":
        named = {}
        for name, value in _CATALOG_NAMES.items():
            if name in attributes and attributes[name] not in (None, value):
                where = f"{field}.attributes.{name}"
                raise KlaviyoValidationError(f"{where} must be {value!r}.", field=where)
            if attributes.get(name) is not None:
                named[name] = value
        rest = {k: v for k, v in attributes.items() if k not in ("external_id", *_CATALOG_NAMES)}
        with located(field):
            cleaned["attributes"] = {
                "external_id": external_id(attributes.get("external_id"), "attributes.external_id"),
                **named,
                **_clean_attributes(kind, rest),
            }
    else:
        with located(field):
            cleaned["attributes"] = _clean_attributes(kind, attributes, complete=False)
    relationships = _relationships(kind, op, resource.get("relationships"), field)
    if relationships:
        cleaned["relationships"] = relationships
    return cleaned


def _relationships(kind: str, op: str, value: Any, field: str) -> dict[str, Any]:
    allowed = RELATIONSHIPS.get((kind, op), {})
    field = f"{field}.relationships"
    value = {} if value is None else mapping(value, field)
    unknown_keys(value, allowed, field, f"a relationship of a catalog {kind} {op}")
    cleaned = {}
    for name, linked in value.items():
        related, many = allowed[name]
        where = f"{field}.{name}.data"
        data = mapping(linked, f"{field}.{name}").get("data")
        if many:
            links = [
                _link(related, d, f"{where}[{i}]")
                for i, d in enumerate(batch(data, where, limits.CATALOG_RESOURCES_PER_JOB))
            ]
            cleaned[name] = {"data": links}
        else:
            cleaned[name] = {"data": _link(related, data, where)}
    if (kind, op) == ("variant", "create") and "item" not in cleaned:
        raise KlaviyoValidationError(
            "a catalog variant is created with its item.", field=f"{field}.item"
        )
    return cleaned


def _link(kind: str, value: Any, field: str) -> dict[str, str]:
    value = mapping(value, field)
    unknown_keys(value, ("type", "id"), field, "part of a resource identifier")
    if value.get("type") != RESOURCE_TYPES[kind]:
        raise KlaviyoValidationError(
            f"{field}.type must be {RESOURCE_TYPES[kind]!r}.", field=f"{field}.type"
        )
    return {"type": RESOURCE_TYPES[kind], "id": _catalog_id(value.get("id"), f"{field}.id")}


def _catalog_id(value: Any, field: str) -> str:
    """Klaviyo's id of a store's catalog resource, its external id cleaned as a row's."""
    if not isinstance(value, str) or not value.startswith(CATALOG_ID_PREFIX):
        raise KlaviyoValidationError(
            f"{field} must be {CATALOG_ID_PREFIX!r} followed by the external id.", field=field
        )
    return CATALOG_ID_PREFIX + external_id(value.removeprefix(CATALOG_ID_PREFIX), field)


# --- back in stock -------------------------------------------------------------------

# Where a back-in-stock subscription's fields come from: a row's payload keys, or the
# arguments of ``KlaviyoClient.create_back_in_stock_subscription``.
_ROW_FIELDS: dict[str, str] = {}
_REQUEST_FIELDS = {
    "variant": "variant_external_id",
    **{name: f"profile.{name}" for name in PROFILE_IDENTIFIERS},
}


def clean_back_in_stock(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``{"profile", "variant", "channels"}``: identifiers only (Klaviyo takes email,
    phone_number, external_id here; a row written from a user's whole profile drops the
    rest), the variant's external id, Klaviyo's channel names."""
    if not isinstance(payload, Mapping):
        raise KlaviyoValidationError("payload must be a dict.", field="payload")
    return _subscription(
        payload.get("profile"), payload.get("variant"), payload.get("channels"), _ROW_FIELDS
    )


def clean_back_in_stock_request(
    profile: Any, variant_external_id: Any, channels: Any
) -> dict[str, Any]:
    """``KlaviyoClient.create_back_in_stock_subscription``'s arguments, by the
    ``back_in_stock`` row's rule, as ``{"profile", "variant", "channels"}``; errors name
    the argument (``profile.email``, ``variant_external_id``). Stricter than a row in one
    way: a profile key Klaviyo's subscription does not take is refused, not dropped."""
    if isinstance(profile, Mapping):
        unknown_keys(
            profile,
            PROFILE_IDENTIFIERS,
            "profile",
            "an identifier (email, phone_number, external_id)",
        )
    return _subscription(profile, variant_external_id, channels, _REQUEST_FIELDS)


def _subscription(
    profile: Any, variant: Any, channels: Any, names: Mapping[str, str]
) -> dict[str, Any]:
    """The one back-in-stock rule; ``names`` maps a field to the caller's name for it."""

    def name(field: str) -> str:
        return names.get(field, field)

    try:
        identifiers = clean_profile(profile)
    except KlaviyoValidationError as exc:
        raise KlaviyoValidationError(str(exc), field=name(exc.field or "profile")) from None
    identifiers = {k: v for k, v in identifiers.items() if k in PROFILE_IDENTIFIERS}
    if isinstance(channels, str) or not isinstance(channels, (list, tuple)) or not channels:
        raise KlaviyoValidationError("channels must be a non-empty list.", field="channels")
    upper = sorted({str(c).strip().upper() for c in channels})
    unknown = [c for c in upper if c not in BACK_IN_STOCK_CHANNELS]
    if unknown:
        raise KlaviyoValidationError(
            f"unknown channel {unknown[0]!r}; choose from "
            f"{', '.join(c.lower() for c in BACK_IN_STOCK_CHANNELS)}.",
            field="channels",
        )
    if "EMAIL" in upper and not identifiers.get("email"):
        raise KlaviyoValidationError("the email channel needs an email.", field=name("email"))
    if "SMS" in upper and not identifiers.get("phone_number"):
        raise KlaviyoValidationError(
            "the sms channel needs a phone_number.", field=name("phone_number")
        )
    return {
        "profile": to_json(identifiers, "profile"),
        "variant": external_id(variant, name("variant")),
        "channels": upper,
    }
