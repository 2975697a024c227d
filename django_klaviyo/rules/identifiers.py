"""Validation of Klaviyo profile identifiers, shared by the public API and the client.

Klaviyo needs at least one identifier per profile (email, phone_number, external_id;
events may also use anonymous_id or a Klaviyo profile id) and phone numbers in E.164.
Catching a bad identifier here gives the caller a clear error at call time instead of
a 400 from Klaviyo minutes later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from string import ascii_letters, digits
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email

from django_klaviyo.exceptions import KlaviyoValidationError

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
PROFILE_IDENTIFIERS = ("email", "phone_number", "external_id")
EVENT_IDENTIFIERS = (*PROFILE_IDENTIFIERS, "anonymous_id", "id")
_EVENT_IDENTIFIERS = frozenset(EVENT_IDENTIFIERS)


def normalize_phone_number(value: str) -> str:
    """Strip the separators people type ("+1 (415) 555-0100") and check E.164."""
    if not isinstance(value, str):
        raise KlaviyoValidationError(
            f"phone_number must be a string in E.164 format, not {type(value).__name__}.",
            field="phone_number",
        )
    cleaned = re.sub(r"[\s().-]", "", value)
    if not E164.match(cleaned):
        raise KlaviyoValidationError(
            f"phone_number {value!r} is not in E.164 format (for example +14155550100).",
            field="phone_number",
        )
    return cleaned


# What Django's EmailValidator allows, ASCII only: in a dot-atom local part (besides
# its dots) and in a domain label (besides its dots).
_ATOM_CHARS = ascii_letters + digits + "!#$%&'*+/=?^_`{|}~-."
_LABEL_CHARS = ascii_letters + digits + "-."


def _ordinary_email(value: str) -> bool:
    """Whether ``value`` is an address of the ordinary shape, each part of which
    Django's EmailValidator accepts: one "@", an ASCII dot-atom before it, and after it
    dot-separated labels of 1 to 63 letters, digits or inner hyphens ending with an
    alphabetic top-level domain of 2 or more letters, 320 characters at most in all.

    Checked with string methods, because the validator's patterns cost several µs in
    a store's save (the regular expression engine's state is cold there). True means
    the validator accepts it (a test holds the two together); False decides nothing."""
    local, _, domain = value.partition("@")
    if not (local and domain and len(value) <= 320 and value.isascii() and "@" not in domain):
        return False
    if local.strip(_ATOM_CHARS) or local[0] == "." or local[-1] == "." or ".." in local:
        return False
    labels = domain.split(".")
    top = labels[-1]
    return (
        len(labels) > 1
        and not domain.strip(_LABEL_CHARS)
        and "" not in labels
        and max(map(len, labels)) <= 63
        and domain[0] != "-"
        and "-." not in domain
        and ".-" not in domain
        and len(top) > 1
        and top.isalpha()
    )


def normalize_email(value: str) -> str:
    if not isinstance(value, str):
        raise KlaviyoValidationError("email must be a string.", field="email")
    cleaned = value.strip()
    if _ordinary_email(cleaned):
        return cleaned
    try:
        validate_email(cleaned)
    except DjangoValidationError:
        raise KlaviyoValidationError(
            f"email {value!r} is not a valid email address.", field="email"
        ) from None
    return cleaned


def clean_profile(profile: Mapping[str, Any] | None, *, for_event: bool = False) -> dict[str, Any]:
    """Return a copy of ``profile`` with identifiers normalised, or raise.

    Empty identifier values are dropped; at least one must remain.
    """
    if type(profile) is not dict and not isinstance(profile, Mapping):
        raise KlaviyoValidationError(
            "profile must be a mapping with at least one identifier "
            "(email, phone_number or external_id).",
            field="profile",
        )
    cleaned: dict[str, Any] = {}
    for key, value in profile.items():
        if key in _EVENT_IDENTIFIERS and (value is None or value == ""):
            continue
        cleaned[key] = value
    if "email" in cleaned:
        cleaned["email"] = normalize_email(cleaned["email"])
    if "phone_number" in cleaned:
        cleaned["phone_number"] = normalize_phone_number(cleaned["phone_number"])
    if "external_id" in cleaned:
        cleaned["external_id"] = str(cleaned["external_id"])
    allowed = EVENT_IDENTIFIERS if for_event else PROFILE_IDENTIFIERS
    if not for_event and "anonymous_id" in cleaned:
        raise KlaviyoValidationError(
            "anonymous_id identifies event profiles only; profile upserts need "
            "email, phone_number or external_id.",
            field="anonymous_id",
        )
    if cleaned.keys().isdisjoint(allowed):
        names = ", ".join(allowed)
        raise KlaviyoValidationError(
            f"A Klaviyo profile needs at least one identifier: {names}.", field="profile"
        )
    return cleaned


def email_key(value: Any) -> str:
    """An email as profiles are matched by it: whatever its case and surrounding spaces
    (Klaviyo's lookups ignore case too)."""
    return str(value).strip().lower()


def profile_key(profile: Mapping[str, Any]) -> str:
    """A stable key that groups outbox rows of one profile ("email:a@x.com").

    The strongest identifier wins: Klaviyo id, then external_id, email, phone, anonymous id.
    """
    for key in ("id", "external_id", "email", "phone_number", "anonymous_id"):
        value = profile.get(key)
        if value:
            value = str(value)
            return f"{key}:{email_key(value) if key == 'email' else value}"
    return ""
