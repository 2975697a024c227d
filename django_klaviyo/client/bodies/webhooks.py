"""Webhook bodies: ``POST /api/webhooks`` from a clean webhook (``rules.webhooks``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def build_webhook(webhook: Mapping[str, Any]) -> dict[str, Any]:
    """A new webhook from ``rules.webhooks.clean_webhook``'s result: its ``topics`` become
    the webhook-topics relationship, every other key an attribute."""
    attributes = dict(webhook)
    topic_ids = attributes.pop("topics")
    return {
        "data": {
            "type": "webhook",
            "attributes": attributes,
            "relationships": {
                "webhook-topics": {"data": [{"type": "webhook-topic", "id": t} for t in topic_ids]}
            },
        }
    }
