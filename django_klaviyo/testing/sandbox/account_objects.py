"""The sandbox account's webhooks, campaigns and flows: the part of ``SandboxState`` that is
about the account rather than one profile's data."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from django_klaviyo.testing.sandbox.records import NotFound, now_iso


class AccountObjects:
    """Mixed into ``SandboxState``, which holds the lock and the tables (``reset``)."""

    _lock: threading.RLock
    _webhooks: dict[str, dict[str, Any]]
    _webhook_secrets: dict[str, str]
    _campaigns: list[dict[str, Any]]
    _flows: list[dict[str, Any]]
    new_id: Callable[..., str]

    def create_webhook(self, attributes: dict[str, Any], topics: list[str]) -> dict[str, Any]:
        with self._lock:
            webhook_id = self.new_id()
            stamp = now_iso()
            # The signing secret is kept apart so no listing, summary or page can show it.
            self._webhook_secrets[webhook_id] = attributes["secret_key"]
            self._webhooks[webhook_id] = {
                "id": webhook_id,
                "name": attributes["name"],
                "description": attributes.get("description"),
                "endpoint_url": attributes["endpoint_url"],
                "enabled": True,
                "topics": list(topics),
                "created_at": stamp,
                "updated_at": stamp,
            }
            return copy.deepcopy(self._webhooks[webhook_id])

    def webhooks(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._webhooks)

    def webhook(self, webhook_id: str) -> dict[str, Any]:
        with self._lock:
            if webhook_id not in self._webhooks:
                raise NotFound(f"Webhook {webhook_id!r} does not exist.")
            return copy.deepcopy(self._webhooks[webhook_id])

    def webhook_secret(self, webhook_id: str) -> str:
        """The secret a test needs to sign a simulated delivery for this webhook."""
        with self._lock:
            self.webhook(webhook_id)
            return self._webhook_secrets[webhook_id]

    def delete_webhook(self, webhook_id: str) -> None:
        with self._lock:
            self.webhook(webhook_id)
            del self._webhooks[webhook_id]
            del self._webhook_secrets[webhook_id]

    def add_campaign(
        self, name: str, *, channel: str = "email", status: str = "Draft"
    ) -> dict[str, Any]:
        with self._lock:
            stamp = now_iso()
            campaign = {
                "id": self.new_id(),
                "name": name,
                "channel": channel,
                "status": status,
                "archived": False,
                "created_at": stamp,
                "updated_at": stamp,
            }
            self._campaigns.append(campaign)
            return dict(campaign)

    def campaigns(self, channel: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._campaigns if channel is None or c["channel"] == channel]

    def add_flow(self, name: str, *, status: str = "live", trigger_type: str = "Metric"):
        with self._lock:
            stamp = now_iso()
            flow = {
                "id": self.new_id(6),
                "name": name,
                "status": status,
                "archived": False,
                "trigger_type": trigger_type,
                "created": stamp,
                "updated": stamp,
            }
            self._flows.append(flow)
            return dict(flow)

    def flows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(f) for f in self._flows]
