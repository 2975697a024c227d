"""Profile rules: the attributes Klaviyo accepts, profile upserts and profile deletions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django_klaviyo import limits
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.identifiers import (
    EVENT_IDENTIFIERS,
    clean_profile,
    normalize_email,
    normalize_phone_number,
)
from django_klaviyo.values import check_text, to_json

# Events also take a Klaviyo profile "id".
EVENT_PROFILE_ATTRIBUTES = limits.EVENT_PROFILE_ATTRIBUTES | frozenset(EVENT_IDENTIFIERS)
PROFILE_ATTRIBUTES = limits.PROFILE_ATTRIBUTES
LOCATION_KEYS = limits.LOCATION_KEYS


def clean_profile_attributes(profile: Any, *, for_event: bool = False) -> dict[str, Any]:
    """Identifiers normalised (see identifiers.clean_profile) and every attribute
    checked against the names Klaviyo accepts, as plain JSON."""
    cleaned = clean_profile(profile, for_event=for_event)
    allowed = EVENT_PROFILE_ATTRIBUTES if for_event else PROFILE_ATTRIBUTES
    for key in cleaned:
        if key not in allowed:
            raise KlaviyoValidationError(
                f"profile attribute {key!r} is not a Klaviyo profile attribute "
                f"(use profile['properties'] for custom data).",
                field=f"profile.{key}",
            )
    location = cleaned.get("location")
    if location is not None:
        if not isinstance(location, Mapping):
            raise KlaviyoValidationError(
                "profile.location must be a dict.", field="profile.location"
            )
        for key in location:
            if key not in LOCATION_KEYS:
                raise KlaviyoValidationError(
                    f"profile.location has an unknown key {key!r}.",
                    field=f"profile.location.{key}",
                )
    properties = cleaned.get("properties")
    if properties is not None and not isinstance(properties, Mapping):
        raise KlaviyoValidationError(
            "profile.properties must be a dict.", field="profile.properties"
        )
    return to_json(cleaned, "profile")


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
    """A ``profile_deletion`` row names exactly one of email, phone_number or Klaviyo id."""
    profile = _get(payload, "profile")
    if not isinstance(profile, Mapping):
        raise KlaviyoValidationError("profile must be a dict.", field="profile")
    given = [(k, v) for k, v in profile.items() if v not in (None, "")]
    if len(given) != 1 or given[0][0] not in ("email", "phone_number", "id"):
        raise KlaviyoValidationError(
            "forget_profile needs exactly one of email, phone_number or profile_id "
            f"(got {len(given)}).",
            field="profile",
        )
    name, value = given[0]
    if name == "email":
        value = normalize_email(value)
    elif name == "phone_number":
        value = normalize_phone_number(value)
    elif not isinstance(value, str):
        raise KlaviyoValidationError("profile_id must be a string.", field="profile_id")
    else:
        check_text(value, "profile_id")
    return {"profile": {name: value}}


def _get(payload: Any, key: str) -> Any:
    if not isinstance(payload, Mapping):
        raise KlaviyoValidationError("payload must be a dict.", field="payload")
    return payload.get(key)
