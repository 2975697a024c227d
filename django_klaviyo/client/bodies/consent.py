"""Subscription bodies: ``POST /api/profile-subscription-bulk-create-jobs`` (subscribe)
and ``POST /api/profile-subscription-bulk-delete-jobs`` (unsubscribe), from clean items
(``rules.consent``): each ``{"email"?, "phone_number"?, "channels", "consented_at"?}``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _consent_job(
    job_type: str,
    consent: str,
    profiles: Sequence[Mapping[str, Any]],
    list_id: str | None,
    job_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data = []
    for profile in profiles:
        marketing: dict[str, Any] = {"consent": consent}
        if profile.get("consented_at") is not None:
            marketing["consented_at"] = profile["consented_at"]
        attributes = {k: profile[k] for k in ("email", "phone_number") if k in profile}
        attributes["subscriptions"] = {
            c: {"marketing": dict(marketing)} for c in profile["channels"]
        }
        data.append({"type": "profile", "attributes": attributes})
    body: dict[str, Any] = {
        "data": {
            "type": job_type,
            "attributes": {"profiles": {"data": data}, **(job_attributes or {})},
        }
    }
    if list_id is not None:
        body["data"]["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return body


def build_subscribe(
    profiles: Sequence[Mapping[str, Any]],
    *,
    list_id: str | None = None,
    custom_source: str | None = None,
    historical_import: bool = False,
) -> dict[str, Any]:
    """A subscribe job from clean items."""
    job_attributes: dict[str, Any] = {}
    if custom_source is not None:
        job_attributes["custom_source"] = custom_source
    if historical_import:
        job_attributes["historical_import"] = True
    return _consent_job(
        "profile-subscription-bulk-create-job", "SUBSCRIBED", profiles, list_id, job_attributes
    )


def build_unsubscribe(
    profiles: Sequence[Mapping[str, Any]], *, list_id: str | None = None
) -> dict[str, Any]:
    """An unsubscribe job from clean items; without ``list_id`` Klaviyo unsubscribes the
    profiles globally from the channels."""
    return _consent_job("profile-subscription-bulk-delete-job", "UNSUBSCRIBED", profiles, list_id)
