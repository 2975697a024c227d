"""Data privacy bodies: ``POST /api/data-privacy-deletion-jobs`` from one clean identifier
(``rules.profiles.clean_deletion``)."""

from __future__ import annotations

from typing import Any


def build_deletion(identifier: str, value: str) -> dict[str, Any]:
    """A deletion job naming one clean identifier: ``email``, ``phone_number`` or ``id``
    (Klaviyo's profile id, which goes in the resource's ``id``)."""
    data: dict[str, Any] = {"type": "profile", "attributes": {}}
    if identifier == "id":
        data["id"] = value
    else:
        data["attributes"][identifier] = value
    return {
        "data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": data}},
        }
    }
