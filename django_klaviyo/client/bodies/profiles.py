"""Profile bodies: ``POST /api/profile-import``, ``PATCH /api/profiles/{id}`` and
``POST /api/profile-bulk-import-jobs``, from clean values (``rules.profiles``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django_klaviyo.rules import limits


def build_profile(
    attributes: Mapping[str, Any],
    *,
    profile_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A profile resource from clean values (``profile-import``, bulk imports)."""
    data: dict[str, Any] = {"type": "profile", "attributes": dict(attributes)}
    if profile_id:
        data["id"] = profile_id
    if meta:
        data["meta"] = dict(meta)
    return data


def build_profile_import(
    attributes: Mapping[str, Any],
    *,
    profile_id: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``POST /api/profile-import`` from clean values."""
    return {"data": build_profile(attributes, profile_id=profile_id, meta=meta)}


def build_profile_update(
    profile_id: str, attributes: Mapping[str, Any], meta: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``PATCH /api/profiles/{id}`` from clean values, keeping only the attributes a
    PATCH takes (``limits.UPDATE_PROFILE_ATTRIBUTES``: no ``_kx``). ``data.id`` repeats
    the path id, as required."""
    kept = {k: v for k, v in attributes.items() if k in limits.UPDATE_PROFILE_ATTRIBUTES}
    data: dict[str, Any] = {"type": "profile", "id": profile_id, "attributes": kept}
    if meta is not None:
        data["meta"] = dict(meta)
    return {"data": data}


def build_bulk_import(
    profiles: Sequence[Mapping[str, Any]], list_ids: Sequence[str] = ()
) -> dict[str, Any]:
    """A bulk import job from clean profile resources (``build_profile``)."""
    body: dict[str, Any] = {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": [dict(p) for p in profiles]}},
        }
    }
    if list_ids:
        body["data"]["relationships"] = {
            "lists": {"data": [{"type": "list", "id": x} for x in list_ids]}
        }
    return body
