from __future__ import annotations

import pytest

from django_klaviyo.tracking import receivers
from tests.projects.subshop.models import Subscription

SUBSCRIPTIONS = {
    "subshop.Subscription": {
        "status_field": "status",
        "metrics": {
            "active": "Subscription Started",
            "paused": "Subscription Paused",
            "cancelled": "Subscription Cancelled",
        },
        "profile": {"email": "customer.email", "external_id": "customer_id"},
        "value": "mrr",
        "value_currency": "currency",
        "properties": {"Plan": "plan.name", "Interval": "interval"},
        "profile_properties": {"subscription_status": "status", "plan": "plan.name"},
        "time": "updated_at",
    }
}


@pytest.fixture
def tracked(settings):
    """The test settings with the subscriptions tracked, receivers connected as at startup;
    ``tracked(**changes)`` changes the entry."""

    def configure(**changes):
        entry = {**SUBSCRIPTIONS["subshop.Subscription"], **changes}
        entry = {k: v for k, v in entry.items() if v is not ...}
        settings.KLAVIYO = {**settings.KLAVIYO, "TRACKED_MODELS": {"subshop.Subscription": entry}}
        receivers.connect()
        return settings

    configure()
    yield configure
    receivers.disconnect(Subscription)
