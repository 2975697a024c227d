"""Several Klaviyo accounts: which account a row belongs to, and each account's settings.

A store with several Klaviyo accounts (brands, countries) names them in
``KLAVIYO["ACCOUNTS"]``; the top-level keys (``PRIVATE_API_KEY``, ...) are the account
named ``"default"``, so a single-account project is just the default account and changes
nothing. ``KLAVIYO["ACCOUNT_RESOLVER"]`` (a callable or dotted path,
``(obj=None, *, request=None) -> name | None``) says which account an order, a user, a
product or a request belongs to; ``None`` is the default account. See docs/accounts.md.

Rows store the account's name in ``OutboxEvent.account``, with ``""`` for the default
account (the single-account row stays as small as before). Settings are read through
``conf.klaviyo_settings`` only; the parsed accounts are kept until a setting changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from django_klaviyo.conf import (
    SANDBOX_API_KEY,
    klaviyo_settings,
    normalize_key,
    normalize_secrets,
)
from django_klaviyo.exceptions import KlaviyoValidationError

DEFAULT = "default"
# The longest account name (the outbox column's width).
MAX_NAME_LENGTH = 64
# Keys an account may set; those in FALLBACK come from the top level when it leaves them
# out. Secrets (keys, webhook secrets) never fall back: an account without its own key
# must not send with another account's.
ACCOUNT_KEYS = frozenset(
    {"PRIVATE_API_KEY", "PUBLIC_API_KEY", "WEBHOOK_SECRETS", "REVISION", "API_URL", "TIMEOUT"}
)
FALLBACK = ("REVISION", "API_URL", "TIMEOUT")
# The shape of a Klaviyo private key, for every account's key (checks E002 and E061).
PRIVATE_KEY_RE = re.compile(r"^pk_[A-Za-z0-9_]{16,}$")
# Klaviyo: "Your 6-character public key, sometimes referred to as a site ID, is a short
# alphanumeric string" (https://developers.klaviyo.com/en/docs/retrieve_api_credentials).
PUBLIC_KEY_RE = re.compile(r"^[A-Za-z0-9]{6}$")
# A private key anywhere in a value, whatever its case or the quotes and prefixes around it
# ("Private keys will have the prefix pk_", same page).
PRIVATE_KEY_INSIDE_RE = re.compile(r"pk_[A-Za-z0-9_]{8,}", re.IGNORECASE)


def holds_private_key(value: Any) -> bool:
    """True when ``value`` contains something shaped like a private key (check E037)."""
    return isinstance(value, str) and PRIVATE_KEY_INSIDE_RE.search(value) is not None


def usable_public_key(value: Any) -> str | None:
    """The public key (site id) to put on a page, or None: only a normalised value of
    Klaviyo's public-key shape passes, so a private key never can (checks E037, E039)."""
    value = normalize_key(value)
    if not isinstance(value, str) or holds_private_key(value) or not PUBLIC_KEY_RE.match(value):
        return None
    return value


@dataclass(frozen=True)
class Account:
    """One Klaviyo account as configured. Secrets are kept out of ``repr``."""

    name: str
    private_api_key: str | None = field(repr=False)
    public_api_key: str | None
    webhook_secrets: tuple[str, ...] = field(repr=False)
    api_url: str
    revision: str
    timeout: tuple[float, float]

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT

    @property
    def stored(self) -> str:
        """The value of ``OutboxEvent.account`` for this account (``""``: default)."""
        return "" if self.is_default else self.name

    def setting(self, key: str) -> str:
        """Where this account's ``key`` is set, for messages: ``KLAVIYO['PRIVATE_API_KEY']``
        or ``KLAVIYO['ACCOUNTS']['eu']['PRIVATE_API_KEY']``."""
        if self.is_default:
            return f"KLAVIYO[{key!r}]"
        return f"KLAVIYO['ACCOUNTS'][{self.name!r}][{key!r}]"


def _timeout(value: Any) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    connect, read = value
    return (float(connect), float(read))


def _secrets(value: Any) -> tuple[str, ...]:
    value = normalize_secrets(value)
    return tuple(s for s in (value or []) if isinstance(s, str) and s)


def configured() -> dict[str, Mapping[str, Any]]:
    """``KLAVIYO["ACCOUNTS"]`` as given (checked by ``django_klaviyo.E060``)."""
    value = klaviyo_settings.get("ACCOUNTS")
    if not value:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise ImproperlyConfigured(
            "KLAVIYO['ACCOUNTS'] must map account names to dicts of settings "
            "(see `manage.py check`: django_klaviyo.E060)."
        )
    return dict(value)


def _build() -> dict[str, Account]:
    accounts = {
        DEFAULT: Account(
            name=DEFAULT,
            private_api_key=klaviyo_settings.get("PRIVATE_API_KEY", None),
            public_api_key=klaviyo_settings.get("PUBLIC_API_KEY", None),
            webhook_secrets=tuple(klaviyo_settings.webhook_secrets()),
            api_url=klaviyo_settings.API_URL,
            revision=klaviyo_settings.REVISION,
            timeout=klaviyo_settings.timeout(),
        )
    }
    sandbox = klaviyo_settings.sandbox()
    for name, given in configured().items():
        key = normalize_key(given.get("PRIVATE_API_KEY")) or None
        if key is None and sandbox:
            # Each account its own placeholder, so their rate-limit windows stay apart.
            key = f"{SANDBOX_API_KEY}_{name}"
        accounts[str(name)] = Account(
            name=str(name),
            private_api_key=key,
            public_api_key=normalize_key(given.get("PUBLIC_API_KEY")) or None,
            webhook_secrets=_secrets(given.get("WEBHOOK_SECRETS")),
            api_url=given.get("API_URL") or klaviyo_settings.API_URL,
            revision=given.get("REVISION") or klaviyo_settings.REVISION,
            timeout=_timeout(given.get("TIMEOUT") or klaviyo_settings.TIMEOUT),
        )
    return accounts


def all_accounts() -> dict[str, Account]:
    """Every configured account by name, the default one first."""
    return klaviyo_settings.memo("accounts", _build)


def names() -> list[str]:
    """The configured account names, ``"default"`` first."""
    return list(all_accounts())


def several() -> bool:
    """More than the default account is configured (the admin then shows the column)."""
    return bool(klaviyo_settings.get("ACCOUNTS"))


def get_account(name: str | None = None) -> Account:
    """The account named ``name`` (``None``, ``""`` or ``"default"``: the default one).
    An unknown name, or ``ACCOUNTS`` that cannot be read (reported by the checks), raises
    ``KlaviyoValidationError`` naming the field ``account``: the save receivers keep that
    as a dead row instead of failing the store's save."""
    try:
        accounts = all_accounts()
    except (ImproperlyConfigured, TypeError, ValueError) as exc:
        raise KlaviyoValidationError(
            f"KLAVIYO['ACCOUNTS'] cannot be read ({exc}); see `manage.py check`.",
            field="account",
        ) from exc
    try:
        return accounts[name or DEFAULT]
    except (KeyError, TypeError):
        raise KlaviyoValidationError(
            f"unknown Klaviyo account {str(name)[:MAX_NAME_LENGTH]!r}; configured: "
            f"{', '.join(accounts)} (KLAVIYO['ACCOUNTS']).",
            field="account",
        ) from None


def display(stored: str) -> str:
    """The account name of an ``OutboxEvent.account`` value (``""`` is ``"default"``)."""
    return stored or DEFAULT


def stored_names(chosen: list[str] | None = None) -> list[str]:
    """``OutboxEvent.account`` values of ``chosen`` names (all when None), validated."""
    return [get_account(name).stored for name in (chosen or names())]


def account_for(obj: Any = None, *, request: Any = None, account: str | None = None) -> str:
    """The ``OutboxEvent.account`` value for a row about ``obj`` (an order, a user, a
    product) or written while handling ``request``: ``account`` when given, else
    ``ACCOUNT_RESOLVER``'s answer, else the default account (``""``).

    Raises ``KlaviyoValidationError`` (field ``account``) for an unknown name or a
    resolver that fails: the save receivers keep that as a dead row naming the account,
    and the store's save goes on (see ``django_klaviyo.outbox.refused``)."""
    if account is None:
        if klaviyo_settings.get("ACCOUNT_RESOLVER") is None:
            return ""  # the single-account save path: no lookup at all
        account = resolve(obj, request=request)
    if not account or account == DEFAULT:
        return ""
    return get_account(account).stored


def resolve(obj: Any = None, *, request: Any = None) -> str | None:
    """``ACCOUNT_RESOLVER(obj, request=request)``; its errors become validation errors."""
    try:
        answer = klaviyo_settings.callable("ACCOUNT_RESOLVER")(obj, request=request)
    except ImproperlyConfigured as exc:
        raise KlaviyoValidationError(str(exc), field="account") from exc
    except Exception as exc:
        raise KlaviyoValidationError(
            f"ACCOUNT_RESOLVER failed for {type(obj).__name__}: {type(exc).__name__}: {exc}",
            field="account",
        ) from exc
    if answer is not None and not isinstance(answer, str):
        raise KlaviyoValidationError(
            f"ACCOUNT_RESOLVER must return an account name or None, not {answer!r}.",
            field="account",
        )
    return answer
