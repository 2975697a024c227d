"""Consent rules (``subscribe`` / ``unsubscribe``): channels and the contact they need."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django_klaviyo import limits
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.identifiers import normalize_email, normalize_phone_number
from django_klaviyo.rules.lists import clean_list_id
from django_klaviyo.values import check_text, iso_time

CHANNELS = limits.CONSENT_CHANNELS


def clean_channels(channels: Any) -> list[str]:
    if isinstance(channels, str):
        channels = [channels]
    if not isinstance(channels, (list, tuple, set, frozenset)) or not channels:
        raise KlaviyoValidationError(
            "channels must be a non-empty list of 'email' and/or 'sms'.", field="channels"
        )
    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise KlaviyoValidationError(
            f"unknown channel(s) {unknown!r}; use 'email' and/or 'sms'.", field="channels"
        )
    return [c for c in CHANNELS if c in channels]


def consent_contact(profile: Any, channels: list[str]) -> dict[str, str]:
    """Subscriptions identify profiles by email and phone only."""
    if not isinstance(profile, Mapping):
        raise KlaviyoValidationError(
            "profile must be a dict with email and/or phone_number.", field="profile"
        )
    cleaned: dict[str, str] = {}
    if profile.get("email"):
        cleaned["email"] = normalize_email(profile["email"])
    if profile.get("phone_number"):
        cleaned["phone_number"] = normalize_phone_number(profile["phone_number"])
    extra = sorted(k for k, v in profile.items() if k not in ("email", "phone_number") and v)
    if extra:
        raise KlaviyoValidationError(
            f"subscriptions identify profiles by email and phone_number only; "
            f"remove {', '.join(extra)}.",
            field=f"profile.{extra[0]}",
        )
    if "email" in channels and "email" not in cleaned:
        raise KlaviyoValidationError(
            "the email channel needs profile['email'].", field="profile.email"
        )
    if "sms" in channels and "phone_number" not in cleaned:
        raise KlaviyoValidationError(
            "the sms channel needs profile['phone_number'] in E.164 format.",
            field="profile.phone_number",
        )
    return cleaned


def _payload(payload: Any) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise KlaviyoValidationError("payload must be a dict.", field="payload")
    return payload


def clean_subscribe(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``{"profile", "channels", "list_id", "custom_source", "consented_at"}``."""
    payload = _payload(payload)
    channels = clean_channels(payload.get("channels", ("email",)))
    source = payload.get("custom_source")
    if source is not None and (not isinstance(source, str) or not source):
        raise KlaviyoValidationError(
            "custom_source must be a non-empty string.", field="custom_source"
        )
    list_id = payload.get("list_id")
    consented_at = payload.get("consented_at")
    return {
        "profile": consent_contact(payload.get("profile"), channels),
        "channels": channels,
        "list_id": None if list_id is None else clean_list_id(list_id),
        "custom_source": None if source is None else check_text(source, "custom_source"),
        # A consent date means a historical import, which Klaviyo requires in the past.
        "consented_at": (
            None
            if consented_at is None
            else iso_time(consented_at, "consented_at", allow_future=False)
        ),
    }


def clean_unsubscribe(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``{"profile", "channels", "list_id"}``."""
    payload = _payload(payload)
    channels = clean_channels(payload.get("channels", ("email",)))
    list_id = payload.get("list_id")
    return {
        "profile": consent_contact(payload.get("profile"), channels),
        "channels": channels,
        "list_id": None if list_id is None else clean_list_id(list_id),
    }
