"""List membership rules (``list_add`` / ``list_remove``): a list id and identifiers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.identifiers import PROFILE_IDENTIFIERS, clean_profile
from django_klaviyo.values import check_text, to_json


def clean_list_id(list_id: Any) -> str:
    # A KlaviyoList mirror row is accepted in place of its id.
    list_id = getattr(list_id, "klaviyo_id", list_id)
    if not isinstance(list_id, str) or not list_id.strip():
        raise KlaviyoValidationError("list_id must be a non-empty string.", field="list_id")
    return check_text(list_id.strip(), "list_id")


def clean_list_change(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``{"list_id", "profile"}``; only identifiers travel: the flusher resolves them to a
    Klaviyo profile id."""
    if not isinstance(payload, Mapping):
        raise KlaviyoValidationError("payload must be a dict.", field="payload")
    identifiers = clean_profile(payload.get("profile"))
    identifiers = {k: v for k, v in identifiers.items() if k in PROFILE_IDENTIFIERS}
    return {
        "list_id": clean_list_id(payload.get("list_id")),
        "profile": to_json(identifiers, "profile"),
    }
