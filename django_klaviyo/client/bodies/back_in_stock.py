"""Back-in-stock bodies: ``POST /api/back-in-stock-subscriptions`` from a clean profile,
variant and channels (``rules.catalog.clean_back_in_stock``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django_klaviyo.client.bodies.catalog import catalog_id


def back_in_stock_body(
    profile: Mapping[str, Any], variant_external_id: str, channels: Sequence[str]
) -> dict[str, Any]:
    """A subscription of ``profile`` to the store's variant ``variant_external_id``."""
    return {
        "data": {
            "type": "back-in-stock-subscription",
            "attributes": {
                "channels": [str(c).upper() for c in channels],
                "profile": {"data": {"type": "profile", "attributes": dict(profile)}},
            },
            "relationships": {
                "variant": {
                    "data": {"type": "catalog-variant", "id": catalog_id(variant_external_id)}
                }
            },
        }
    }
