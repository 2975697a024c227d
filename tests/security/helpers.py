"""What the security tests share: a visitor with a CSRF cookie, a JSON post to the public
endpoints, a sold-out product to subscribe to."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django.test import Client
from shop.models import Product

from django_klaviyo.models import OutboxEvent

EVENTS = "/klaviyo/storefront/events/"
BACK_IN_STOCK = "/klaviyo/back-in-stock/"

PRODUCT = {
    "product_id": "TEE-BLK",
    "sku": "TEE-BLK",
    "name": "Black T-shirt",
    "price": "19.99",
    "product_url": "https://shop.example.com/p/TEE-BLK",
    "image_url": "https://shop.example.com/img/TEE-BLK.png",
    "categories": ["Apparel"],
    "brand": "Example Co",
}
VIEWED = {"event": "viewed_product", "product": PRODUCT}


def visitor(**meta: Any) -> Client:
    """A browser with a CSRF cookie and no session yet (the admin login page sets only
    the csrftoken cookie)."""
    client = Client(enforce_csrf_checks=True, **meta)
    client.get("/admin/login/")
    return client


def post_json(client: Client, url: str, body: Any, **meta: Any) -> Any:
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(
        url,
        raw,
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
        **meta,
    )


def product(sku: str = "MUG-1", *, inventory: int = 0) -> Product:
    return Product.objects.create(
        name="Blue mug",
        sku=sku,
        price=Decimal("12.50"),
        url=f"https://shop.example/p/{sku}",
        categories=[],
        inventory=inventory,
    )


def subscriptions() -> int:
    """Back-in-stock rows (saving a product also queues catalog rows)."""
    return OutboxEvent.objects.filter(kind=OutboxEvent.Kind.BACK_IN_STOCK).count()


def browse_events() -> int:
    return OutboxEvent.objects.filter(kind=OutboxEvent.Kind.EVENT).count()
