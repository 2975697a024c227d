"""Signed, expiring cart-restore links (the CheckoutURL of cart and checkout events)."""

from __future__ import annotations

import time

import pytest
from django.core import signing
from django.test import Client, RequestFactory
from django.urls import reverse
from shop.models import Cart

from django_klaviyo.storefront import cartlinks

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.projects.storefront_urls")]


@pytest.fixture
def hooks(settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "CART_TOKEN": "shop.cart.cart_token",
        "RESTORE_CART": "shop.cart.restore_cart",
    }


def link_for(token):
    return reverse("klaviyo-cart-restore", kwargs={"signed": cartlinks.sign_cart_token(token)})


def test_a_link_restores_its_cart_into_a_new_session(hooks):
    Cart.objects.create(token="tok-ada", items={"TEE-BLK": 2})
    shopper = Client()

    answer = shopper.get(link_for("tok-ada"))

    assert answer.status_code == 302
    assert answer["Location"] == reverse("shop:cart")
    # A copy of the cart, never the cart itself (tests/security/test_cart_links.py).
    restored = Cart.objects.get(token=shopper.session["shop_cart_token"])
    assert restored.token != "tok-ada" and restored.items == {"TEE-BLK": 2}


def test_the_link_carries_the_store_s_cart_token_signed(hooks):
    request = RequestFactory().get("/")
    request.session = {"shop_cart_token": "tok-ada"}
    Cart.objects.create(token="tok-ada")

    url = cartlinks.checkout_url(request)

    assert url.startswith("http://testserver/klaviyo/storefront/cart/")
    signed = url.rstrip("/").rsplit("/", 1)[1]
    assert cartlinks.unsign_cart_token(signed) == "tok-ada"


def test_no_cart_no_link(hooks):
    request = RequestFactory().get("/")
    request.session = {}
    assert cartlinks.checkout_url(request) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # the signature changed
        lambda s: cartlinks.sign_cart_token("tok-eve").split(":")[0] + s[s.index(":") :],
        lambda s: signing.dumps("tok-eve", salt="another-salt"),
        lambda s: "garbage",
    ],
)
def test_a_tampered_link_restores_nothing_and_says_so(hooks, tamper):
    Cart.objects.create(token="tok-ada", items={"TEE-BLK": 2})
    Cart.objects.create(token="tok-eve", items={"MUG-WHT": 1})
    signed = cartlinks.sign_cart_token("tok-ada")
    shopper = Client()

    answer = shopper.get(reverse("klaviyo-cart-restore", kwargs={"signed": tamper(signed)}))

    assert answer.status_code == 400
    assert "This cart link is not valid" in answer.content.decode()
    assert "shop_cart_token" not in shopper.session


def test_an_expired_link_gets_410_and_restores_nothing(hooks, settings, monkeypatch):
    settings.KLAVIYO = {**settings.KLAVIYO, "CART_LINK_MAX_AGE": 3600}
    Cart.objects.create(token="tok-ada")
    two_hours_ago = time.time() - 7200
    monkeypatch.setattr(signing.time, "time", lambda: two_hours_ago)
    url = link_for("tok-ada")
    monkeypatch.undo()
    shopper = Client()

    answer = shopper.get(url)

    assert answer.status_code == 410
    assert "This cart link has expired" in answer.content.decode()
    assert "shop_cart_token" not in shopper.session


def test_a_checked_out_cart_is_not_restored(hooks):
    Cart.objects.create(token="tok-ada", checked_out=True)
    answer = Client().get(link_for("tok-ada"))
    assert answer.status_code == 404
    assert "no longer available" in answer.content.decode()


def test_without_a_restore_hook_the_link_says_so(settings):
    answer = Client().get(link_for("tok-ada"))
    assert answer.status_code == 404
    assert "does not restore carts" in answer.content.decode()


def test_a_hook_cannot_send_the_shopper_off_site(settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "RESTORE_CART": lambda request, token: "https://evil.test/",
    }
    answer = Client().get(link_for("tok-ada"))
    assert answer.status_code == 302
    assert answer["Location"] == "/"
