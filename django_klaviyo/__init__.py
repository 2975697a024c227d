"""django-klaviyo: a reliable, fast Klaviyo integration for Django stores.

The public API is imported lazily so that ``import django_klaviyo`` never loads
models before Django's app registry is ready.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

__all__ = [
    "add_to_list",
    "added_to_cart",
    "forget_profile",
    "order_placed",
    "order_refunded",
    "remove_from_list",
    "started_checkout",
    "subscribe",
    "subscription_status",
    "track",
    "unsubscribe",
    "upsert_profile",
    "viewed_product",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from django_klaviyo import api

        return getattr(api, name)
    raise AttributeError(f"module 'django_klaviyo' has no attribute {name!r}")
