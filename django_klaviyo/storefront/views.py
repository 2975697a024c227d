"""The browse-events endpoint: Viewed Product, Added to Cart and Started Checkout written
to the outbox from the server, where an ad blocker cannot drop them.

POST JSON (see ``serializers.BrowseEventSerializer``) with the CSRF token; the event's
profile is the logged-in user and/or the visitor's anonymous id (``identity``). 202 with
the outbox row's id; 400 naming the field, with nothing stored; 429 over the per-visitor
rate ``STOREFRONT_THROTTLE_RATE`` (and per client address
over ``STOREFRONT_ADDRESS_THROTTLE_RATE``). ``{"event": "identify", "email": ...}`` is the
identify step: the guest becomes that profile and the visit's open Started Checkout is
sent again on it (docs/storefront.md).
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import transaction
from rest_framework import status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from django_klaviyo import accounts, api
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.storefront import cartlinks, identity
from django_klaviyo.storefront.serializers import BrowseEventSerializer

SALT = "django_klaviyo.storefront.checkout-id"


class VisitorSessionAuthentication(SessionAuthentication):
    """Session auth that checks the CSRF token for anonymous visitors too (DRF's own
    checks it only for logged-in users), so another site cannot post events for them."""

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        user = getattr(request._request, "user", None)
        self.enforce_csrf(request)
        if user is None or not user.is_active:
            return None
        return (user, None)


class VisitorRateThrottle(SimpleRateThrottle):
    """Per visitor: the user, else the visitor's anonymous id (made on the first event,
    so that event counts too)."""

    scope = "klaviyo_storefront"

    def get_rate(self) -> str | None:
        return klaviyo_settings.STOREFRONT_THROTTLE_RATE

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            visitor = identity.remember_visitor(request._request, create=True)
            ident = f"visitor:{visitor.get('anonymous_id') or self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AddressRateThrottle(SimpleRateThrottle):
    """Per client address, looser: a script that drops its session cookie to look like
    a new visitor on every request is still held back."""

    scope = "klaviyo_storefront_address"

    def get_rate(self) -> str | None:
        return klaviyo_settings.STOREFRONT_ADDRESS_THROTTLE_RATE

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class BrowseEventView(APIView):
    authentication_classes = [VisitorSessionAuthentication]
    permission_classes = [AllowAny]
    throttle_classes = [VisitorRateThrottle, AddressRateThrottle]

    def post(self, request: Request) -> Response:
        serializer = BrowseEventSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            with transaction.atomic():
                if data["event"] == "identify":
                    row = identify(request, data)
                else:
                    row = record(request, data, identity.visitor_profile(request._request))
        except KlaviyoValidationError as exc:
            field = exc.field or "non_field_errors"
            return Response({field: [str(exc)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            {"event": data["event"], "outbox_id": row.pk if row else None},
            status=status.HTTP_202_ACCEPTED,
        )


def checkout_id(request: Request, claimed: str) -> str:
    """The store's own cart (``CART_TOKEN``) names the checkout when there is one: a
    visitor cannot then claim another shopper's checkout id (Started Checkout is sent
    once per checkout and cart content). The token itself stays out of Klaviyo."""
    token = cartlinks.current_cart_token(request._request)
    if token:
        return hashlib.sha256(f"{SALT}:{token}".encode()).hexdigest()[:20]
    return claimed


def record(request: Request, data: dict[str, Any], profile: dict[str, Any]) -> Any:
    event = data["event"]
    # The account of this storefront (ACCOUNT_RESOLVER with the request; docs/accounts.md).
    account = accounts.account_for(request=request._request)
    if event == "viewed_product":
        return api.viewed_product(profile, dict(data["product"]), account=account)
    link = cartlinks.checkout_url(request._request)
    if event == "added_to_cart":
        items = [dict(item) for item in data.get("items") or []] or None
        return api.added_to_cart(
            profile,
            dict(data["item"]),
            cart_items=items,
            currency=data.get("currency"),
            checkout_url=link,
            account=account,
        )
    row = api.started_checkout(
        profile,
        [dict(item) for item in data["items"]],
        checkout_id=checkout_id(request, data["checkout_id"]),
        currency=data.get("currency"),
        checkout_url=link,
        visit=identity.visit_id(request._request),
        account=account,
    )
    if row is not None:
        request._request.session[identity.SESSION_OPEN_CHECKOUT] = str(row.pk)
    return row


def identify(request: Request, data: dict[str, Any]) -> Any:
    """The identify step: from now on this guest is the email / phone they typed, and
    this visit's open Started Checkout is sent again on that profile (the first event
    after identification also carries the anonymous id, which links the two)."""
    given = {k: data[k] for k in ("email", "phone_number") if data.get(k)}
    if not identity.identify_visitor(request._request, given):
        return None  # a logged-in user stays the user; the same email again is nothing new
    open_id = request._request.session.get(identity.SESSION_OPEN_CHECKOUT)
    checkout = OutboxEvent.objects.filter(pk=open_id).first() if open_id else None
    properties = checkout.payload.get("properties") if checkout is not None else None
    if not isinstance(properties, dict) or "CheckoutId" not in properties:
        return None  # gone, or erased (forget_profile) since: nothing to send again
    profile = identity.visitor_profile(request._request)
    return api.restate_started_checkout(checkout, profile)
