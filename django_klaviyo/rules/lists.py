"""List rules: ``list_add`` / ``list_remove`` rows (a list id and identifiers), and the
client's list requests (profile ids, a new list)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits
from django_klaviyo.rules.identifiers import PROFILE_IDENTIFIERS, clean_profile
from django_klaviyo.rules.shapes import batch, text
from django_klaviyo.rules.values import to_json

OPT_IN_PROCESSES = ("double_opt_in", "single_opt_in")


def clean_list_id(list_id: Any, field: str = "list_id") -> str:
    # A KlaviyoList mirror row is accepted in place of its id.
    list_id = getattr(list_id, "klaviyo_id", list_id)
    return text(list_id, field).strip()


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


def clean_profile_ids(profile_ids: Any) -> list[str]:
    """Klaviyo profile ids for a list's membership (at most 1000), each once: membership
    is a set, and a repeat would only spend the limit."""
    ids = batch(profile_ids, "profile_ids", limits.IDS_PER_LIST_REQUEST)
    return list(dict.fromkeys(text(x, f"profile_ids[{i}]") for i, x in enumerate(ids)))


def clean_new_list(name: Any, opt_in_process: Any = None) -> tuple[str, str | None]:
    """A list to create: its name, and how it takes consent (Klaviyo's default if None)."""
    name = text(name, "name")
    if opt_in_process is not None and opt_in_process not in OPT_IN_PROCESSES:
        raise KlaviyoValidationError(
            f"opt_in_process must be one of {', '.join(OPT_IN_PROCESSES)}, not {opt_in_process!r}.",
            field="opt_in_process",
        )
    return name, opt_in_process
