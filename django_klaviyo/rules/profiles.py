"""Profile rules: the attributes Klaviyo accepts, profile upserts and profile deletions,
for outbox rows and for the client's profile requests alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits
from django_klaviyo.rules.identifiers import (
    EVENT_IDENTIFIERS,
    PROFILE_IDENTIFIERS,
    clean_profile,
    normalize_email,
    normalize_phone_number,
)
from django_klaviyo.rules.shapes import batch, located, mapping, text, unknown_keys
from django_klaviyo.rules.values import to_json

# Events also take a Klaviyo profile "id".
EVENT_PROFILE_ATTRIBUTES = limits.EVENT_PROFILE_ATTRIBUTES | frozenset(EVENT_IDENTIFIERS)
PROFILE_ATTRIBUTES = limits.PROFILE_ATTRIBUTES
LOCATION_KEYS = limits.LOCATION_KEYS


def check_attributes(
    profile: Mapping[str, Any], allowed: frozenset[str], field: str = "profile"
) -> dict[str, Any]:
    """``profile`` as plain JSON, once every attribute name is one Klaviyo accepts
    (``allowed``), ``location`` holds only location fields and ``properties`` is an object."""
    attributes: dict[str, Any] = {}
    for key, value in profile.items():
        if key not in allowed:
            raise KlaviyoValidationError(
                f"{field}.{key} is not a Klaviyo profile attribute; custom data goes in "
                f"{field}.properties.",
                field=f"{field}.{key}",
            )
        if key == "location" and value is not None:
            value = mapping(value, f"{field}.location")
            unknown_keys(value, LOCATION_KEYS, f"{field}.location", "a Klaviyo location field")
        elif key == "properties" and value is not None:
            value = mapping(value, f"{field}.properties")
        attributes[key] = value
    # The same value rules as every payload: plain JSON, storable text, strings and
    # nesting within Klaviyo's limits.
    return to_json(attributes, field)


def clean_profile_attributes(profile: Any, *, for_event: bool = False) -> dict[str, Any]:
    """Identifiers normalised (see identifiers.clean_profile) and every attribute
    checked against the names Klaviyo accepts, as plain JSON."""
    cleaned = clean_profile(profile, for_event=for_event)
    return check_attributes(cleaned, EVENT_PROFILE_ATTRIBUTES if for_event else PROFILE_ATTRIBUTES)


def clean_upsert(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A ``profile_upsert`` row: ``{"profile": {...}}``."""
    return {"profile": clean_profile_attributes(_get(payload, "profile"))}


def deletion_payload(
    *, email: Any = None, phone_number: Any = None, profile_id: Any = None
) -> dict[str, Any]:
    given = {
        name: value
        for name, value in (("email", email), ("phone_number", phone_number), ("id", profile_id))
        if value not in (None, "")
    }
    return {"profile": given}


def clean_deletion(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A ``profile_deletion`` row (and a deletion request) names exactly one of email,
    phone_number or Klaviyo id."""
    profile = _get(payload, "profile")
    if not isinstance(profile, Mapping):
        raise KlaviyoValidationError("profile must be a dict.", field="profile")
    given = [(k, v) for k, v in profile.items() if v not in (None, "")]
    if len(given) != 1 or given[0][0] not in ("email", "phone_number", "id"):
        raise KlaviyoValidationError(
            "A profile deletion names exactly one of email, phone_number or profile_id "
            f"(got {len(given)}).",
            field="profile",
        )
    name, value = given[0]
    if name == "email":
        value = normalize_email(value)
    elif name == "phone_number":
        value = normalize_phone_number(value)
    else:
        value = text(value, "profile_id")
    return {"profile": {name: value}}


# -- the client's profile requests ----------------------------------------------------


def split_profile(
    profile: Mapping[str, Any], field: str = "profile"
) -> tuple[str | None, dict[str, Any] | None, dict[str, Any]]:
    """A flat profile's resource-level ``id`` and ``meta``, and the rest (attributes)."""
    rest = dict(profile)
    profile_id = rest.pop("id", None)
    meta = rest.pop("meta", None)
    if profile_id is not None:
        profile_id = text(profile_id, f"{field}.id")
    if meta is not None:
        meta = mapping(meta, f"{field}.meta")
    return profile_id, meta, rest


def normalized(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The identifiers present normalised, none required (a partial update)."""
    result = dict(attributes)
    if result.get("email") is not None:
        result["email"] = normalize_email(result["email"])
    if result.get("phone_number") is not None:
        result["phone_number"] = normalize_phone_number(result["phone_number"])
    if result.get("external_id") is not None:
        result["external_id"] = str(result["external_id"])
    return result


def clean_event_profile(profile: Any, field: str = "profile") -> dict[str, Any]:
    """An event request's profile, flat: identifiers normalised, attributes checked, and
    the resource's ``id`` and ``meta`` kept beside them."""
    cleaned = clean_profile(profile, for_event=True)
    profile_id, meta, rest = split_profile(cleaned, field)
    flat = check_attributes(rest, limits.EVENT_PROFILE_ATTRIBUTES, field)
    if profile_id:
        flat["id"] = profile_id
    if meta:
        flat["meta"] = meta
    return flat


def clean_upsert_request(
    attributes: Any, profile_id: Any = None, field: str = "profile"
) -> tuple[str | None, dict[str, Any] | None, dict[str, Any]]:
    """``profile-import``'s (id, meta, attributes): an ``id`` key counts as ``profile_id``;
    without a Klaviyo id the profile needs an identifier."""
    attributes = mapping(attributes, field)
    embedded_id, meta, rest = split_profile(attributes)
    profile_id = text(profile_id, "profile_id") if profile_id is not None else embedded_id
    has_identifier = any(rest.get(k) for k in PROFILE_IDENTIFIERS)
    # With a Klaviyo id the profile is already identified; otherwise Klaviyo needs one.
    cleaned = clean_profile(rest) if has_identifier or not profile_id else normalized(rest)
    return profile_id, meta, check_attributes(cleaned, PROFILE_ATTRIBUTES, field)


def clean_update_request(
    profile_id: Any, attributes: Any
) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
    """``PATCH /api/profiles/{id}``'s (id, meta, attributes)."""
    profile_id = text(profile_id, "profile_id")
    attributes = mapping(attributes, "attributes")
    embedded_id = attributes.pop("id", None)
    if embedded_id is not None and str(embedded_id) != profile_id:
        raise KlaviyoValidationError(
            f"attributes.id {embedded_id!r} differs from profile_id {profile_id!r}.",
            field="attributes.id",
        )
    meta = attributes.pop("meta", None)
    return (
        profile_id,
        None if meta is None else mapping(meta, "attributes.meta"),
        check_attributes(normalized(attributes), limits.UPDATE_PROFILE_ATTRIBUTES, "attributes"),
    )


def clean_import_request(
    profiles: Any, list_ids: Any = ()
) -> tuple[list[tuple[str | None, dict[str, Any] | None, dict[str, Any]]], list[str]]:
    """A bulk import's profiles (each as ``clean_upsert_request``) and distinct list ids."""
    profiles = batch(profiles, "profiles", limits.PROFILES_PER_IMPORT_JOB)
    if not profiles:
        raise KlaviyoValidationError("profiles is empty; import at least one.", field="profiles")
    cleaned = []
    for i, profile in enumerate(profiles):
        with located(f"profiles[{i}]"):
            cleaned.append(clean_upsert_request(profile, None, f"profiles[{i}]"))
    ids = [text(x, "list_ids") for x in batch(list_ids, "list_ids", 1000)]
    return cleaned, list(dict.fromkeys(ids))


def _get(payload: Any, key: str) -> Any:
    if not isinstance(payload, Mapping):
        raise KlaviyoValidationError("payload must be a dict.", field="payload")
    return payload.get(key)
