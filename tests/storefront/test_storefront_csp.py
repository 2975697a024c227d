"""{% klaviyo_js %} under a real Content-Security-Policy: the nonce on its scripts is the
one the response's header allows. Runs with each CSP middleware this Django has: Django's
own (6.0+) and a django-csp-style one (``request.csp_nonce``), written here because the
project does not depend on django-csp."""

from __future__ import annotations

import re
import secrets
from decimal import Decimal

import django
import pytest
from django.test import Client
from shop.models import Product

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.projects.storefront_urls")]


class CspNonceMiddleware:
    """What django-csp does: a per-request ``request.csp_nonce`` and the header."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.csp_nonce = secrets.token_urlsafe(16)
        response = self.get_response(request)
        response["Content-Security-Policy"] = f"script-src 'self' 'nonce-{request.csp_nonce}'"
        return response


MIDDLEWARES = ["tests.storefront.test_storefront_csp.CspNonceMiddleware"]
if django.VERSION >= (6, 0):
    MIDDLEWARES.append("django.middleware.csp.ContentSecurityPolicyMiddleware")


@pytest.mark.parametrize("middleware", MIDDLEWARES)
def test_the_scripts_carry_the_nonce_the_policy_allows(middleware, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, middleware]
    if django.VERSION >= (6, 0):
        from django.utils.csp import CSP

        settings.SECURE_CSP = {"script-src": [CSP.SELF, CSP.NONCE]}
    Product.objects.create(sku="TEE", name="Tee", price=Decimal("10"), inventory=1)

    answer = Client().get("/store/p/TEE/")

    allowed = re.search(r"'nonce-([^']+)'", answer["Content-Security-Policy"]).group(1)
    html = answer.content.decode()
    assert re.findall(r'<script nonce="([^"]+)" (?:async|defer) src=', html) == [allowed] * 2
