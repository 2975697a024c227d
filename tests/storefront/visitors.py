"""A storefront visitor in tests: a CSRF-enforcing client that has opened a shop page,
posting browse events to the storefront endpoint; and what the outbox recorded. A pytest
plugin (tests/conftest.py): its fixtures are ``visitor`` and ``fresh_throttle``."""

from __future__ import annotations

import base64
import json

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse

from django_klaviyo.models import OutboxEvent

PRODUCT = {
    "product_id": "TEE-BLK",
    "sku": "TEE-BLK",
    "name": "Black T-shirt",
    "price": "19.99",
    "quantity": 1,
}
MUG = {"product_id": "MUG", "sku": "MUG", "name": "Mug", "price": "9.50", "quantity": 1}
VIEW = {"event": "viewed_product", "product": PRODUCT}
CHECKOUT = {"event": "started_checkout", "items": [PRODUCT], "checkout_id": "cart-7"}


@pytest.fixture
def fresh_throttle():
    """The throttles' counts start at nothing (use with ``pytest.mark.usefixtures``)."""
    cache.clear()
    yield
    cache.clear()


def new_visitor(**query):
    client = Client(enforce_csrf_checks=True)
    client.get(reverse("shop:products"), query)
    return client


@pytest.fixture
def visitor():
    return new_visitor()


def post(client, body):
    token = client.cookies["csrftoken"].value if "csrftoken" in client.cookies else ""
    return client.post(
        reverse("klaviyo-storefront-events"),
        json.dumps(body),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )


def kla_cookie(data):
    return base64.b64encode(json.dumps(data).encode()).decode()


def last_profile(metric="Viewed Product"):
    return (
        OutboxEvent.objects.filter(metric=metric).order_by("created_at").last().payload["profile"]
    )


def checkouts():
    return list(OutboxEvent.objects.filter(metric="Started Checkout").order_by("created_at"))
