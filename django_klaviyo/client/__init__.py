"""Klaviyo HTTP client: ``KlaviyoClient``, ``get_client()`` and the filter builder.

The client knows HTTP and Klaviyo, and nothing of this app's models. Where each wire
concern lives:

- ``client.py``: ``KlaviyoClient``, one method per operation (events, profiles,
  consent, privacy); ``resources.py`` (lists, campaigns, flows, webhooks) and
  ``catalog.py`` (catalog jobs, back in stock, coupons) are mixed into it. A public
  method cleans its arguments with the rules (``django_klaviyo.rules``), builds the body
  and sends it; its ``send_*`` twin sends a body built from clean values (the flusher).
- ``bodies/``: every JSON:API request body, one module per Klaviyo resource, pure
  functions from clean values to a dict; ``bodies/encoding.py``: the bytes sent.
- ``transport.py``: headers, timeouts, retries and Klaviyo's errors;
  ``ratelimit.py``: each operation's rate limits, shared through the cache.
- ``filters.py``: the escaped ``filter`` builder; ``pagination.py``: collection
  parameters and following pages.

Klaviyo's limits and value rules are not here: they are ``django_klaviyo.rules``
(``rules/limits.py``, ``rules/values.py``, ``rules/identifiers.py``).
"""

from __future__ import annotations

import threading
from typing import Any

from django_klaviyo.accounts import get_account
from django_klaviyo.client.client import BulkImportTimeout, KlaviyoClient
from django_klaviyo.client.filters import (
    Filter,
    and_,
    any_,
    contains,
    ends_with,
    equals,
    greater_or_equal,
    greater_than,
    has,
    less_or_equal,
    less_than,
    starts_with,
)
from django_klaviyo.client.ratelimit import RateLimiter, UnlimitedRateLimiter
from django_klaviyo.conf import klaviyo_settings

__all__ = [
    "BulkImportTimeout",
    "Filter",
    "KlaviyoClient",
    "RateLimiter",
    "UnlimitedRateLimiter",
    "account_client",
    "and_",
    "any_",
    "contains",
    "ends_with",
    "equals",
    "get_client",
    "greater_or_equal",
    "greater_than",
    "has",
    "less_or_equal",
    "less_than",
    "starts_with",
]

_local = threading.local()


def _settings_fingerprint(account: str | None) -> tuple[Any, ...]:
    if account is None:
        key, url, revision, timeout = (
            klaviyo_settings.PRIVATE_API_KEY,
            klaviyo_settings.API_URL,
            klaviyo_settings.REVISION,
            klaviyo_settings.timeout(),
        )
    else:
        chosen = get_account(account)
        key, url, revision, timeout = (
            chosen.private_api_key,
            chosen.api_url,
            chosen.revision,
            chosen.timeout,
        )
    return (
        key,
        url,
        revision,
        timeout,
        klaviyo_settings.HTTP_MAX_ATTEMPTS,
        klaviyo_settings.RETRY_BASE_SECONDS,
        klaviyo_settings.RETRY_MAX_SECONDS,
        klaviyo_settings.RATE_LIMIT_CACHE,
    )


def get_client(account: str | None = None) -> KlaviyoClient:
    """A client configured from settings, one per thread (a requests.Session is not
    thread-safe) and rebuilt when the settings change (e.g. under override_settings).

    ``account``: a name of ``KLAVIYO["ACCOUNTS"]`` (``None``: the default account); each
    account's client sends its own key, URL and revision, and its rate-limit windows are
    its own (keyed by a digest of its key)."""
    fingerprint = _settings_fingerprint(account)
    clients = getattr(_local, "clients", None)
    if clients is None:
        clients = _local.clients = {}
    cached = clients.get(account)
    if cached is None or cached[1] != fingerprint:
        client = KlaviyoClient() if account is None else account_client(account)
        cached = clients[account] = (client, fingerprint)
    return cached[0]


def account_client(account: str, **options: Any) -> KlaviyoClient:
    """A new client for the account named ``account``: its key, API URL, revision and
    timeout (``options``: any other ``KlaviyoClient`` argument)."""
    chosen = get_account(account)
    return KlaviyoClient(
        chosen.private_api_key or "",
        api_url=chosen.api_url,
        revision=chosen.revision,
        timeout=chosen.timeout,
        **options,
    )
