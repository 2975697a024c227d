"""The example shop's cart: a stored Cart whose token the session holds.

``cart_token`` and ``restore_cart`` are the hooks django-klaviyo calls (settings
``KLAVIYO["CART_TOKEN"]`` / ``["RESTORE_CART"]``): the first names the cart a
``CheckoutURL`` should restore, the second gives the visitor who opens a signed link a
copy of that cart (or, when they chose to merge, its items in their own cart): never the
linked cart itself, which stays its owner's alone.
"""

from __future__ import annotations

import secrets
from decimal import Decimal
from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from shop.models import Cart, Product

SESSION_KEY = "shop_cart_token"


def current_cart(request: HttpRequest, *, create: bool = False) -> Cart | None:
    token = request.session.get(SESSION_KEY)
    cart = Cart.objects.filter(token=token, checked_out=False).first() if token else None
    if cart is None and create:
        user = request.user if request.user.is_authenticated else None
        cart = Cart.objects.create(token=secrets.token_urlsafe(24), customer=user)
        request.session[SESSION_KEY] = cart.token
    return cart


def add(request: HttpRequest, product: Product, quantity: int = 1) -> Cart:
    cart = current_cart(request, create=True)
    cart.items[product.sku] = int(cart.items.get(product.sku, 0)) + quantity
    cart.save(update_fields=["items", "updated_at"])
    return cart


def product_dict(request: HttpRequest, product: Product, quantity: int | None = None) -> dict:
    """The product as django-klaviyo's browse and cart events take it."""
    data: dict[str, Any] = {
        "product_id": product.sku,
        "sku": product.sku,
        "name": product.name,
        "price": product.price,
        "image_url": product.image_url,
        "product_url": product.url or request.build_absolute_uri(product.get_absolute_url()),
        "categories": list(product.categories),
        "brand": product.brand,
    }
    if quantity is not None:
        data["quantity"] = quantity
    return data


def lines(request: HttpRequest, cart: Cart | None) -> list[dict[str, Any]]:
    """The cart's items as product dicts, in the order they were added."""
    if cart is None or not cart.items:
        return []
    products = {p.sku: p for p in Product.objects.filter(sku__in=cart.items)}
    return [
        product_dict(request, products[sku], int(quantity))
        for sku, quantity in cart.items.items()
        if sku in products
    ]


def total(items: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(str(i["price"])) * i["quantity"] for i in items), Decimal("0.00"))


# --- django-klaviyo hooks -------------------------------------------------------------


def cart_token(request: HttpRequest) -> str | None:
    cart = current_cart(request)
    return cart.token if cart is not None else None


def restore_cart(request: HttpRequest, token: str, *, mode: str = "new") -> str | None:
    """The visitor who opened a link to cart ``token``: ``"merge"`` adds its items to
    their own cart; ``"new"`` / ``"replace"`` give them a copy as their cart. The linked
    cart is only read. None when it no longer exists."""
    linked = Cart.objects.filter(token=token, checked_out=False).first()
    if linked is None:
        return None
    own = current_cart(request)
    if mode == "merge" and own is not None and own.pk != linked.pk:
        for sku, quantity in linked.items.items():
            own.items[sku] = int(own.items.get(sku, 0)) + int(quantity)
        own.save(update_fields=["items", "updated_at"])
        return reverse("shop:cart")
    user = request.user if request.user.is_authenticated else None
    copy = Cart.objects.create(
        token=secrets.token_urlsafe(24), customer=user, items=dict(linked.items)
    )
    request.session[SESSION_KEY] = copy.token
    return reverse("shop:cart")
