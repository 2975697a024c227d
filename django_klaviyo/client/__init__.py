"""Klaviyo HTTP client: ``KlaviyoClient``, ``get_client()`` and the filter builder.

The client knows HTTP and Klaviyo, and nothing of this app's models.
"""

from __future__ import annotations

import threading
from typing import Any

from django_klaviyo.client.api import BulkImportTimeout, KlaviyoClient
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


def _settings_fingerprint() -> tuple[Any, ...]:
    return (
        klaviyo_settings.PRIVATE_API_KEY,
        klaviyo_settings.API_URL,
        klaviyo_settings.REVISION,
        klaviyo_settings.timeout(),
        klaviyo_settings.HTTP_MAX_ATTEMPTS,
        klaviyo_settings.RETRY_BASE_SECONDS,
        klaviyo_settings.RETRY_MAX_SECONDS,
        klaviyo_settings.RATE_LIMIT_CACHE,
    )


def get_client() -> KlaviyoClient:
    """A client configured from settings, one per thread (a requests.Session is not
    thread-safe) and rebuilt when the settings change (e.g. under override_settings)."""
    fingerprint = _settings_fingerprint()
    cached = getattr(_local, "client", None)
    if cached is None or getattr(_local, "fingerprint", None) != fingerprint:
        cached = KlaviyoClient()
        _local.client = cached
        _local.fingerprint = fingerprint
    return cached
