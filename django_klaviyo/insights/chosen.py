"""``KLAVIYO["SEGMENTS"]``: the segments whose members a store mirrors, per account.

The setting is a list of segment names or ids for every account, or a dict from account
name (``"default"`` for the top-level account) to such a list. Checks E070/E071 report a
malformed value; nothing here raises on one (the chosen segments are then none).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django_klaviyo.conf import klaviyo_settings

DEFAULT = "default"


def _refs(value: Any) -> list[str] | None:
    if not isinstance(value, (list, tuple)):
        return None
    if not all(isinstance(ref, str) and ref.strip() for ref in value):
        return None
    return list(dict.fromkeys(ref.strip() for ref in value))


def setting_problem() -> str | None:
    """What is wrong with the shape of ``SEGMENTS``, or None (check E070)."""
    value = klaviyo_settings.get("SEGMENTS", [])
    if isinstance(value, Mapping):
        for name, refs in value.items():
            if not isinstance(name, str) or _refs(refs) is None:
                return f"the entry for {name!r} is not a list of segment names or ids"
        return None
    if _refs(value) is None:
        return "it is not a list of segment names or ids (non-empty strings)"
    return None


def named_accounts() -> list[str]:
    """The account names a dict ``SEGMENTS`` uses (check E071 compares them)."""
    value = klaviyo_settings.get("SEGMENTS", [])
    return [str(name) for name in value] if isinstance(value, Mapping) else []


def chosen_segments(account: str = "") -> list[str]:
    """The names or ids chosen for ``account`` (its ``OutboxEvent.account`` value: ``""``
    is the default account), in the order given; ``[]`` when none or malformed."""
    value = klaviyo_settings.get("SEGMENTS", [])
    if isinstance(value, Mapping):
        value = value.get(account or DEFAULT, [])
    return _refs(value) or []
