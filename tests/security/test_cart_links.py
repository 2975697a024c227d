"""Issue 19, case 10: a cart link gives its opener a copy of the cart, never the cart.

Whoever holds a CheckoutURL (forwarded emails, shared screens) must not be able to change
the shopper's cart, and opening a link must not silently throw away the cart the visitor
already has: with a non-empty current cart the link asks, and merging is an explicit
choice. The library refuses a RESTORE_CART hook that hands over the original cart.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from shop.models import Cart, Product

from django_klaviyo.storefront import cartlinks

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.projects.storefront_urls")]
SESSION_KEY = "shop_cart_token"


@pytest.fixture(autouse=True)
def hooks(settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "CART_TOKEN": "shop.cart.cart_token",
        "RESTORE_CART": "shop.cart.restore_cart",
    }


@pytest.fixture(autouse=True)
def products():
    for sku in ("TEE-BLK", "MUG-WHT"):
        Product.objects.create(
            sku=sku, name=sku, price=Decimal("9.99"), inventory=5, url=f"https://shop.example/{sku}"
        )


def add(shopper: Client, sku: str) -> None:
    assert shopper.post(reverse("shop:cart-add", args=[sku])).status_code == 302


def shopper_with_cart(*skus: str) -> tuple[Client, Cart]:
    shopper = Client()
    for sku in skus:
        add(shopper, sku)
    return shopper, Cart.objects.get(token=shopper.session[SESSION_KEY])


def link_for(cart: Cart) -> str:
    return reverse("klaviyo-cart-restore", kwargs={"signed": cartlinks.sign_cart_token(cart.token)})


def test_a_link_holder_cannot_change_the_linked_cart():
    _, ada_cart = shopper_with_cart("TEE-BLK")
    eve = Client()

    opened = eve.get(link_for(ada_cart))
    add(eve, "MUG-WHT")

    assert opened.status_code == 302
    ada_cart.refresh_from_db()
    assert ada_cart.items == {"TEE-BLK": 1}  # Ada's cart is untouched
    eve_cart = Cart.objects.get(token=eve.session[SESSION_KEY])
    assert eve_cart.pk != ada_cart.pk
    assert eve_cart.items == {"TEE-BLK": 1, "MUG-WHT": 1}  # Eve changed her copy


def test_the_copy_restores_the_items_on_another_device():
    _, ada_cart = shopper_with_cart("TEE-BLK", "TEE-BLK", "MUG-WHT")
    phone = Client()
    answer = phone.get(link_for(ada_cart), follow=True)
    assert answer.status_code == 200
    copy = Cart.objects.get(token=phone.session[SESSION_KEY])
    assert copy.items == {"TEE-BLK": 2, "MUG-WHT": 1} and copy.token != ada_cart.token


def test_a_link_never_silently_replaces_a_non_empty_cart():
    _, ada_cart = shopper_with_cart("TEE-BLK")
    bob, bob_cart = shopper_with_cart("MUG-WHT")

    answer = bob.get(link_for(ada_cart))

    assert answer.status_code == 200
    page = answer.content.decode()
    assert "You already have a cart" in page
    assert 'value="merge"' in page and 'value="replace"' in page
    assert bob.session[SESSION_KEY] == bob_cart.token
    bob_cart.refresh_from_db()
    assert bob_cart.items == {"MUG-WHT": 1}


def test_merging_is_an_explicit_choice():
    _, ada_cart = shopper_with_cart("TEE-BLK")
    bob, bob_cart = shopper_with_cart("MUG-WHT")

    answer = bob.post(link_for(ada_cart), {"choice": "merge"})

    assert answer.status_code == 302
    bob_cart.refresh_from_db()
    assert bob.session[SESSION_KEY] == bob_cart.token
    assert bob_cart.items == {"MUG-WHT": 1, "TEE-BLK": 1}
    ada_cart.refresh_from_db()
    assert ada_cart.items == {"TEE-BLK": 1}


def test_replacing_is_an_explicit_choice_and_gives_a_copy():
    _, ada_cart = shopper_with_cart("TEE-BLK")
    bob, bob_cart = shopper_with_cart("MUG-WHT")

    bob.post(link_for(ada_cart), {"choice": "replace"})

    token = bob.session[SESSION_KEY]
    assert token not in (bob_cart.token, ada_cart.token)
    assert Cart.objects.get(token=token).items == {"TEE-BLK": 1}


def test_an_unknown_choice_restores_nothing():
    _, ada_cart = shopper_with_cart("TEE-BLK")
    bob, bob_cart = shopper_with_cart("MUG-WHT")
    answer = bob.post(link_for(ada_cart), {"choice": "steal"})
    assert answer.status_code == 400
    assert bob.session[SESSION_KEY] == bob_cart.token


def test_a_hook_that_hands_over_the_original_cart_is_refused(settings):
    def shares_the_original(request, token, **kwargs):
        request.session[SESSION_KEY] = token
        return "/store/cart/"

    settings.KLAVIYO = {**settings.KLAVIYO, "RESTORE_CART": shares_the_original}
    _, ada_cart = shopper_with_cart("TEE-BLK")
    eve = Client()

    answer = eve.get(link_for(ada_cart))

    assert answer.status_code == 500
    assert "cannot be used" in answer.content.decode()
    assert SESSION_KEY not in eve.session  # the session is as it was before the hook
