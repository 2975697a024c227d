"""System checks of ``KLAVIYO["SEGMENTS"]`` (E070-E073). Run by ``django_klaviyo.checks``
with the others.

E072 and E073 compare the chosen names with the segments mirror, once ``klaviyo_sync
segments`` has listed an account's segments; before that (or without a database) only
the sync can tell, and it fails with the same message.
"""

from __future__ import annotations

from django.core.checks import CheckMessage, Error
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from django_klaviyo import accounts
from django_klaviyo.insights.chosen import chosen_segments, named_accounts, setting_problem
from django_klaviyo.models import KlaviyoSegment


def _stored_names() -> dict[str, str]:
    """Account name -> ``OutboxEvent.account`` value, without building the accounts (whose
    own settings may be broken: E060-E063 say so)."""
    try:
        others = [str(name) for name in accounts.configured()]
    except ImproperlyConfigured:
        others = []
    return {accounts.DEFAULT: "", **{name: name for name in others}}


HINT = (
    "KLAVIYO['SEGMENTS'] = ['VIP', 'Y6nRLr'] (names or ids, for every account) or "
    "{'default': ['VIP'], 'eu': ['VIP EU']}; see docs/insights.md."
)


def check_segments_setting() -> list[CheckMessage]:
    problem = setting_problem()
    if problem is not None:
        return [
            Error(
                f"KLAVIYO['SEGMENTS'] is malformed: {problem}.", hint=HINT, id="django_klaviyo.E070"
            )
        ]
    known = _stored_names()
    unknown = [name for name in named_accounts() if name not in known]
    if unknown:
        return [
            Error(
                f"KLAVIYO['SEGMENTS'] names accounts that are not configured: "
                f"{', '.join(repr(n) for n in unknown)}.",
                hint=f"Configured accounts: {', '.join(known)} (KLAVIYO['ACCOUNTS']).",
                id="django_klaviyo.E071",
            )
        ]
    return []


def _resolution_messages() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for name, stored in _stored_names().items():
        refs = chosen_segments(stored)
        segments = KlaviyoSegment.objects.filter(account=stored)
        if not refs or not segments.exists():
            continue
        where = f" in account {name!r}" if stored else ""
        for ref in refs:
            found = segments.named(ref, stored)
            if not found:
                messages.append(
                    Error(
                        f"KLAVIYO['SEGMENTS'] names {ref!r}, but no Klaviyo segment{where} "
                        "has that name or id (as of the last `klaviyo_sync segments`).",
                        hint="Check the spelling against the segment in Klaviyo, or use its id.",
                        id="django_klaviyo.E072",
                    )
                )
            elif len(found) > 1:
                messages.append(
                    Error(
                        f"KLAVIYO['SEGMENTS'] names {ref!r}, but two Klaviyo segments{where} "
                        "have that name.",
                        hint="Name the segment by its id (shown in the segments admin).",
                        id="django_klaviyo.E073",
                    )
                )
    return messages


def check_segments_resolve() -> list[CheckMessage]:
    if setting_problem() is not None or not any(map(chosen_segments, _stored_names().values())):
        return []
    try:
        return _resolution_messages()
    except (DatabaseError, RuntimeError):
        # No table yet (before migrate) or no database access here: the sync reports it.
        return []


SEGMENT_CHECKS = (check_segments_setting, check_segments_resolve)
