"""System checks of several Klaviyo accounts: ``ACCOUNTS`` and ``ACCOUNT_RESOLVER``
(ids E060-E063, docs/accounts.md).

Registered by ``django_klaviyo.checks``; never raises for a bad setting, never echoes a key.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.checks import CheckMessage, Error
from django.utils.module_loading import import_string

from django_klaviyo.accounts import (
    ACCOUNT_KEYS,
    PRIVATE_KEY_RE,
    holds_private_key,
    usable_public_key,
)
from django_klaviyo.conf import klaviyo_settings, normalize_key
from django_klaviyo.conf import setting_as_written as _get


def public_key_messages(value: Any, where: str) -> list[CheckMessage]:
    """E037 for a private key in a PUBLIC_API_KEY (however it is written: spaces, quotes,
    case), E039 for any other value that is not a public key. Never echoes the value."""
    if value is None:
        return []
    if holds_private_key(value):
        # The private key would be rendered into every page that loads klaviyo.js.
        return [
            Error(
                f"{where} holds a private API key (it contains 'pk_').",
                hint="Put the 6-character public key (site id) there, keep the private key "
                "in PRIVATE_API_KEY only, and revoke this key in Klaviyo: it may have been "
                "exposed.",
                id="django_klaviyo.E037",
            )
        ]
    if usable_public_key(value) is None:
        return [
            Error(
                f"{where} is not a Klaviyo public key (6 letters or digits), so "
                "{% klaviyo_js %} does not load klaviyo.js.",
                hint="Copy the public key (site id) from Klaviyo, Settings > API keys.",
                id="django_klaviyo.E039",
            )
        ]
    return []


ACCOUNT_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Names an account may not take: the top-level keys' account, and the flow-webhook path.
RESERVED_ACCOUNT_NAMES = ("default", "flow")


def check_accounts() -> list[CheckMessage]:
    """``ACCOUNTS`` and ``ACCOUNT_RESOLVER`` (docs/accounts.md); keys are never echoed."""
    messages: list[CheckMessage] = []
    resolver = _get("ACCOUNT_RESOLVER")
    if resolver is not None:
        try:
            found = import_string(resolver) if isinstance(resolver, str) else resolver
        except ImportError:
            found = None
        if not callable(found):
            messages.append(
                Error(
                    f"KLAVIYO['ACCOUNT_RESOLVER'] = {resolver!r} does not import or is not "
                    "callable.",
                    hint="Give a function (obj=None, *, request=None) -> account name or None.",
                    id="django_klaviyo.E063",
                )
            )
    given = _get("ACCOUNTS") or {}
    if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
        return [
            *messages,
            Error(
                "KLAVIYO['ACCOUNTS'] must map account names to dicts of settings.",
                hint="KLAVIYO['ACCOUNTS'] = {'eu': {'PRIVATE_API_KEY': env('KLAVIYO_EU_KEY')}}.",
                id="django_klaviyo.E060",
            ),
        ]
    keys: dict[str, list[str]] = {}
    default_key = _get("PRIVATE_API_KEY")
    if isinstance(default_key, str) and default_key:
        keys[default_key] = ["default"]
    for name, block in given.items():
        where = f"KLAVIYO['ACCOUNTS'][{name!r}]"
        if not isinstance(name, str) or not ACCOUNT_NAME_RE.match(name):
            messages.append(
                Error(
                    f"{where}: an account name is 1-64 letters, digits, '_' or '-'.",
                    hint="The name is stored on outbox rows and used in the webhook URL.",
                    id="django_klaviyo.E060",
                )
            )
        elif name in RESERVED_ACCOUNT_NAMES:
            messages.append(
                Error(
                    f"{where}: the name {name!r} is reserved.",
                    hint="The top-level keys are the 'default' account; 'flow' is the "
                    "flow-webhook URL. Choose another name.",
                    id="django_klaviyo.E060",
                )
            )
        unknown = sorted(str(k) for k in block if k not in ACCOUNT_KEYS)
        if unknown:
            messages.append(
                Error(
                    f"{where} has unknown key(s): {', '.join(unknown)}.",
                    hint=f"An account takes {', '.join(sorted(ACCOUNT_KEYS))}.",
                    id="django_klaviyo.E060",
                )
            )
        messages.extend(
            public_key_messages(
                normalize_key(block.get("PUBLIC_API_KEY")), f"{where}['PUBLIC_API_KEY']"
            )
        )
        key = normalize_key(block.get("PRIVATE_API_KEY"))
        if not key:
            if _get("ENABLED") and not klaviyo_settings.sandbox():
                messages.append(
                    Error(
                        f"{where} has no PRIVATE_API_KEY.",
                        hint="An account never uses another account's key; read its own "
                        "from the environment.",
                        id="django_klaviyo.E061",
                    )
                )
            continue
        if not isinstance(key, str) or not PRIVATE_KEY_RE.match(key):
            messages.append(
                Error(
                    f"{where}['PRIVATE_API_KEY'] is not a well-formed Klaviyo private key.",
                    hint="Private keys start with 'pk_'.",
                    id="django_klaviyo.E061",
                )
            )
            continue
        keys.setdefault(key, []).append(str(name))
    for names in keys.values():
        if len(names) > 1:
            messages.append(
                Error(
                    f"The Klaviyo accounts {', '.join(map(repr, names))} share one private key.",
                    hint="Each account needs its own key: one key is one Klaviyo account, "
                    "and its rows and rate limits would mix.",
                    id="django_klaviyo.E062",
                )
            )
    return messages


ACCOUNT_CHECKS = (check_accounts,)
