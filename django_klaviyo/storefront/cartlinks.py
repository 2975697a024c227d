"""Signed, expiring cart-restore links: the ``CheckoutURL`` of Added to Cart and Started
Checkout, which abandoned-cart emails link to.

The link carries the store's cart token signed with ``SECRET_KEY`` (salted, timestamped;
``django.core.signing``). Opening it calls the store's ``RESTORE_CART(request, cart_token,
mode=...)`` hook. A tampered link, or one older than ``CART_LINK_MAX_AGE`` seconds, gets a
page that says so (400 / 410) and restores nothing: the token is only ever one the store
signed.

A link is a bearer credential that travels in emails (forwarded, shared, logged), so
restoring gives its opener a **copy** of the cart, never the cart itself: the hook must
leave the session on a cart of its own, and a hook that puts the link's own cart in the
session is refused (the session is put back as it was, the page says so, the log names the
hook). Nor does a link silently throw away the visitor's cart: when the session already
has a cart (``CART_TOKEN`` answers) other than the link's, the link asks first, and the
visitor's POSTed choice is the hook's ``mode``:

- ``"new"``: the session has no cart; give it a copy of the link's cart;
- ``"replace"``: the visitor chose to replace their cart with a copy of the link's;
- ``"merge"``: the visitor chose to add the link's items to their own cart.

A hook without a ``mode`` parameter (the former contract) is called as before and offered
the "replace" choice only. See docs/storefront.md, "Cart restore".
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from django.core import signing
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from django_klaviyo.conf import klaviyo_settings

logger = logging.getLogger(__name__)

SALT = "django_klaviyo.storefront.cart-restore"
MODES = ("new", "replace", "merge")
CHOICES = ("replace", "merge")


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


def takes_mode(hook: Callable[..., Any]) -> bool:
    """Whether the RESTORE_CART hook takes ``mode`` (the copy/merge contract)."""
    try:
        parameters = inspect.signature(hook).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "mode" or p.kind is p.VAR_KEYWORD for p in parameters)


class SharedOriginalCart(Exception):
    """RESTORE_CART put the link's own cart in the visitor's session."""


def _run_hook(
    request: HttpRequest, hook: Callable[..., Any], cart_token: str, mode: str, before: str | None
) -> Any:
    session = getattr(request, "session", None)
    saved = dict(session.items()) if session is not None else None
    answer = hook(request, cart_token, mode=mode) if takes_mode(hook) else hook(request, cart_token)
    restored = answer is not None and answer is not False
    if restored and before != cart_token and current_cart_token(request) == cart_token:
        # Write access to someone else's cart: undo what the hook did to the session.
        if session is not None and saved is not None:
            session.clear()
            session.update(saved)
        raise SharedOriginalCart
    return answer


@require_http_methods(["GET", "POST"])
def restore_cart_view(request: HttpRequest, signed: str) -> HttpResponse:
    """GET a cart link: restore a copy of the cart through the store's hook (asking first,
    when the visitor has a cart of their own) and follow the hook's answer. POST: the
    visitor's choice (``choice`` = "replace" or "merge")."""
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
    hook = klaviyo_settings.callable("RESTORE_CART")
    current = current_cart_token(request)
    has_other_cart = current is not None and current != cart_token
    if request.method == "POST":
        choice = request.POST.get("choice")
        allowed = CHOICES if takes_mode(hook) else ("replace",)
        if choice not in allowed:
            return _refuse(
                request,
                400,
                "This choice is not available",
                "Nothing was changed. Open the link from the email again and choose.",
            )
        mode = choice if has_other_cart else "new"
    elif has_other_cart:
        # Never throw a cart away on a GET: the visitor chooses, with a POST.
        return render(
            request,
            "django_klaviyo/cart_link_choice.html",
            {"can_merge": takes_mode(hook)},
        )
    else:
        mode = "new"
    try:
        answer = _run_hook(request, hook, cart_token, mode, before=current)
    except SharedOriginalCart:
        logger.error(
            "KLAVIYO['RESTORE_CART'] put the link's own cart in the visitor's session; a "
            "cart link must restore a copy (docs/storefront.md, 'Cart restore'). Refused."
        )
        return _refuse(
            request,
            500,
            "This cart link cannot be used",
            "This shop cannot restore carts from links right now; add the items again "
            "from the shop.",
        )
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
