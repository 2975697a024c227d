"""Signed, expiring cart-restore links: the ``CheckoutURL`` of Added to Cart and Started
Checkout, which abandoned-cart emails link to.

The link carries the store's cart token signed with ``SECRET_KEY`` (salted, timestamped;
``django.core.signing``). Opening it calls the store's ``RESTORE_CART(request, cart_token)``
hook. A tampered link, or one older than ``CART_LINK_MAX_AGE`` seconds, gets a page that
says so (400 / 410) and restores nothing: the token is only ever one the store signed.
"""

from __future__ import annotations

from typing import Any

from django.core import signing
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from django_klaviyo.conf import klaviyo_settings

SALT = "django_klaviyo.storefront.cart-restore"


def sign_cart_token(cart_token: str) -> str:
    return signing.dumps(str(cart_token), salt=SALT, compress=False)


def unsign_cart_token(signed: str) -> str:
    """The cart token, or raise ``signing.SignatureExpired`` / ``signing.BadSignature``."""
    value = signing.loads(signed, salt=SALT, max_age=klaviyo_settings.CART_LINK_MAX_AGE)
    if not isinstance(value, str) or not value:
        raise signing.BadSignature("The cart link carries no cart.")
    return value


def current_cart_token(request: HttpRequest) -> str | None:
    """The store's cart token for this request (``CART_TOKEN`` hook), or None."""
    if not klaviyo_settings.CART_TOKEN:
        return None
    token = klaviyo_settings.callable("CART_TOKEN")(request)
    return str(token) if token else None


def checkout_url(request: HttpRequest, cart_token: str | None = None) -> str | None:
    """The absolute restore link for ``cart_token`` (default: the request's cart)."""
    token = cart_token or current_cart_token(request)
    if not token:
        return None
    path = reverse("klaviyo-cart-restore", kwargs={"signed": sign_cart_token(token)})
    return request.build_absolute_uri(path)


def _refuse(request: HttpRequest, status: int, title: str, message: str) -> HttpResponse:
    context = {"title": title, "message": message}
    return render(request, "django_klaviyo/cart_link_invalid.html", context, status=status)


def restore_cart_view(request: HttpRequest, signed: str) -> HttpResponse:
    """GET a cart link: restore the cart through the store's hook and follow its answer."""
    try:
        cart_token = unsign_cart_token(signed)
    except signing.SignatureExpired:
        return _refuse(
            request,
            410,
            "This cart link has expired",
            "The link to your cart is too old to use. Your cart may still be waiting on "
            "this device; otherwise, add the items again from the shop.",
        )
    except signing.BadSignature:
        return _refuse(
            request,
            400,
            "This cart link is not valid",
            "The link to your cart is incomplete or was changed, so no cart was restored. "
            "Copy the whole link from the email, or add the items again from the shop.",
        )
    if not klaviyo_settings.RESTORE_CART:
        return _refuse(
            request,
            404,
            "Cart links are not available",
            "This shop does not restore carts from links.",
        )
    answer: Any = klaviyo_settings.callable("RESTORE_CART")(request, cart_token)
    if isinstance(answer, HttpResponse):
        return answer
    if answer is None or answer is False:
        return _refuse(
            request,
            404,
            "This cart is no longer available",
            "The cart this link points to was already checked out or removed.",
        )
    target = answer if isinstance(answer, str) else "/"
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    return HttpResponseRedirect(target)
