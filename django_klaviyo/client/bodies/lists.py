"""List bodies: ``POST /api/lists`` and ``POST|DELETE /api/lists/{id}/relationships/profiles``,
from clean values (``rules.lists``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def build_list_relationship(profile_ids: Iterable[str]) -> dict[str, Any]:
    """A list membership change from Klaviyo profile ids, each given once."""
    return {"data": [{"type": "profile", "id": x} for x in profile_ids]}


def build_create_list(name: str, opt_in_process: str | None = None) -> dict[str, Any]:
    """A new list from a clean name and opt-in process (``rules.lists.clean_new_list``)."""
    attributes: dict[str, Any] = {"name": name}
    if opt_in_process is not None:
        attributes["opt_in_process"] = opt_in_process
    return {"data": {"type": "list", "attributes": attributes}}
